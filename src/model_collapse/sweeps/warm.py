"""Imported once by the local executor's forkserver, so every worker forked from it starts warm.

Importing the engine costs about half a second and building the pydantic Experiment model
~50 ms; done here once, no worker pays either. Nothing heavy (torch, matplotlib) is imported:
a run that needs it imports it itself.
"""

import gc

from ..config import validate
from ..loop import run_generations  # noqa: F401 - imported for its side effect: the engine is loaded
from ..store import RunStore  # noqa: F401
from .. import runner  # noqa: F401
from . import stats, task  # noqa: F401

try:   # the common case: Gaussian components resolve without a lookup
    validate({"source": {"kind": "gaussian"}, "model": {"kind": "gaussian"}, "regime": {"kind": "replace"}})
except Exception:  # noqa: BLE001 - only a warm-up
    pass

# The ~40,000 objects made so far live as long as the workers: keep the cyclic collector from
# re-scanning them during runs (as `collapse run` does), and their pages shared after each fork.
gc.freeze()
