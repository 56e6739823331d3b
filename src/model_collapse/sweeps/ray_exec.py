"""The `ray` executor: one Ray task per run, on an existing cluster (--address) or a local one.

A local cluster is started for the sweep with --workers CPUs (default: the usable cores) and
shut down at its end. On an existing cluster every node must see the sweep directory (a shared
filesystem) and have model-collapse installed. Each task asks for one CPU and runs with one
BLAS/torch thread; a task is never retried by Ray itself (a rerun of the sweep resumes it).
"""

from __future__ import annotations

import logging

from ..errors import ConfigError
from .executors import missing_extra
from .local import usable_cores
from .task import one_thread_env, run_task


class RayExecutor:
    """Runs tasks as Ray tasks."""

    name = "ray"

    def __init__(self, workers: int | None = None, address: str | None = None, gpus_per_run: float | None = None,
                 **_):
        try:
            import ray  # noqa: F401
        except ImportError:
            raise missing_extra("ray", "ray") from None
        if gpus_per_run is not None and gpus_per_run < 0:
            raise ConfigError(f"--gpus-per-run must be >= 0 (got {gpus_per_run:g})")
        self.workers, self.address, self.gpus = workers, address, gpus_per_run or 0

    def run(self, tasks, started, finished) -> None:
        """Submit every task, then report each as it finishes."""
        import ray
        ours = not ray.is_initialized()
        if ours:
            kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                          runtime_env={"env_vars": one_thread_env()})
            try:
                if self.address:
                    ray.init(address=self.address, **kwargs)
                else:
                    ray.init(num_cpus=self.workers or usable_cores(), **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as e:
                where = f" at {self.address}" if self.address else ""
                raise ConfigError(f"could not start or reach a Ray cluster{where}: {e}; check --address "
                                  "(e.g. ray://HEAD:10001 or auto), or run with --executor local") from None
        if self.gpus:   # a task asking for more GPUs than the cluster has would wait for ever
            have = ray.cluster_resources().get("GPU", 0)
            if have < self.gpus:
                if ours:
                    ray.shutdown()
                raise ConfigError(f"--gpus-per-run {self.gpus:g}, but the Ray cluster has {have:g} GPUs: no run "
                                  "could be scheduled; connect to a cluster with GPUs (--address) or leave "
                                  "--gpus-per-run out")
        remote = ray.remote(num_cpus=1, num_gpus=self.gpus, max_retries=0)(run_task)
        refs = {}
        try:
            for task in tasks:
                refs[remote.remote(task)] = task
                started(task)
            while refs:
                done, _ = ray.wait(list(refs), num_returns=1, timeout=1.0)
                for ref in done:
                    finished(refs.pop(ref), self._result(ref))
        except KeyboardInterrupt:
            for ref in refs:
                ray.cancel(ref)   # KeyboardInterrupt inside the task: the run checkpoints and stops
            for ref, task in refs.items():
                finished(task, self._result(ref))
            raise
        finally:
            if ours:
                ray.shutdown()

    @staticmethod
    def _result(ref) -> dict:
        """A task's result, or its error as a failed result (a worker that died, a cancelled task)."""
        import ray
        try:
            return ray.get(ref)
        except ray.exceptions.TaskCancelledError:
            return {"status": "interrupted", "message": "interrupted"}
        except ray.exceptions.RayError as e:
            first = str(e).strip().splitlines()
            return {"status": "failed", "message": f"{type(e).__name__}: {first[0] if first else ''}"}
