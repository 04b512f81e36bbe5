"""Checkpoints of the ledger head, kept where an attacker of the archive DB must also reach.

A checkpoint is the ``(seq, hash)`` of the ledger head *after the whole chain verified*,
written to the primary DB (``lifecycle_ledger_checkpoints``) and appended to a file
(``LIFECYCLE_LEDGER_CHECKPOINT_FILE``, default ``<var>/ledger-checkpoints.jsonl``), and logged.
Beat takes one each night; ``lifecycle ledger checkpoint`` takes one on demand.

With checkpoints, ``verify`` fails when an anchored entry is gone (truncated, wiped) or has
another hash (rewritten), and ``ledger.append`` refuses to write on a head older than the last
checkpoint. What remains undetectable is written in docs/encryption-and-ledger.md.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from lifecycle.core import db
from lifecycle.core.errors import UserError
from lifecycle.core.settings import get_settings
from lifecycle.vault import ledger
from lifecycle.vault.chain import VerifyResult
from models.anchor import LedgerCheckpoint

log = logging.getLogger(__name__)


def checkpoint_file() -> Path:
    s = get_settings()
    return s.ledger_checkpoint_file or s.var_dir / "ledger-checkpoints.jsonl"


def read_file(path: Path) -> dict[int, str]:
    """Checkpoints recorded in ``path`` (none if it does not exist)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise UserError(f"ledger checkpoint file {path} cannot be read ({why})") from None
    out: dict[int, str] = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            seq, digest = int(rec["seq"]), str(rec["hash"])
        except (ValueError, KeyError, TypeError):
            raise ledger.LedgerBroken(
                f"ledger checkpoint file {path} line {n} is not a checkpoint (file altered?)"
            ) from None
        if out.get(seq, digest) != digest:
            raise ledger.LedgerBroken(
                f"ledger checkpoint file {path} records entry {seq} with two different hashes"
            )
        out[seq] = digest
    return out


def read_db() -> dict[int, str]:
    with db.session("primary") as p:
        return {
            int(seq): h for seq, h in p.execute(select(LedgerCheckpoint.seq, LedgerCheckpoint.hash))
        }


def known() -> dict[int, str]:
    """Every checkpoint from the primary DB and the file; a disagreement is itself tampering."""
    path = checkpoint_file()
    in_db, in_file = read_db(), read_file(path)
    for seq in sorted(in_db.keys() & in_file.keys()):
        if in_db[seq] != in_file[seq]:
            raise ledger.LedgerBroken(
                f"ledger broken at entry {seq}: the checkpoint in the primary DB and the one in "
                f"{path} record different hashes (one of them was altered)"
            )
    return in_db | in_file


def verify() -> VerifyResult:
    """The chain, its head row and every checkpoint, in one snapshot of the archive DB."""
    anchors = known()
    with db.session("archive") as s:
        return ledger.verify(s, anchors=anchors)


def take() -> tuple[int, str]:
    """Verify the ledger and record its head as a checkpoint; returns ``(seq, hash)``.

    Only a ledger that verifies is anchored: anchoring a tampered chain would vouch for it.
    Idempotent: the same head recorded twice is one checkpoint.
    """
    result = verify()
    if not result.ok:
        raise ledger.LedgerBroken(result.message())
    seq, digest = result.checked, result.head_hash or ""
    if seq == 0:
        return seq, digest  # nothing to anchor yet
    try:
        with db.session("primary") as p:
            if p.scalar(select(LedgerCheckpoint.hash).where(LedgerCheckpoint.seq == seq)) is None:
                p.add(LedgerCheckpoint(seq=seq, hash=digest))
    except IntegrityError:
        pass  # a concurrent checkpoint of the same head won; verify() compares the hashes
    path = checkpoint_file()
    if read_file(path).get(seq) != digest:
        _append_line(path, json.dumps({"seq": seq, "hash": digest}, separators=(",", ":")))
    ledger.forget_checkpoint_floor()
    # The log (journald/syslog) is a third copy outside both databases.
    log.info("ledger checkpoint: entry %d hash %s", seq, digest)
    return seq, digest


def _append_line(path: Path, line: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (line + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise UserError(
            f"cannot write the ledger checkpoint file {path} ({exc.strerror}); "
            "check LIFECYCLE_LEDGER_CHECKPOINT_FILE"
        ) from None


__all__ = ["checkpoint_file", "known", "read_db", "read_file", "take", "verify"]
