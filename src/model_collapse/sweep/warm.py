"""Imported once by the local executor's forkserver, so every run forked from it starts warm.

Importing the engine costs about half a second and building the pydantic Experiment model
~50 ms; done here once, each of a thousand small runs skips both. Nothing heavy (torch,
matplotlib) is imported: a run that needs it imports it itself.
"""

from ..config import validate
from ..loop import run_generations  # noqa: F401 - imported for its side effect: the engine is loaded
from ..store import RunStore  # noqa: F401
from . import task  # noqa: F401

try:   # the common case: Gaussian components resolve without a lookup
    validate({"source": {"kind": "gaussian"}, "model": {"kind": "gaussian"}, "regime": {"kind": "replace"}})
except Exception:  # noqa: BLE001 - only a warm-up
    pass
