"""Personal-data lifecycle workers for a PIPA-bound Korean website."""

__version__ = "0.1.0"
