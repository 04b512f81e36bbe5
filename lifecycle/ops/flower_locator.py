"""Where the running Flower is, for `lifecycle status` in another shell.

`lifecycle up` may run with a port or address given only in its own shell's environment; a
second shell's settings would then point at the default and report Flower missing. So `up`
records the URL it started Flower on under the var directory, and status prefers it to the
defaults. A port or address set in status's own environment (or .env) still wins.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from lifecycle.core.settings import Settings

FILE_NAME = "flower.url"


def _file(settings: Settings) -> Path:
    return settings.var_dir / FILE_NAME


def loopback(address: str) -> str:
    return "127.0.0.1" if address in ("", "0.0.0.0") else address


def configured_url(settings: Settings) -> str:
    return f"http://{loopback(settings.flower_address)}:{settings.flower_port}/"


def record(settings: Settings) -> str:
    url = configured_url(settings)
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    tmp = _file(settings).with_suffix(".part")
    tmp.write_text(url + "\n")
    tmp.replace(_file(settings))
    return url


def clear(settings: Settings) -> None:
    with contextlib.suppress(FileNotFoundError):
        _file(settings).unlink()


def locate(settings: Settings) -> str:
    """Flower's base URL (ending in /): this shell's explicit setting, else what `up` recorded."""
    if not {"flower_port", "flower_address"} & settings.model_fields_set:
        try:
            url = _file(settings).read_text().strip()
        except OSError:
            url = ""
        if url.startswith("http://") and url.endswith("/"):
            return url
    return configured_url(settings)
