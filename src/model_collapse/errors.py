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


class DiskFullError(CollapseError):
    """The disk (or quota) filled, or the file system turned read-only, while a run was writing; the
    last good checkpoint is intact (CLI exit status 1)."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, SIGINT or SIGTERM stopped a command; its message says how to continue (exit status 130).

    A KeyboardInterrupt, so code that catches Ctrl-C still does."""

    def __init__(self, message: str = "interrupted"):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


# errno values that mean "the disk cannot take more": no space, quota exceeded, read-only file system
DISK_ERRNOS = (28, 122, 30)


def disk_full(e: BaseException) -> bool:
    """Whether an exception (or one it was raised from) is a full disk, quota or read-only file system."""
    while e is not None:
        if isinstance(e, OSError) and e.errno in DISK_ERRNOS:
            return True
        e = e.__cause__ or e.__context__
    return False
