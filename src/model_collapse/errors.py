"""Errors a user can cause; the CLI turns each into one clear message."""


class CollapseError(Exception):
    """Base class for user-facing errors."""


class ConfigError(CollapseError):
    """An invalid experiment configuration (CLI exit status 2)."""


class DivergenceError(CollapseError):
    """A fit produced non-finite values; the run stops at the last good generation."""


class RunDirError(CollapseError):
    """A run directory that cannot be used as asked (exists, missing, corrupt)."""
