"""Figures, drawn only from what a run directory holds."""

from .runs import plot_run

__all__ = ["plot_run"]
