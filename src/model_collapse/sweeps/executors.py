"""The executor registry: name -> class. Nothing registers itself on import.

An executor is built with the command line's options (workers, address, partition, time,
mem, folder, cluster; each takes what it needs) and has one method::

    run(tasks, started, finished)   # started(task) when it is handed out, finished(task, result)

It calls both from the driver's thread, runs task.run_task(task) for every task somewhere,
and on KeyboardInterrupt stops what it started (each run checkpoints) before re-raising.
Every executor writes the same run directories, so a sweep may be resumed with another one.
"""

from __future__ import annotations

from ..errors import ConfigError


def _local():
    from .local import LocalExecutor
    return LocalExecutor


def _ray():
    from .ray_exec import RayExecutor
    return RayExecutor


def _slurm():
    from .slurm_exec import SlurmExecutor
    return SlurmExecutor


# Loaders, so that choosing `local` never imports ray or submitit.
EXECUTORS = {"local": _local, "ray": _ray, "slurm": _slurm}


def get_executor(name: str, **options):
    """Build the named executor; an unknown name or a missing extra is a ConfigError saying what to do."""
    if name not in EXECUTORS:
        raise ConfigError(f"unknown executor {name!r}; choose from {', '.join(EXECUTORS)}")
    return EXECUTORS[name]()(**options)


def missing_extra(package: str, extra: str) -> ConfigError:
    """The error for an executor whose optional dependency is not installed."""
    return ConfigError(f"the {extra} executor needs the `{package}` package, which is not installed: "
                       f"pip install 'model-collapse[{extra}]' (or run with --executor local)")
