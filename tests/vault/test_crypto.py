"""Envelope encryption, bucket keys and crypto-shredding (pure, and on the real archive DB)."""

from __future__ import annotations

import base64
import threading
from datetime import date

import pytest
from sqlalchemy import func, select

from lifecycle.core.db import session
from lifecycle.core.settings import get_settings
from lifecycle.vault import crypto, keystore
from models.archive import ArchivedRecord, DataKey
from tests.helpers import migrate_embedded

MASTER = bytes(range(32))
OTHER = bytes(range(1, 33))

# -- pure ----------------------------------------------------------------------------------------


def test_master_key_id_is_a_stable_short_fingerprint() -> None:
    kid = crypto.master_key_id(MASTER)
    assert kid == crypto.master_key_id(MASTER)
    assert len(kid) == 16 and int(kid, 16) >= 0
    assert kid != crypto.master_key_id(OTHER)
    assert MASTER.hex()[:16] != kid


@pytest.mark.parametrize("bad", [b"", b"x" * 16, b"x" * 31, b"x" * 33, "x" * 32])
def test_bad_key_lengths_are_refused(bad: object) -> None:
    with pytest.raises(crypto.CryptoError):
        crypto.master_key_id(bad)  # type: ignore[arg-type]
    with pytest.raises(crypto.CryptoError):
        crypto.RecordCipher(bad)  # type: ignore[arg-type]


def test_wrap_round_trip_and_wrong_master_fails() -> None:
    dk = crypto.new_data_key()
    assert len(dk) == 32 and dk != crypto.new_data_key()
    wrapped = crypto.wrap_key(MASTER, dk)
    assert dk not in wrapped
    assert crypto.unwrap_key(MASTER, wrapped) == dk
    with pytest.raises(crypto.CryptoError, match="does not unwrap"):
        crypto.unwrap_key(OTHER, wrapped)
    tampered = bytes([wrapped[0] ^ 1]) + wrapped[1:]
    with pytest.raises(crypto.CryptoError):
        crypto.unwrap_key(MASTER, tampered)
    with pytest.raises(crypto.CryptoError, match="destroyed"):
        crypto.unwrap_key(MASTER, None)


def test_record_round_trip_and_aad_binds_the_row() -> None:
    dk = crypto.new_data_key()
    aad = crypto.record_aad("payments", "17", "payment")
    nonce, ct = crypto.encrypt_record(dk, "홍길동 결제 39000".encode(), aad)
    assert len(nonce) == crypto.NONCE_BYTES
    assert "홍길동".encode() not in ct
    assert crypto.decrypt_record(dk, nonce, ct, aad) == "홍길동 결제 39000".encode()
    for other in (
        crypto.record_aad("payments", "18", "payment"),  # another row
        crypto.record_aad("tax_invoices", "17", "payment"),  # another table
        crypto.record_aad("payments", "17", "tax"),  # another category
    ):
        with pytest.raises(crypto.CryptoError):
            crypto.decrypt_record(dk, nonce, ct, other)
    with pytest.raises(crypto.CryptoError):
        crypto.decrypt_record(crypto.new_data_key(), nonce, ct, aad)
    flipped = ct[:-1] + bytes([ct[-1] ^ 0x80])
    with pytest.raises(crypto.CryptoError):
        crypto.decrypt_record(dk, nonce, flipped, aad)


def test_aad_encoding_is_unambiguous() -> None:
    assert crypto.record_aad("ab", "c", "d") != crypto.record_aad("a", "bc", "d")
    assert crypto.record_aad("a", "b", "cd") != crypto.record_aad("a", "bc", "d")


def test_batch_cipher_round_trip_with_distinct_nonces() -> None:
    cipher = crypto.RecordCipher(crypto.new_data_key())
    items = [(f"row {i}".encode(), crypto.record_aad("t", str(i), "c")) for i in range(500)]
    out = cipher.encrypt_many(items)
    assert len({n for n, _ in out}) == 500
    plain = cipher.decrypt_many((n, c, aad) for (n, c), (_, aad) in zip(out, items, strict=True))
    assert plain == [pt for pt, _ in items]
    assert cipher.encrypt_many([]) == []


