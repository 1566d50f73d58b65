"""Studies: many runs at once (grids, Optuna tuning), their shared study folder and executors, and the table
that gathers their runs."""
