"""Base class for every configurable component (source, family, regime, filter).

A component's config class is also its declaration: validation reads what it
fits, offers or needs from the class (kinds.py), and `build` imports the
implementation only when a run starts, so validating never imports torch.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .kinds import Needs


class Component(BaseModel):
    """A component config: strict (unknown keys rejected), tagged by ``kind``."""

    # allow_inf_nan=False: a NaN or infinite number in any float field is refused at validation, not
    # discovered as a divergence at generation 0.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    # Families: the data kinds they fit. Metrics, filters, regimes: what they need.
    data_kinds: ClassVar[frozenset] = frozenset()
    needs: ClassVar[Needs] = Needs()
    # A quick example for the contract tests (model_collapse.testing): fields added to {"kind": ...}
    # so the component is cheap to exercise; regimes also declare the training-set sizes of
    # generations 1-4 that their example gives.
    example: ClassVar[dict] = {}
    example_sizes: ClassVar[tuple] = ()

    def check(self, exp) -> list[tuple[str, str]]:
        """Cross-field checks against the whole experiment: (dotted path, message) pairs."""
        return []

    def items_held(self, generations: int) -> int:
        """Regimes: items per chain a run keeps in memory at most (0: not known; no memory check)."""
        return 0

    def theory(self, exp, column: str):
        """Families: g -> E[column at generation g] where a closed form applies to exp, else None
        (declared beside the family it belongs to; theory.py holds the formulas)."""
        return None

    def theory_bound(self, exp, column: str):
        """Families: a constant bound on E[column] drawn beside the closed form, else None."""
        return None

    def capabilities(self, source) -> frozenset:
        """Families: what a model with this config can do on data from `source` (a SourceDecl)."""
        return frozenset()


class ClosedFormFit(Component):
    """A family whose fit is a closed form of the data (the Gaussian's and categorical's maximum likelihood,
    least squares): unique given the data, so it has no starting point. `start` exists only to say so."""

    start: str = Field("data", description=(
        "only data: this fit is a closed form, unique given the data, so no starting point (such as the truth) "
        "can change it; start: truth belongs to gmm, whose EM it starts at the true mixture"))

    @field_validator("start")
    @classmethod
    def _no_start(cls, v: str) -> str:
        """Anything but 'data' is refused, with the reason."""
        if v != "data":
            raise ValueError(f"start: {v} cannot change this fit: it is a closed form of the data (maximum "
                             f"likelihood or least squares), the same from any start. start: truth applies to "
                             f"the gmm family (EM from the true mixture, Qiao et al. 2025); remove model.start")
        return v
