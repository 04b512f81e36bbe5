"""Envelope encryption for the archive and keyed pseudonyms for the ledger (pure, no DB).

Layout:

- **Master key** (32 bytes, ``settings.master_key_bytes()``): never stored in a database. It only
  wraps data keys (and the pseudonym key); ``master_key_id`` is its public fingerprint.
- **Data keys** (32 bytes, AES-256-GCM): one per retention bucket (category × retain_until day),
  stored *wrapped* in ``archive_data_keys``. Destroying the wrapped copy crypto-shreds every row
  of that bucket, including copies in backups.
- **Records**: AES-256-GCM with a random 96-bit nonce; the AAD binds source table, primary key
  and category, so a ciphertext copied onto another row (or another category) fails to decrypt.

Key wrapping uses AES key wrap with padding (RFC 5649, NIST SP 800-38F) rather than AES-GCM: it
is the primitive built for wrapping keys, it is deterministic so there is no nonce to generate,
store or ever reuse across millions of re-wraps during rotation, and it authenticates the
wrapped key (a wrong master key is an error, never garbage).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable, Sequence
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap_with_padding,
    aes_key_wrap_with_padding,
)

KEY_BYTES = 32
NONCE_BYTES = 12
# Bumped if the AAD layout ever changes, so old and new records can never be confused.
_AAD_VERSION = b"lc-rec-v1"


class CryptoError(Exception):
    """Decryption or unwrap failed: wrong key, destroyed key, or tampered data.

    Messages name no data, only what failed.
    """


def _check_key(key: bytes, what: str) -> None:
    if not isinstance(key, bytes | bytearray) or len(key) != KEY_BYTES:
        raise CryptoError(f"{what} must be {KEY_BYTES} bytes")


# -- master key ----------------------------------------------------------------------------------


def master_key_id(master: bytes) -> str:
    """A short public fingerprint of the master key (16 hex chars); reveals nothing about it."""
    _check_key(master, "master key")
    return hmac.new(master, b"key-id", hashlib.sha256).hexdigest()[:16]


def derive_key(master: bytes, info: bytes, length: int = KEY_BYTES) -> bytes:
    """HKDF-SHA256 sub-key of the master key for one purpose (``info`` names the purpose)."""
    _check_key(master, "master key")
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(master)


# -- data keys -----------------------------------------------------------------------------------


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=KEY_BYTES * 8)


def wrap_key(master: bytes, dk: bytes) -> bytes:
    _check_key(master, "master key")
    _check_key(dk, "data key")
    return aes_key_wrap_with_padding(master, dk)


def unwrap_key(master: bytes, wrapped: bytes | None) -> bytes:
    """Unwrap a data key; CryptoError for a wrong master key, tampering or a destroyed key."""
    _check_key(master, "master key")
    if wrapped is None:
        raise CryptoError("data key was destroyed")
    try:
        dk = aes_key_unwrap_with_padding(master, bytes(wrapped))
    except InvalidUnwrap:
        raise CryptoError("data key does not unwrap under this master key") from None
    if len(dk) != KEY_BYTES:
        raise CryptoError("unwrapped data key has the wrong length")
    return dk


# -- records -------------------------------------------------------------------------------------


def record_aad(source_table: str, source_pk: str, category: str) -> bytes:
    """Associated data binding a ciphertext to its row: table, primary key and category.

    Fields are length-prefixed so no choice of values can make two different triples encode
    the same bytes.
    """
    parts = [_AAD_VERSION]
    for value in (source_table, str(source_pk), category):
        raw = value.encode()
        parts.append(len(raw).to_bytes(4, "big") + raw)
    return b"".join(parts)


class RecordCipher:
    """AES-256-GCM under one data key; build once per key and reuse for a whole batch.

    Constructing ``AESGCM`` expands the key schedule, so the sweep keeps one instance per bucket
    instead of one per row.
    """

    __slots__ = ("_aead",)

    def __init__(self, dk: bytes) -> None:
        _check_key(dk, "data key")
        self._aead = AESGCM(bytes(dk))

    def encrypt(self, plaintext: bytes, aad: bytes) -> tuple[bytes, bytes]:
        nonce = os.urandom(NONCE_BYTES)
        return nonce, self._aead.encrypt(nonce, plaintext, aad)

    def encrypt_many(self, items: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """Encrypt ``(plaintext, aad)`` pairs; nonces come from one urandom call for the batch."""
        n = len(items)
        pool = os.urandom(NONCE_BYTES * n)
        enc = self._aead.encrypt
        out: list[tuple[bytes, bytes]] = []
        append = out.append
        for i, (pt, aad) in enumerate(items):
            nonce = pool[i * NONCE_BYTES : (i + 1) * NONCE_BYTES]
            append((nonce, enc(nonce, pt, aad)))
        return out

    def decrypt(self, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        try:
            return self._aead.decrypt(bytes(nonce), bytes(ciphertext), aad)
        except InvalidTag:
            raise CryptoError(
                "record does not decrypt: wrong key, or ciphertext/row identity was altered"
            ) from None

    def decrypt_many(self, items: Iterable[tuple[bytes, bytes, bytes]]) -> list[bytes]:
        return [self.decrypt(n, c, a) for n, c, a in items]


def encrypt_record(dk: bytes, plaintext: bytes, aad: bytes) -> tuple[bytes, bytes]:
    """One-off encryption; returns ``(nonce, ciphertext_with_tag)``. Batches use RecordCipher."""
    return RecordCipher(dk).encrypt(plaintext, aad)


def decrypt_record(dk: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    return RecordCipher(dk).decrypt(nonce, ciphertext, aad)


# -- pseudonyms ----------------------------------------------------------------------------------

REF_KEY_INFO = b"ledger-subject-ref"


def derive_ref_key(master: bytes) -> bytes:
    """HKDF sub-key of a master key for pseudonyms (info ``b"ledger-subject-ref"``).

    The keystore seeds the archive's pseudonym key with this once and then keeps it, wrapped,
    in the archive DB (``keystore.ref_key``), so that rotating the master key does not change
    every member's pseudonym.
    """
    return derive_key(master, REF_KEY_INFO)


@lru_cache(maxsize=16)
def _hmac_base(key: bytes) -> hmac.HMAC:
    # Keyed once; copies skip re-deriving the inner/outer pads for each of a million members.
    return hmac.new(key, digestmod=hashlib.sha256)


def _ref(key: bytes, msg: bytes) -> str:
    _check_key(key, "pseudonym key")
    h = _hmac_base(bytes(key)).copy()
    h.update(msg)
    return h.hexdigest()


def subject_ref(key: bytes, member_id: int | str) -> str:
    """Keyed pseudonym of a member (HMAC-SHA256, 64 hex chars).

    ``key`` is the archive's pseudonym key, ``keystore.ref_key(session)``: not the master key,
    so pseudonyms survive master-key rotation. Without the key nobody can test a guess ("is
    this member 12?"), unlike a plain hash of a small integer.
    """
    return _ref(key, b"member\x00" + str(member_id).encode())


def file_ref(key: bytes, path: str | bytes, host: str = "") -> str:
    """Keyed pseudonym of a managed file (host + path): links entries without naming the file.

    ``key`` as for ``subject_ref``.
    """
    return _ref(key, b"file\x00" + host.encode() + b"\x00" + os.fsencode(path))


__all__ = [
    "KEY_BYTES",
    "NONCE_BYTES",
    "CryptoError",
    "RecordCipher",
    "decrypt_record",
    "derive_key",
    "derive_ref_key",
    "encrypt_record",
    "file_ref",
    "master_key_id",
    "new_data_key",
    "record_aad",
    "subject_ref",
    "unwrap_key",
    "wrap_key",
]