def test_pseudonyms_are_keyed_and_distinct() -> None:
    k1, k2 = crypto.derive_ref_key(MASTER), crypto.derive_ref_key(OTHER)
    assert k1 != MASTER and len(k1) == 32
    ref = crypto.subject_ref(k1, 12)
    assert len(ref) == 64 and int(ref, 16) >= 0
    assert ref == crypto.subject_ref(k1, "12")
    assert ref != crypto.subject_ref(k1, 13)
    assert ref != crypto.subject_ref(k2, 12)
    assert crypto.file_ref(k1, "12") != ref
    assert crypto.file_ref(k1, "/a/b.pdf", host="h1") != crypto.file_ref(k1, "/a/b.pdf", "h2")
    assert len(crypto.file_ref(k1, b"/a/\xff.pdf")) == 64


# -- keystore on PostgreSQL ----------------------------------------------------------------------


def _archive_row(s, table: str, pk: str, category: str, retain: date, pt: bytes) -> ArchivedRecord:  # type: ignore[no-untyped-def]
    key_id, dk = keystore.get_or_create_bucket_key(s, category, retain)
    nonce, ct = crypto.RecordCipher(dk).encrypt(pt, crypto.record_aad(table, pk, category))
    rec = ArchivedRecord(
        source_table=table,
        source_pk=pk,
        subject_ref="0" * 64,
        category=category,
        retain_until=retain,
        key_id=key_id,
        nonce=nonce,
        ciphertext=ct,
    )
    s.add(rec)
    s.flush()
    return rec


def test_bucket_key_is_created_once_and_reused(lifecycle_env) -> None:  # type: ignore[no-untyped-def]
    d = date(2031, 3, 1)
    with session("archive") as s:
        a = keystore.get_or_create_bucket_key(s, "payment", d)
    keystore.clear_cache()
    with session("archive") as s:
        b = keystore.get_or_create_bucket_key(s, "payment", d)
        c = keystore.get_or_create_bucket_key(s, "payment", date(2031, 3, 2))
        d2 = keystore.get_or_create_bucket_key(s, "tax", d)
        row = s.execute(select(DataKey).where(DataKey.id == a[0])).scalar_one()
    assert a == b
    assert len({a[0], c[0], d2[0]}) == 3 and len({a[1], c[1], d2[1]}) == 3
    master = get_settings().master_key_bytes()
    assert row.master_key_id == crypto.master_key_id(master)
    assert a[1] not in row.wrapped_key
    assert crypto.unwrap_key(master, row.wrapped_key) == a[1]


