"""Errors a user can cause; the CLI turns each into one clear message."""


class CollapseError(Exception):
    """Base class for user-facing errors."""


class ConfigError(CollapseError):
    """An invalid experiment configuration (CLI exit status 2)."""


class DivergenceError(CollapseError):
    """A fit produced non-finite values; the run stops at the last good generation."""


class RunDirError(CollapseError):
    """A run directory that cannot be used as asked (exists, missing, corrupt)."""


class FilterError(DivergenceError):
    """A filter accepted too few samples to fill a generation; like a divergence, the run stops
    at the last good generation (exit status 1)."""


class CorruptRunError(RunDirError):
    """A run directory whose checkpoints cannot be read (CLI exit status 1; the directory is left as it is)."""


class CollapseWarning(UserWarning):
    """Something the user should know that does not stop the run (e.g. a damaged checkpoint was skipped)."""
