"""model-collapse: a laboratory for generative models trained on their own samples.

The Python API (docs/api.md): `run`, `open_run`, `sweep`, `open_sweep`, and the `Run` and `Sweep`
objects they return. The `collapse` command line is built on the same functions."""

__version__ = "0.1.0"

from .api import Run, Sweep, open_run, open_sweep, run, sweep  # noqa: E402

__all__ = ["Run", "Sweep", "open_run", "open_sweep", "run", "sweep"]