def test_concurrent_bucket_creation_yields_one_key(lifecycle_env) -> None:  # type: ignore[no-untyped-def]
    results: list[tuple[int, bytes]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def worker() -> None:
        try:
            barrier.wait()
            with session("archive") as s:
                results.append(keystore.get_or_create_bucket_key(s, "contract", date(2030, 1, 1)))
        except BaseException as exc:
            errors.append(exc)

    keystore.clear_cache()
    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert len(set(results)) == 1
    with session("archive") as s:
        assert s.execute(select(func.count()).select_from(DataKey)).scalar_one() == 1


def _ident(rec: ArchivedRecord) -> tuple[str, str, str]:
    return (rec.source_table, rec.source_pk, rec.category)


def test_archived_row_round_trip_and_swap_detection(lifecycle_env) -> None:  # type: ignore[no-untyped-def]
    d = date(2031, 1, 1)
    with session("archive") as s:
        r1 = _archive_row(s, "payments", "1", "payment", d, b'{"amount": 39000}')
        r2 = _archive_row(s, "payments", "2", "payment", d, b'{"amount": 12000}')
        ids = (_ident(r1), _ident(r2))
    with session("archive") as s:
        r1, r2 = (s.get(ArchivedRecord, i) for i in ids)
        assert keystore.decrypt_archived(s, r1) == b'{"amount": 39000}'
        assert keystore.decrypt_archived(s, r2) == b'{"amount": 12000}'
        # Someone with DB access swaps the two ciphertexts: both rows refuse to decrypt.
        r1.nonce, r2.nonce = r2.nonce, r1.nonce
        r1.ciphertext, r2.ciphertext = r2.ciphertext, r1.ciphertext
        with pytest.raises(keystore.KeyUnavailable, match="does not decrypt"):
            keystore.decrypt_archived(s, r1)
        s.rollback()


def test_destroyed_key_makes_rows_unreadable(lifecycle_env) -> None:  # type: ignore[no-untyped-def]
    d = date(2026, 1, 1)
    with session("archive") as s:
        rec = _archive_row(s, "access_logs", "9", "access_log", d, b"ip=10.0.0.9")
        keep = _archive_row(s, "payments", "9", "payment", d, b"amount=1")
        rec_id, keep_id, key_id = _ident(rec), _ident(keep), rec.key_id
        assert keystore.decrypt_archived(s, rec) == b"ip=10.0.0.9"  # warms the cache
    with session("archive") as s:
        assert keystore.destroy_keys(s, [key_id]) == 1
    with session("archive") as s:
        assert keystore.destroy_keys(s, [key_id]) == 0  # re-run: nothing left to destroy
        row = s.get(DataKey, key_id)
        assert row is not None and row.wrapped_key is None and row.destroyed_at is not None
        with pytest.raises(keystore.KeyDestroyed):
            keystore.decrypt_archived(s, s.get(ArchivedRecord, rec_id))
        # Only that bucket is gone.
        assert keystore.decrypt_archived(s, s.get(ArchivedRecord, keep_id)) == b"amount=1"
        # Archiving into a purged bucket is refused rather than silently unreadable.
        with pytest.raises(keystore.KeyDestroyed):
            keystore.get_or_create_bucket_key(s, "access_log", d)


def test_key_wrapped_under_another_master_is_a_clear_error(lifecycle_env) -> None:  # type: ignore[no-untyped-def]
    with session("archive") as s:
        key_id, _ = keystore.get_or_create_bucket_key(s, "tax", date(2030, 5, 5), master=OTHER)
    keystore.clear_cache()
    with session("archive") as s, pytest.raises(keystore.KeyUnavailable, match="keys rotate"):
        keystore.get_key(s, key_id)


def test_ref_key_is_stored_once(lifecycle_env) -> None:  # type: ignore[no-untyped-def]
    with session("archive") as s:
        ref = keystore.subject_ref(s, 12)
    keystore.clear_cache()
    with session("archive") as s:
        assert keystore.subject_ref(s, 12) == ref
        assert keystore.ref_key(s) == crypto.derive_ref_key(get_settings().master_key_bytes())


def test_keystore_on_sqlite(embedded_env) -> None:  # type: ignore[no-untyped-def]
    migrate_embedded(embedded_env)
    with session("archive") as s:
        rec = _archive_row(s, "payments", "5", "payment", date(2031, 1, 1), b"x")
        first = keystore.get_or_create_bucket_key(s, "payment", date(2031, 1, 1))
        assert keystore.decrypt_archived(s, rec) == b"x"
    with session("archive") as s:
        assert keystore.get_or_create_bucket_key(s, "payment", date(2031, 1, 1)) == first
        assert keystore.destroy_keys(s, [first[0]]) == 1
    with session("archive") as s, pytest.raises(keystore.KeyDestroyed):
        keystore.get_key(s, first[0])
    # The embedded default created its own master key file, mode 0600.
    key_file = embedded_env.var_dir / "master.key"
    assert len(base64.b64decode(key_file.read_bytes())) == 32
    assert key_file.stat().st_mode & 0o777 == 0o600
