"""Former members' identities, as keyed hashes: finding a withdrawn member by what they declared.

A withdrawn member's row is gone and the archive holds only pseudonyms of member numbers, yet a
former member asking for 열람 (제35조) or withdrawing a retention consent (제37조) knows their
email address, login id or mobile number, not the number. So when a member leaves something kept
(archived records, or their member row kept blanked), each declared identity is stored as
HMAC-SHA256 under a key of its own (``keystore.identity_key``, wrapped by the master key like
every archive secret), next to the member number and pseudonym: the value itself is never
stored, and without the key a guess cannot be tested.

The entries live in the archive DB, beside the records they lead to, and end with them: each
carries the last ``retain_until`` day of the member's archived records (``kept_until``) and the
purge of that day's bucket deletes it (lifecycle/engine/purge.py), in the same transaction that
deletes the records. A restore of the primary DB cannot bring them back; a replay re-records
them only for a member who again has something kept.

The caller normalises values (lifecycle/datamap/identities.py): this module only hashes
``(kind, canonical value)`` pairs, so a value typed at the counter and one read from the member
table meet in one form.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import date

from sqlalchemy import delete, select, text, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session

from lifecycle.core import db
from lifecycle.vault import keystore
from models.archive import ArchivedRecord, FormerIdentity
from models.base import utcnow

_CHUNK = 1000
# Identities a statement takes as arrays on PostgreSQL (three a member).
_ARRAY_CHUNK = 30_000
_INSERT_ARRAYS = text(
    f"INSERT INTO {FormerIdentity.__tablename__} "
    "(digest, member_id, subject_ref, kept_until, kept_live, recorded_at) "
    "SELECT d, m, r, k, l, :now FROM unnest(CAST(:d AS text[]), CAST(:m AS bigint[]), "
    "CAST(:r AS text[]), CAST(:k AS date[]), CAST(:l AS boolean[])) AS u(d, m, r, k, l) "
    "ON CONFLICT (digest, member_id) DO NOTHING"
)


@dataclass(frozen=True)
class Leaver:
    """A member leaving with something kept, and their identities (kind, canonical value)."""

    member_id: int
    subject_ref: str
    identities: tuple[tuple[str, str], ...]
    kept_until: date | None = None
    kept_live: bool = False


def digest(key: bytes, kind: str, value: str) -> str:
    """HMAC-SHA256 (hex) of one canonical identity; the kind is part of the message, so an
    email and a login id with the same text never collide."""
    msg = b"identity\x00" + kind.encode() + b"\x00" + value.encode()
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def record(s: Session, leavers: Iterable[Leaver]) -> int:
    """Store the leavers' identity hashes (idempotent: a re-run adds nothing, and only moves
    ``kept_until`` later). Returns the entries newly written."""
    leavers = [lv for lv in leavers if lv.identities]
    if not leavers:
        return 0
    key = keystore.identity_key(s)
    assert key is not None
    now = utcnow()
    rows = [
        {
            "digest": digest(key, kind, value),
            "member_id": lv.member_id,
            "subject_ref": lv.subject_ref,
            "kept_until": lv.kept_until,
            "kept_live": lv.kept_live,
            "recorded_at": now,
        }
        for lv in leavers
        for kind, value in sorted(set(lv.identities))
    ]
    written = 0
    if s.get_bind().dialect.name == "postgresql":
        # One statement over arrays: as an executemany, psycopg sent one INSERT per identity
        # (6,000 for a MariaDB sweep batch of 2,000 members), a tenth of the batch's time.
        for i in range(0, len(rows), _ARRAY_CHUNK):
            part = rows[i : i + _ARRAY_CHUNK]
            res = s.execute(
                _INSERT_ARRAYS,
                {
                    "d": [r["digest"] for r in part],
                    "m": [r["member_id"] for r in part],
                    "r": [r["subject_ref"] for r in part],
                    "k": [r["kept_until"] for r in part],
                    "l": [r["kept_live"] for r in part],
                    "now": now,
                },
            )
            written += max(getattr(res, "rowcount", 0) or 0, 0)
    else:
        ins = sqlite.insert(FormerIdentity).on_conflict_do_nothing(
            index_elements=["digest", "member_id"]
        )
        for i in range(0, len(rows), _CHUNK):
            res = s.execute(ins, rows[i : i + _CHUNK])
            written += max(getattr(res, "rowcount", 0) or 0, 0)
    extend(s, {lv.subject_ref: lv.kept_until for lv in leavers if lv.kept_until is not None})
    live = sorted({lv.subject_ref for lv in leavers if lv.kept_live})
    for i in range(0, len(live), _CHUNK):
        s.execute(
            update(FormerIdentity)
            .where(FormerIdentity.subject_ref.in_(live[i : i + _CHUNK]))
            .values(kept_live=True)
            .execution_options(synchronize_session=False)
        )
    return written


def extend(s: Session, days: Mapping[str, date]) -> None:
    """Records archived later for a former member (a row found after the withdrawal): their
    entries last until the new records' day too. Members with no entry cost one lookup per
    chunk."""
    refs = sorted(days)
    for i in range(0, len(refs), _CHUNK):
        chunk = refs[i : i + _CHUNK]
        have = s.execute(
            select(FormerIdentity.subject_ref, FormerIdentity.kept_until).where(
                FormerIdentity.subject_ref.in_(chunk)
            )
        ).all()
        late: dict[date, set[str]] = {}
        for ref, until in have:
            if until is None or until < days[ref]:
                late.setdefault(days[ref], set()).add(ref)
        for day, group in late.items():
            s.execute(
                update(FormerIdentity)
                .where(
                    FormerIdentity.subject_ref.in_(sorted(group)),
                    (FormerIdentity.kept_until.is_(None)) | (FormerIdentity.kept_until < day),
                )
                .values(kept_until=day)
                .execution_options(synchronize_session=False)
            )


def lookup(s: Session, candidates: Iterable[tuple[str, str]]) -> set[int]:
    """The former members with any of these (kind, canonical value) identities."""
    key = keystore.identity_key(s, create=False)
    wanted = sorted({digest(key, kind, value) for kind, value in candidates}) if key else []
    if not wanted:
        return set()
    q = select(FormerIdentity.member_id).where(FormerIdentity.digest.in_(wanted)).distinct()
    return {int(m) for m in s.scalars(q)}


def find(candidates: list[tuple[str, str]]) -> set[int]:
    """:func:`lookup` in a session of its own: what a command or the console resolves a typed
    identity with (``intake.FormerLookup``)."""
    with db.session("archive") as s:
        return lookup(s, candidates)


def forget_if_none_left(s: Session, ref: str) -> int:
    """After records of one member were deleted outside the purge (a former member withdrew
    the retention consent that kept them): their entries go when no archived record of theirs
    is left, unless their member row is kept."""
    left = s.scalar(
        select(ArchivedRecord.source_pk).where(ArchivedRecord.subject_ref == ref).limit(1)
    )
    if left is not None:
        return 0
    res = s.execute(
        delete(FormerIdentity)
        .where(FormerIdentity.subject_ref == ref, FormerIdentity.kept_live.is_(False))
        .execution_options(synchronize_session=False)
    )
    return max(getattr(res, "rowcount", 0) or 0, 0)


def forget_purged(s: Session, refs: Collection[str], day: date, keep: Collection[str] = ()) -> int:
    """Delete the entries of members whose last archived records are the bucket of ``day``
    being purged (``refs``: its members), unless their member row is kept or a legal hold
    keeps their records (``keep``). Returns the entries deleted."""
    gone = sorted(set(refs) - set(keep))
    done = 0
    for i in range(0, len(gone), _CHUNK):
        res = s.execute(
            delete(FormerIdentity)
            .where(
                FormerIdentity.subject_ref.in_(gone[i : i + _CHUNK]),
                FormerIdentity.kept_until <= day,
                FormerIdentity.kept_live.is_(False),
            )
            .execution_options(synchronize_session=False)
        )
        done += max(getattr(res, "rowcount", 0) or 0, 0)
    return done


__all__ = [
    "Leaver",
    "digest",
    "extend",
    "find",
    "forget_if_none_left",
    "forget_purged",
    "lookup",
    "record",
]
