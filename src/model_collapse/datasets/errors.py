"""The one error type of the data layer."""

from model_collapse.errors import CollapseError


class DataError(CollapseError):
    """A data set that is missing, corrupt or cannot be fetched; the message says what to do."""
