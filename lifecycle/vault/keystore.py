"""Wrapped data keys in the archive DB: bucket keys, crypto-shredding, master-key rotation.

Key granularity is one data key per retention bucket (category × ``retain_until`` day): every
row in a bucket reaches the end of its legal period on the same day, so the purge destroys
exactly one key per bucket and with it exactly the data whose period ended, in backups too.
A key per subject would need a million keys for a million withdrawn members (and a key lookup
per row in the sweep); a key per category would outlive the data it protects.

No command prints archived plaintext: ``decrypt_archived`` exists for tests and for an
authorised export written in code (e.g. a court order), never for a CLI path.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, cast

from sqlalchemy import CursorResult, Date, Engine, String, bindparam, func, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from lifecycle.core.db import session as db_session
from lifecycle.core.errors import LifecycleError, UserError
from lifecycle.core.settings import get_settings
from lifecycle.vault import crypto
from models.archive import ArchivedRecord, DataKey
from models.base import utcnow
from models.vault import ArchiveSecret

REF_KEY_NAME = "ledger-subject-ref"
# The key of former members' identity hashes (lifecycle/vault/former.py): its own, so neither
# it nor the pseudonym key lets one test guesses against the other's values.
IDENTITY_KEY_NAME = "former-identity"


class KeyUnavailable(LifecycleError):
    """A data key is destroyed, or wrapped under a master key we do not have."""


class KeyDestroyed(KeyUnavailable):
    pass


# Unwrapped keys, by (database, key id, wrapped bytes). Including the wrapped bytes means a
# destroyed key (NULL) or a re-wrapped one never hits a stale entry: every use re-reads the row.
_cache: dict[tuple[str, str, int | str, bytes], bytes] = {}
_cache_lock = threading.Lock()
_CACHE_MAX = 4096


def _db_id(session: Session) -> str:
    bind = session.get_bind()
    eng = bind if isinstance(bind, Engine) else bind.engine
    return eng.url.render_as_string(hide_password=True)


def _master() -> bytes:

    return get_settings().master_key_bytes()


def _unwrap_cached(
    session: Session, kind: str, ident: int | str, wrapped: bytes, wrapped_by: str, master: bytes
) -> bytes:
    ck = (_db_id(session), kind, ident, bytes(wrapped))
    dk = _cache.get(ck)
    if dk is not None:
        return dk
    mid = crypto.master_key_id(master)
    if wrapped_by != mid:
        raise KeyUnavailable(
            f"{kind} {ident} is wrapped under master key {wrapped_by}, not the configured "
            f"{mid}: {mismatch_advice(key_census(session), mid)}"
        )
    try:
        dk = crypto.unwrap_key(master, wrapped)
    except crypto.CryptoError as exc:
        raise KeyUnavailable(f"{kind} {ident}: {exc}") from None
    with _cache_lock:
        if len(_cache) >= _CACHE_MAX:
            _cache.clear()
        _cache[ck] = dk
    return dk


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()


def _insert(session: Session):  # type: ignore[no-untyped-def]
    """INSERT ... ON CONFLICT DO NOTHING builder for the session's dialect."""
    name = session.get_bind().dialect.name
    return postgresql.insert if name == "postgresql" else sqlite.insert


