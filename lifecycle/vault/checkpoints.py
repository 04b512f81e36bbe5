"""Checkpoints of the two hash chains in the archive DB, kept where its attacker must also reach.

A checkpoint is the ``(seq, hash)`` of a chain's head *after the whole chain verified*, written
to the primary DB and appended to a file, and logged. Two chains are anchored this way: the
destruction ledger (``lifecycle_ledger_checkpoints``, ``LIFECYCLE_LEDGER_CHECKPOINT_FILE``,
default ``<var>/ledger-checkpoints.jsonl``) and the handler access log
(``lifecycle_accesslog_checkpoints``, ``LIFECYCLE_ACCESSLOG_CHECKPOINT_FILE``, default
``<var>/accesslog-checkpoints.jsonl``). Beat takes both each night; ``lifecycle ledger
checkpoint`` and ``lifecycle accesslog checkpoint`` take one on demand.

With checkpoints, ``verify`` fails when an anchored entry is gone (truncated, wiped) or has
another hash (rewritten), and ``ledger.append`` refuses to write on a head older than the last
checkpoint. What remains undetectable is written in docs/encryption-and-ledger.md.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from lifecycle.core import db
from lifecycle.core.errors import UserError
from lifecycle.core.settings import get_settings
from lifecycle.vault import accesslog, ledger
from lifecycle.vault.chain import VerifyResult
from models.anchor import AccessLogCheckpoint, LedgerCheckpoint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Chain:
    """One hash chain of the archive DB and where its checkpoints are kept."""

    name: str
    model: type[LedgerCheckpoint] | type[AccessLogCheckpoint]
    file_name: str
    setting: str
    verify_archive: Callable[[Session, Mapping[int, str]], VerifyResult]

    def file(self) -> Path:
        s = get_settings()
        named: Path | None = getattr(s, self.setting)
        return named or s.var_dir / self.file_name


LEDGER = Chain(
    "ledger", LedgerCheckpoint, "ledger-checkpoints.jsonl", "ledger_checkpoint_file",
    lambda s, anchors: ledger.verify(s, anchors=anchors),
)  # fmt: skip
ACCESS_LOG = Chain(
    "access log", AccessLogCheckpoint, "accesslog-checkpoints.jsonl",
    "accesslog_checkpoint_file", lambda s, anchors: accesslog.verify(s, anchors=anchors),
)  # fmt: skip


def checkpoint_file(chain: Chain = LEDGER) -> Path:
    return chain.file()


def read_file(path: Path, chain: Chain = LEDGER) -> dict[int, str]:
    """Checkpoints recorded in ``path`` (none if it does not exist)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise UserError(f"{chain.name} checkpoint file {path} cannot be read ({why})") from None
    out: dict[int, str] = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            seq, digest = int(rec["seq"]), str(rec["hash"])
        except (ValueError, KeyError, TypeError):
            raise ledger.LedgerBroken(
                f"{chain.name} checkpoint file {path} line {n} is not a checkpoint (file altered?)"
            ) from None
        if out.get(seq, digest) != digest:
            raise ledger.LedgerBroken(
                f"{chain.name} checkpoint file {path} records entry {seq} with two different hashes"
            )
        out[seq] = digest
    return out


def read_db(chain: Chain = LEDGER) -> dict[int, str]:
    m = chain.model
    with db.session("primary") as p:
        return {int(seq): h for seq, h in p.execute(select(m.seq, m.hash))}


def known(chain: Chain = LEDGER) -> dict[int, str]:
    """Every checkpoint from the primary DB and the file; a disagreement is itself tampering."""
    path = chain.file()
    in_db, in_file = read_db(chain), read_file(path, chain)
    for seq in sorted(in_db.keys() & in_file.keys()):
        if in_db[seq] != in_file[seq]:
            raise ledger.LedgerBroken(
                f"{chain.name} broken at entry {seq}: the checkpoint in the primary DB and the "
                f"one in {path} record different hashes (one of them was altered)"
            )
    return in_db | in_file


def verify(chain: Chain = LEDGER) -> VerifyResult:
    """The chain, its head row and every checkpoint, in one snapshot of the archive DB."""
    anchors = known(chain)
    with db.session("archive") as s:
        return chain.verify_archive(s, anchors)


def take(chain: Chain = LEDGER) -> tuple[int, str]:
    """Verify the ledger and record its head as a checkpoint; returns ``(seq, hash)``.

    Only a ledger that verifies is anchored: anchoring a tampered chain would vouch for it.
    Idempotent: the same head recorded twice is one checkpoint.
    """
    result = verify(chain)
    if not result.ok:
        raise ledger.LedgerBroken(
            f"{chain.name} broken at entry {result.first_bad_seq}: {result.reason}"
        )
    seq, digest = result.checked, result.head_hash or ""
    if seq == 0:
        return seq, digest  # nothing to anchor yet
    try:
        m = chain.model
        with db.session("primary") as p:
            if p.scalar(select(m.hash).where(m.seq == seq)) is None:
                p.add(m(seq=seq, hash=digest))
    except IntegrityError:
        pass  # a concurrent checkpoint of the same head won; verify() compares the hashes
    path = chain.file()
    if read_file(path, chain).get(seq) != digest:
        _append_line(path, json.dumps({"seq": seq, "hash": digest}, separators=(",", ":")), chain)
    if chain is LEDGER:
        ledger.forget_checkpoint_floor()
    # The log (journald/syslog) is a third copy outside both databases.
    log.info("%s checkpoint: entry %d hash %s", chain.name, seq, digest)
    return seq, digest


def _append_line(path: Path, line: str, chain: Chain) -> None:
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
            f"cannot write the {chain.name} checkpoint file {path} ({exc.strerror}); "
            f"check LIFECYCLE_{chain.setting.upper()}"
        ) from None


__all__ = [
    "ACCESS_LOG",
    "LEDGER",
    "Chain",
    "checkpoint_file",
    "known",
    "read_db",
    "read_file",
    "take",
    "verify",
]
