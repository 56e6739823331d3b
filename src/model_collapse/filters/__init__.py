"""Filter registry: name -> (config class, constructor(cfg)).

A filter curates or verifies a generation's samples before they are reused.
"""

from typing import Literal

from ..schema import Component


class NoFilterConfig(Component):
    """Reuse every sample."""

    kind: Literal["none"] = "none"


class NoFilter:
    """Pass samples through unchanged."""

    def __init__(self, cfg):
        self.cfg = cfg

    def __call__(self, samples, model, rng):
        """The samples, untouched."""
        return samples


FILTERS = {"none": (NoFilterConfig, NoFilter)}
