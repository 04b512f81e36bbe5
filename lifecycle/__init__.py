"""Personal-data lifecycle workers for a PIPA-bound Korean website."""

__version__ = "0.3.0"  # kept equal to pyproject.toml (tests/core/test_version.py)
