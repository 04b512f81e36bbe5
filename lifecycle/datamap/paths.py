"""Which data-map file is in force: the one place both the loader and the cached map ask."""

from __future__ import annotations

from pathlib import Path

from lifecycle.core.settings import get_settings

SHIPPED_DEMO_MAP = Path(__file__).parent / "maps" / "demo.yaml"

# A data map is a few hundred lines; anything this big is a mistake or an attack.
MAX_DATAMAP_BYTES = 1024 * 1024


def map_path(path: str | Path | None = None) -> Path:
    """The data map in force: ``path``, else ``LIFECYCLE_DATA_MAP``, else the shipped demo."""
    return Path(path or get_settings().data_map or SHIPPED_DEMO_MAP)
