"""bnlab: run, understand and compare Batch Normalization experiments."""

__version__ = "0.1.0"
