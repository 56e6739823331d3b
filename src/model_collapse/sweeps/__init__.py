"""Sweeps: one experiment run over a grid of dotted overrides and several seeds.

    collapse sweep RECIPE|SPEC --grid key=v1,v2 [--grid ...] --seeds K [--executor local|ray|slurm]

Layout of a sweep directory (every run directory is a `collapse run` store)::

    SWEEP/sweep.yaml                 what was swept: recipe, overrides, grid, seeds, figures
    SWEEP/sweep.csv                  one row per grid point x seed: values, seed, status, run dir, message
    SWEEP/sweep.log                  one JSON line per finished attempt, driver start and end (append-only)
    SWEEP/stats.csv                  per point and generation: mean and median across seeds with bootstrap CIs
    SWEEP/figures/sweep.png          final metrics against the swept parameter
    SWEEP/<point>/seed-<s>/          a run directory (variants, if any, are sub-directories as in `collapse run`)
    SWEEP/.cache/, SWEEP/.locks/     each run's chain means (for stats.csv); lock files (one writer per run)

Modules: spec (grids, spec files, validation), task (one run, as a worker runs it), executors
(the registry) with local, ray_exec and slurm_exec, warm (what the local forkserver preloads),
driver (resume decisions, index, progress), index (sweep.csv, sweep.log), progress, stats,
figures (the sweep figure, compare), commands (the CLI). Nothing here imports numpy at package
import, so a worker can hold BLAS to one thread before numpy loads.
"""
