"""The `lifecycle` console script."""
