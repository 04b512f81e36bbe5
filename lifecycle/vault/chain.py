"""The destruction ledger's hash chain (pure: no DB).

Each entry's hash is ``SHA-256(prev_hash || canonical(fields))`` where ``canonical`` is sorted-key,
compact JSON of an explicit field list (``HASHED_FIELDS``) with timestamps as UTC ISO-8601 with
microseconds. ``seq`` is hashed too, so moving an entry to another position changes its hash.

What verification detects, and how it reports it (``first_bad_seq`` is the entry to look at):

- a changed field (or a recomputed ``hash`` column that no longer matches): *hash mismatch*;
- a deleted entry: a gap in ``seq`` (*missing*), or the last entries gone (*behind the head*);
- reordered entries (``seq`` values swapped): *hash mismatch* at the first moved entry;
- an inserted entry: *does not link* to its predecessor, or *beyond the head*.

A chain whose every hash an attacker recomputed is consistent by construction; the ledger head
row and exported copies of the head hash (``lifecycle ledger verify`` prints it) are what make
such a rewrite evident. *Anchors* (checkpoints of ``(seq, hash)`` kept outside the archive DB, see
``lifecycle.vault.checkpoints``) catch what the head row cannot: the last entries deleted with
the head pointed back (*truncated*), everything deleted (*wiped*), or a rewritten chain.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lifecycle.core.timeutil import as_utc

GENESIS_HASH = hashlib.sha256(b"pipa-lifecycle ledger genesis").hexdigest()

# Order is irrelevant (keys are sorted); the list is explicit so that adding a column to the
# table never silently changes what old hashes covered.
HASHED_FIELDS: tuple[str, ...] = (
    "seq",
    "occurred_at",
    "action",
    "categories",
    "tables",
    "subjects",
    "rows",
    "reason",
    "legal_basis",
    "method",
    "actor",
    "task_id",
    "request_id",
    "subject_ref",
    "details",
    "dedup_key",
)


def utc_iso(ts: datetime) -> str:
    """UTC ISO-8601 with microseconds; a naive value is taken as UTC (SQLite drops the zone)."""
    return as_utc(ts).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _get(entry: Any, name: str) -> Any:
    if isinstance(entry, Mapping):
        return entry.get(name)
    return getattr(entry, name, None)


def canonical_fields(entry: Any, names: tuple[str, ...] = HASHED_FIELDS) -> dict[str, Any]:
    """The hashed fields of an entry (object with attributes, or mapping), normalised.

    ``names``: the field list of the chain (the ledger's by default; the access log has its own).
    """
    out: dict[str, Any] = {}
    for name in names:
        value = _get(entry, name)
        if name == "occurred_at":
            value = utc_iso(value) if isinstance(value, datetime) else value
        elif name in ("categories", "tables"):
            value = list(value or [])
        elif name == "details":
            value = dict(value or {})
        elif name in ("subjects", "rows", "seq") and value is not None:
            value = int(value)
        out[name] = value
    return out


def canonical_bytes(fields: Mapping[str, Any]) -> bytes:
    return json.dumps(
        fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def entry_hash(prev_hash: str, fields: Any, names: tuple[str, ...] = HASHED_FIELDS) -> str:
    """SHA-256 hex of the previous hash and the canonical form of this entry's fields."""
    h = hashlib.sha256(prev_hash.encode("ascii"))
    h.update(b"\n")
    h.update(canonical_bytes(canonical_fields(fields, names)))
    return h.hexdigest()


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    first_bad_seq: int | None = None
    reason: str | None = None
    head_hash: str | None = None

    def message(self) -> str:
        if self.ok:
            return f"ledger OK: {self.checked} entries"
        return f"ledger broken at entry {self.first_bad_seq}: {self.reason}"


def verify_chain(
    entries: Iterable[Any],
    head: tuple[int, str] | None = None,
    anchors: Mapping[int, str] | None = None,
    *,
    names: tuple[str, ...] = HASHED_FIELDS,
    base: tuple[int, str] = (0, GENESIS_HASH),
) -> VerifyResult:
    """Check entries given in ``seq`` order; stops at the first problem.

    ``head`` is ``(seq, hash)`` of the ledger head row, if there is one: it catches entries
    deleted from, or appended past, the end of the chain. ``anchors`` maps a ``seq`` to the hash
    a checkpoint recorded for it: that entry must exist and carry that hash. ``base`` is the
    entry the kept part of the chain follows (a chain whose oldest entries were pruned starts
    after its base).
    """
    anchors = anchors or {}
    expected_seq = base[0] + 1
    prev = base[1]
    checked = 0
    for entry in entries:
        seq = int(_get(entry, "seq"))
        if seq > expected_seq:
            return VerifyResult(False, checked, expected_seq, "entry missing (deleted)")
        if seq < expected_seq:  # only possible when the caller's order is wrong
            return VerifyResult(False, checked, seq, "entries out of order")
        if head is not None and seq > head[0]:
            return VerifyResult(
                False, checked, seq, f"entry beyond the ledger head at {head[0]} (inserted)"
            )
        stored = _get(entry, "hash")
        if entry_hash(_get(entry, "prev_hash") or "", entry, names) != stored:
            return VerifyResult(
                False, checked, seq, "hash mismatch (entry changed, moved or inserted)"
            )
        if _get(entry, "prev_hash") != prev:
            return VerifyResult(
                False,
                checked,
                seq,
                f"does not link to entry {seq - 1} (entries reordered, inserted or changed)",
            )
        anchored = anchors.get(seq)
        if anchored is not None and anchored != stored:
            return VerifyResult(
                False,
                checked,
                seq,
                "hash differs from the checkpoint of this entry (ledger rewritten)",
            )
        prev = stored
        expected_seq = seq + 1
        checked += 1
    last_seq = expected_seq - 1
    beyond = max((s for s in anchors if s > last_seq), default=None)
    if beyond is not None:
        if last_seq == 0:
            why = f"the ledger is empty but a checkpoint recorded entry {beyond} (ledger wiped)"
        else:
            why = (
                f"entries missing after entry {last_seq} (ledger truncated; a checkpoint "
                f"recorded entry {beyond})"
            )
        return VerifyResult(False, checked, last_seq + 1, why)
    if head is not None:
        head_seq, head_hash = head
        if head_seq > last_seq:
            return VerifyResult(
                False,
                checked,
                last_seq + 1,
                f"entry missing (deleted; the ledger head is at entry {head_seq})",
            )
        if head_seq == last_seq and head_hash != prev:
            return VerifyResult(
                False, checked, last_seq, "hash differs from the ledger head (entry changed)"
            )
    return VerifyResult(True, checked, head_hash=prev)


__all__ = [
    "GENESIS_HASH",
    "HASHED_FIELDS",
    "VerifyResult",
    "canonical_bytes",
    "canonical_fields",
    "entry_hash",
    "utc_iso",
    "verify_chain",
]
