"""Base class for every configurable component (source, family, regime, filter)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Component(BaseModel):
    """A component config: strict (unknown keys rejected), tagged by ``kind``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def check(self, exp) -> list[tuple[str, str]]:
        """Cross-field checks against the whole experiment: (dotted path, message) pairs."""
        return []
