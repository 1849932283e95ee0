"""imgclass: a reproducible image-classification pipeline (DVC stages over a small library)."""

__version__ = "0.1.0"
