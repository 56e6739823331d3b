"""model-collapse: a laboratory for generative models trained on their own samples."""

__version__ = "0.1.0"