def _is_pg(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


# -- bucket keys ---------------------------------------------------------------------------------


def get_or_create_bucket_key(
    session: Session, category: str, retain_until: date, *, master: bytes | None = None
) -> tuple[int, bytes]:
    """The data key of bucket (category, retain_until): ``(key_id, data_key_bytes)``.

    Safe when several workers create the same bucket at once: the unique constraint decides,
    losers discard their fresh key and read the winner's. On PostgreSQL the row is locked
    ``FOR SHARE`` until the caller commits, so a purge cannot destroy the key while rows are
    being archived under it. Raises ``KeyDestroyed`` if the bucket's key was already destroyed
    (its period ended: such rows must be destroyed, not archived).
    """
    master = master if master is not None else _master()
    stmt = select(DataKey.id, DataKey.wrapped_key, DataKey.master_key_id).where(
        DataKey.category == category, DataKey.retain_until == retain_until
    )
    if _is_pg(session):
        stmt = stmt.with_for_update(read=True)
    row = session.execute(stmt).first()
    if row is None:
        dk = crypto.new_data_key()
        ins = (
            _insert(session)(DataKey)
            .values(
                category=category,
                retain_until=retain_until,
                wrapped_key=crypto.wrap_key(master, dk),
                master_key_id=crypto.master_key_id(master),
                created_at=utcnow(),
            )
            .on_conflict_do_nothing(index_elements=["category", "retain_until"])
        )
        session.execute(ins)
        row = session.execute(stmt).first()
        assert row is not None, "bucket key row vanished right after insert"
    key_id, wrapped, wrapped_by = row
    if wrapped is None:
        raise KeyDestroyed(
            f"data key {key_id} of bucket {category}/{retain_until.isoformat()} was destroyed"
        )
    return key_id, _unwrap_cached(session, "data key", key_id, wrapped, wrapped_by, master)


def get_or_create_bucket_keys(
    session: Session,
    buckets: Iterable[tuple[str, date]],
    *,
    master: bytes | None = None,
    share_lock: bool = True,
) -> dict[tuple[str, date], tuple[int, bytes] | None]:
    """Many buckets at once: ``{(category, retain_until): (key_id, dk) or None if destroyed}``.

    The sweep meets thousands of buckets per batch (a row's ``retain_until`` follows its own
    date), so one round trip per bucket would dominate the run. Same guarantees as
    :func:`get_or_create_bucket_key`: concurrent creators agree on one key per bucket, and on
    PostgreSQL the rows stay locked ``FOR SHARE`` until the caller commits (unless
    ``share_lock`` is False: for buckets whose day is far enough ahead that no purge can reach
    them during the caller's transaction, locking thousands of key rows buys nothing).
    """

    master = master if master is not None else _master()
    wanted = sorted(set(buckets))
    out: dict[tuple[str, date], tuple[int, bytes] | None] = {}
    pg = _is_pg(session)

    def fetch(pairs: list[tuple[str, date]]) -> list:  # type: ignore[type-arg]
        rows: list = []  # type: ignore[type-arg]
        step = 5000 if pg else 500
        for i in range(0, len(pairs), step):
            chunk = pairs[i : i + step]
            cols = (
                DataKey.category,
                DataKey.retain_until,
                DataKey.id,
                DataKey.wrapped_key,
                DataKey.master_key_id,
            )
            if pg:
                # A join on two unnested arrays: PostgreSQL plans a long row-value IN list
                # as an OR chain, which costs more than the lookup itself.
                wanted = (
                    select(
                        func.unnest(
                            bindparam(None, [c for c, _ in chunk], type_=ARRAY(String()))
                        ).label("c"),
                        func.unnest(
                            bindparam(None, [d for _, d in chunk], type_=ARRAY(Date()))
                        ).label("d"),
                    )
                ).subquery()
                stmt = select(*cols).join(
                    wanted,
                    (DataKey.category == wanted.c.c) & (DataKey.retain_until == wanted.c.d),
                )
                if share_lock:
                    stmt = stmt.with_for_update(read=True, of=DataKey)
            else:
                stmt = select(*cols).where(
                    tuple_(DataKey.category, DataKey.retain_until).in_(chunk)
                )
            rows.extend(session.execute(stmt).all())
        return rows

    found = {(c, d): (i, w, m) for c, d, i, w, m in fetch(wanted)}
    missing = [b for b in wanted if b not in found]
    if missing:
        mid = crypto.master_key_id(master)
        now = utcnow()
        # executemany (batched by SQLAlchemy's insertmanyvalues), not one giant VALUES list:
        # building that statement costs more than the round trips it saves.
        ins = _insert(session)(DataKey).on_conflict_do_nothing(
            index_elements=["category", "retain_until"]
        )
        rows = [
            {
                "category": c,
                "retain_until": d,
                "wrapped_key": crypto.wrap_key(master, crypto.new_data_key()),
                "master_key_id": mid,
                "created_at": now,
            }
            for c, d in missing
        ]
        if pg:
            # In a short transaction of its own, committed at once: a new key row left
            # uncommitted in the caller's (long) transaction makes every other worker that
            # meets the same bucket wait on the unique index until the caller commits, which
            # serialises parallel sweeps. A key whose caller then rolls back is harmless: it
            # holds no rows, and the purge destroys it on its day like any other.
            bind = session.get_bind()
            with Session(getattr(bind, "engine", bind)) as own, own.begin():
                own.execute(ins, rows)
        else:
            # SQLite has one writer at a time: a second connection would wait for this one.
            session.execute(ins, rows)
        found.update({(c, d): (i, w, m) for c, d, i, w, m in fetch(missing)})
    for b in wanted:
        key_id, wrapped, wrapped_by = found[b]
        if wrapped is None:
            out[b] = None
            continue
        out[b] = (
            key_id,
            _unwrap_cached(session, "data key", key_id, wrapped, wrapped_by, master),
        )
    return out


def get_key(session: Session, key_id: int, *, master: bytes | None = None) -> bytes:
    """Unwrap data key ``key_id``; KeyDestroyed once crypto-shredded."""
    master = master if master is not None else _master()
    row = session.execute(
        select(DataKey.wrapped_key, DataKey.master_key_id).where(DataKey.id == key_id)
    ).first()
    if row is None:
        raise KeyUnavailable(f"data key {key_id} does not exist")
    wrapped, wrapped_by = row
    if wrapped is None:
        raise KeyDestroyed(f"data key {key_id} was destroyed")
    return _unwrap_cached(session, "data key", key_id, wrapped, wrapped_by, master)


def destroy_keys(session: Session, key_ids: Iterable[int]) -> int:
    """Crypto-shred: NULL the wrapped copies and stamp ``destroyed_at``; returns keys destroyed.

    Already-destroyed keys are skipped (idempotent re-runs). The UPDATE locks the rows, waiting
    for any sweep still archiving into them (it holds ``FOR SHARE``); delete the bucket's
    records in the same transaction *after* this call so no late row survives its key.
    """
    ids = sorted({int(k) for k in key_ids})
    if not ids:
        return 0
    done = 0
    for i in range(0, len(ids), 1000):
        chunk = ids[i : i + 1000]
        res = cast(
            "CursorResult[Any]",
            session.execute(
                update(DataKey)
                .where(DataKey.id.in_(chunk), DataKey.wrapped_key.is_not(None))
                .values(wrapped_key=None, destroyed_at=utcnow())
                .execution_options(synchronize_session=False)
            ),
        )
        done += res.rowcount or 0
    with _cache_lock:
        for ck in [ck for ck in _cache if ck[1] == "data key" and ck[2] in set(ids)]:
            _cache.pop(ck, None)
    return done


# -- pseudonym key -------------------------------------------------------------------------------


def ref_key(session: Session, *, master: bytes | None = None) -> bytes:
    """The ledger pseudonym key (for ``crypto.subject_ref`` / ``crypto.file_ref``).

    Created on first use as the HKDF sub-key of the then-current master key and stored wrapped;
    it survives master-key rotation, so a member's pseudonym stays the same for good.
    """
    master = master if master is not None else _master()
    key = _secret(session, REF_KEY_NAME, master, lambda: crypto.derive_ref_key(master))
    assert key is not None
    return key


def identity_key(
    session: Session, *, create: bool = True, master: bytes | None = None
) -> bytes | None:
    """The key of former members' identity hashes: random, stored wrapped like the pseudonym
    key (so master-key rotation re-wraps it and the hashes stay valid). ``create=False``: None
    while no identity was ever recorded (a lookup must not create keys)."""
    master = master if master is not None else _master()
    return _secret(session, IDENTITY_KEY_NAME, master, crypto.new_data_key if create else None)


def _secret(session: Session, name: str, master: bytes, make: Any) -> bytes | None:
    stmt = select(ArchiveSecret.wrapped_key, ArchiveSecret.master_key_id).where(
        ArchiveSecret.name == name
    )
    row = session.execute(stmt).first()
    if row is None:
        if make is None:
            return None
        session.execute(
            _insert(session)(ArchiveSecret)
            .values(
                name=name,
                wrapped_key=crypto.wrap_key(master, make()),
                master_key_id=crypto.master_key_id(master),
                created_at=utcnow(),
            )
            .on_conflict_do_nothing(index_elements=["name"])
        )
        row = session.execute(stmt).first()
        assert row is not None
    wrapped, wrapped_by = row
    return _unwrap_cached(session, "secret", name, wrapped, wrapped_by, master)


def subject_ref(session: Session, member_id: int | str) -> str:
    """Convenience: ``crypto.subject_ref(ref_key(session), member_id)``."""
    return crypto.subject_ref(ref_key(session), member_id)


# -- reading archived rows -----------------------------------------------------------------------


def decrypt_archived(
    session: Session, record: ArchivedRecord, *, master: bytes | None = None
) -> bytes:
    """Plaintext of one archived row. For tests and authorised exports written in code only.

    Raises KeyDestroyed after the bucket was purged: that is crypto-shredding working.
    """
    dk = get_key(session, record.key_id, master=master)
    aad = crypto.record_aad(record.source_table, record.source_pk, record.category)
    try:
        return crypto.decrypt_record(dk, record.nonce, record.ciphertext, aad)
    except crypto.CryptoError as exc:
        raise KeyUnavailable(
            f"archived record {record.source_table}/{record.category} key {record.key_id}: {exc}"
        ) from None


# -- rotation ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RotationResult:
    new_key_id: str
    rewrapped: int
    already_new: int
    destroyed: int


def key_census(session: Session) -> dict[str, int]:
    """Live wrapped keys (data keys and secrets) per master key id."""
    out: dict[str, int] = {}
    for model in (DataKey, ArchiveSecret):
        rows = session.execute(
            select(model.master_key_id, func.count())
            .where(model.wrapped_key.is_not(None))
            .group_by(model.master_key_id)
        ).all()
        for mid, n in rows:
            out[mid] = out.get(mid, 0) + n
    return out


def mismatch_advice(census: dict[str, int], configured: str) -> str | None:
    """What to do when live keys (``key_census``) are not all under the ``configured`` key id;
    None when they are (or there are none)."""
    others = {mid: n for mid, n in census.items() if mid != configured and n}
    if not others:
        return None
    if not census.get(configured):
        # Nothing at all under the configured key: this is not a rotation in progress, the
        # process simply has another install's (or a freshly made) key.
        listed = ", ".join(sorted(others))
        return (
            f"this install's keys are wrapped under another master key ({listed}): point "
            "LIFECYCLE_MASTER_KEY_FILE (or LIFECYCLE_MASTER_KEY) at the original key file, "
            "the one with that id (after a finished `keys rotate`, the new key)"
        )
    left = sum(others.values())
    return (
        f"a master-key rotation is unfinished: {left} live keys are still under "
        f"{', '.join(sorted(others))}: run `lifecycle keys rotate --old-key-file OLD "
        "--new-key-file CONFIGURED` with the old key file"
    )


def rotate_master(
    old_master: bytes,
    new_master: bytes,
    *,
    which: str = "archive",
    batch_size: int = 500,
    progress: object = None,
) -> RotationResult:
    """Re-wrap every live data key (and the pseudonym key) from ``old_master`` to ``new_master``.

    Runs in batches, each its own transaction, so it can be interrupted and run again: rows
    already wrapped under the new key are skipped, and each UPDATE is conditional on the row
    still being wrapped under the old key, so a concurrent destroy or a second rotation never
    gets overwritten. Refused (nothing changed) if any live key is wrapped under a third key.
    Data keys themselves do not change, so no archived row is re-encrypted.
    """

    old_id, new_id = crypto.master_key_id(old_master), crypto.master_key_id(new_master)
    with db_session(which) as s:  # type: ignore[arg-type]
        census = key_census(s)
        destroyed = s.execute(
            select(func.count()).select_from(DataKey).where(DataKey.wrapped_key.is_(None))
        ).scalar_one()
    strangers = {mid: n for mid, n in census.items() if mid not in (old_id, new_id)}
    if strangers:
        desc = ", ".join(f"{n} under {mid}" for mid, n in sorted(strangers.items()))
        raise UserError(
            f"refusing to rotate: live keys are wrapped under neither the old master key "
            f"{old_id} nor the new one {new_id} ({desc}); pass that key as the old key"
        )
    already = census.get(new_id, 0) if old_id != new_id else census.get(old_id, 0)
    rewrapped = 0
    if old_id != new_id:
        rewrapped += _rotate_table(
            which, DataKey, DataKey.id, old_master, new_master, batch_size, progress
        )
        rewrapped += _rotate_table(
            which, ArchiveSecret, ArchiveSecret.name, old_master, new_master, batch_size, progress
        )
    clear_cache()
    return RotationResult(new_id, rewrapped, already, destroyed)


def _rotate_table(  # type: ignore[no-untyped-def]
    which: str, model, pk, old_master: bytes, new_master: bytes, batch_size: int, progress
) -> int:

    old_id, new_id = crypto.master_key_id(old_master), crypto.master_key_id(new_master)
    done = 0
    last = None
    while True:
        with db_session(which) as s:  # type: ignore[arg-type]
            stmt = (
                select(pk, model.wrapped_key)
                .where(model.master_key_id == old_id, model.wrapped_key.is_not(None))
                .order_by(pk)
                .limit(batch_size)
            )
            if last is not None:
                stmt = stmt.where(pk > last)
            rows: Sequence[Any] = s.execute(stmt).all()
            if not rows:
                return done
            for ident, wrapped in rows:
                try:
                    dk = crypto.unwrap_key(old_master, wrapped)
                except crypto.CryptoError as exc:
                    raise LifecycleError(
                        f"key {ident}: {exc}; nothing in this batch changed"
                    ) from None
                res = cast(
                    "CursorResult[Any]",
                    s.execute(
                        update(model)
                        .where(
                            pk == ident,
                            model.master_key_id == old_id,
                            model.wrapped_key.is_not(None),
                        )
                        .values(
                            wrapped_key=crypto.wrap_key(new_master, dk),
                            master_key_id=new_id,
                            **({"rotated_at": utcnow()} if model is ArchiveSecret else {}),
                        )
                        .execution_options(synchronize_session=False)
                    ),
                )
                done += res.rowcount or 0
            last = rows[-1][0]
        if callable(progress):
            progress(done)


__all__ = [
    "KeyDestroyed",
    "KeyUnavailable",
    "RotationResult",
    "clear_cache",
    "decrypt_archived",
    "destroy_keys",
    "get_key",
    "get_or_create_bucket_key",
    "get_or_create_bucket_keys",
    "identity_key",
    "key_census",
    "ref_key",
    "rotate_master",
    "subject_ref",
]
