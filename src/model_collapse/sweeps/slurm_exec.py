"""The `slurm` executor: one Slurm job per run through submitit (--partition, --time, --mem).

On Slurm the runs go out as one job array from SWEEP/.submitit (scripts, pickled tasks, logs),
at most --workers running at once when given. The cluster's nodes must see the sweep directory.
--slurm-cluster local sends the same pickled jobs through submitit's local executor instead (at
most --workers, default the usable cores, at a time): a laptop without Slurm, or the tests.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from ..errors import ConfigError
from .executors import missing_extra
from .local import usable_cores
from .task import one_thread_env, run_task


def minutes(text: str | None) -> int | None:
    """Slurm's time formats (MM, MM:SS, HH:MM:SS, D-HH[:MM[:SS]]) in whole minutes, rounded up."""
    if text is None:
        return None
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", str(text).strip())
    if not m:
        raise ConfigError(f"--time {text!r}: use minutes (90), HH:MM:SS (1:30:00) or D-HH:MM (1-12:00)")
    d, a, b, c = (int(x) if x else None for x in m.groups())
    if d is not None:   # D-HH, D-HH:MM, D-HH:MM:SS
        secs = d * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)
    elif c is not None:
        secs = a * 3600 + b * 60 + c
    elif b is not None:
        secs = a * 60 + b
    else:
        secs = a * 60
    return max(1, -(-secs // 60))


def gigabytes(text: str | None) -> float | None:
    """Memory as Slurm writes it (4G, 500M, 2T; a bare number is megabytes) in GB."""
    if text is None:
        return None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)B?", str(text).strip(), re.I)
    if not m:
        raise ConfigError(f"--mem {text!r}: use e.g. 4G or 500M")
    scale = {"K": 1 / 1024 ** 2, "M": 1 / 1024, "": 1 / 1024, "G": 1, "T": 1024}[m.group(2).upper()]
    return float(m.group(1)) * scale


class SlurmExecutor:
    """Runs tasks as submitit jobs (Slurm, or submitit's local executor)."""

    name = "slurm"

    def __init__(self, workers: int | None = None, partition: str | None = None, time: str | None = None,
                 mem: str | None = None, folder: str | None = None, cluster: str | None = None,
                 gpus_per_run: float | None = None, **_):
        try:
            import submitit
        except ImportError:
            raise missing_extra("submitit", "slurm") from None
        self.workers, self.partition, self.cluster = workers, partition, cluster
        self.minutes, self.gb = minutes(time), gigabytes(mem)
        self.folder = Path(folder or ".submitit")
        if gpus_per_run is not None and (gpus_per_run < 0 or gpus_per_run != int(gpus_per_run)):
            raise ConfigError(f"slurm allocates whole GPUs: --gpus-per-run must be a whole number >= 0 "
                              f"(got {gpus_per_run:g})")
        self.gpus = int(gpus_per_run or 0)
        if (cluster or "slurm") == "slurm" and submitit.SlurmExecutor.affinity() <= 0:
            raise ConfigError("no Slurm cluster found here (sbatch is not on PATH); run with --executor local, "
                              "or add --slurm-cluster local to run the submitit path on this machine")

    def _executor(self):
        """A configured submitit executor."""
        import submitit
        cluster = self.cluster or "slurm"
        ex = submitit.AutoExecutor(folder=self.folder / "%j", cluster=cluster)
        params = {"cpus_per_task": 1, "name": "collapse-sweep",
                  # submitit's local executor stops jobs after 2 minutes unless told otherwise
                  "timeout_min": self.minutes or (None if cluster == "slurm" else 7 * 24 * 60)}
        if self.gb is not None:
            params["mem_gb"] = self.gb
        if cluster == "slurm":
            params["slurm_setup"] = [f"export {k}={v}" for k, v in one_thread_env().items()]
            if self.partition:
                params["slurm_partition"] = self.partition
            if self.gpus:
                params["slurm_gpus_per_task"] = self.gpus
            if self.workers:
                params["slurm_array_parallelism"] = self.workers
        ex.update_parameters(**params)
        return ex

    def run(self, tasks, started, finished) -> None:
        """Submit tasks (at most `workers` in flight when given; locally, the usable cores) and
        poll until each has finished."""
        import os
        ex = self._executor()
        on_slurm = (self.cluster or "slurm") == "slurm"
        cap = len(tasks) if on_slurm else (self.workers or usable_cores())
        pending, live = list(tasks), {}   # label -> (task, job)
        saved = {k: os.environ.get(k) for k in one_thread_env()}
        os.environ.update(one_thread_env())   # inherited by local jobs
        try:
            if on_slurm:   # one job array; Slurm queues it (--workers: at most that many at once)
                with ex.batch():
                    jobs = [ex.submit(run_task, t) for t in pending]
                for task, job in zip(pending, jobs):
                    live[task.label] = (task, job)
                    started(task)
                pending = []
            while pending or live:
                while pending and len(live) < cap:
                    task = pending.pop(0)
                    live[task.label] = (task, ex.submit(run_task, task))
                    started(task)
                done = [label for label, (_, job) in live.items() if job.done()]
                for label in done:
                    task, job = live.pop(label)
                    finished(task, self._result(job))
                if not done:
                    time.sleep(5.0 if on_slurm else 0.2)
        except KeyboardInterrupt:
            for _, job in live.values():
                job.cancel(check=False)   # SIGINT (local) / scancel: the run checkpoints and stops
            for task, job in live.values():
                job.wait()
                finished(task, self._result(job))
            raise
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    @staticmethod
    def _result(job) -> dict:
        """A job's result, or its failure (killed, timed out, node lost) as a failed result."""
        try:
            result = job.result()
        except Exception as e:  # noqa: BLE001 - submitit reports failures as several exception types
            lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
            return {"status": "failed", "message": f"job {job.job_id}: {type(e).__name__}: "
                                                   f"{lines[0] if lines else ''}"}
        return result if isinstance(result, dict) else {"status": "failed", "message": f"job returned {result!r}"}
