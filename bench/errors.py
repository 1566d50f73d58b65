"""Errors a user can fix: the CLI prints them as one line, without a traceback."""


class VtbenchError(Exception):
    """Base of every error caused by input (a config, a path, a method parameter)."""


class ConfigError(VtbenchError, ValueError):
    """A configuration value is wrong; the message names the key, the value and what is allowed."""
