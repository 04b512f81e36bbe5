"""Writing an export (the ledger, the register, the access log) to stdout or to a file: CSV for
Excel, text or JSON."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import typer

from lifecycle.core.errors import UserError


def check_output(output: Path | None) -> None:
    """Refuse an ``--output`` that cannot be written, before anything is read or recorded."""
    if output is not None and output.exists() and output.is_dir():
        raise UserError(f"--output {output} is a directory")
    if output is not None and not output.parent.is_dir():
        raise UserError(f"--output directory {output.parent} does not exist")


def write_csv(output: Path | None, write: Callable[[IO[str]], int]) -> int:
    """Run ``write`` on stdout or on ``output``; UTF-8 with a BOM either way. Rows written.

    The same bytes both ways: `export > f.csv` is how most people save it, and Excel reads a
    BOM-less file in the ANSI code page, garbling the Korean headings.
    """
    return write_export(output, write, encoding="utf-8-sig")


def write_export(
    output: Path | None, write: Callable[[IO[str]], int], *, encoding: str = "utf-8"
) -> int:
    """Run ``write`` on stdout or on ``output`` in ``encoding``; returns what ``write`` does.

    A file is written under a temporary name and renamed, so a failed export never leaves half
    a file behind.
    """
    if output is None:
        sys.stdout.flush()
        out = io.TextIOWrapper(sys.stdout.buffer, encoding=encoding, newline="")
        try:
            n = write(out)
            out.flush()
        finally:
            out.detach()
        return n
    tmp = output.with_name(f".{output.name}.part")
    try:
        with tmp.open("w", encoding=encoding, newline="") as fh:
            n = write(fh)
        tmp.replace(output)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write --output {output}: {exc.strerror}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return n


def export_logged(
    output: Path | None,
    export: Callable[[Any, IO[str], str], int],
    *,
    action: str,
    counted: str,
    noun: str,
) -> None:
    """Export an archive-held log as CSV and record the export in the access log.

    ``export(session, out, tz)`` writes the rows and returns how many; the access-log entry
    names ``action`` and the count under ``counted``. Who read a list of destructions or of
    accesses is itself an access to be logged (안전성 확보조치 기준 제8조).
    """
    # Lazy: every command module imports this one, and `--help` must not load the databases.
    from lifecycle.cli.operator import current
    from lifecycle.core.db import check_reachable, session
    from lifecycle.core.settings import get_settings
    from lifecycle.vault import accesslog

    check_output(output)
    check_reachable("archive")
    tz = get_settings().timezone
    who = current()

    def write(out: IO[str]) -> int:
        with session("archive") as s:
            n = export(s, out, tz)
            accesslog.record(s, operator=who, kind="export", action=action,
                             details={counted: n})  # fmt: skip
        return n

    n = write_csv(output, write)
    if output is not None:
        typer.echo(f"wrote {n} {noun} to {output}", err=True)
