"""The run engine: one budgeted run (configuration, budget clock, runner, evaluation, measurement, files)."""
