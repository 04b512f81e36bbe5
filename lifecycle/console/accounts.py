"""Console accounts: created and changed by `lifecycle console user ...`, checked at login.

Passwords are hashed with Argon2id (argon2-cffi's defaults, RFC 9106's second recommended
option); the TOTP secret (RFC 6238, 30-second steps, 6 digits, as authenticator apps expect)
is stored encrypted under a sub-key of the master key, so a copy of the primary database alone
gives no second factor. A code is accepted once: the step it was used in is recorded.
"""

from __future__ import annotations

import base64
import contextlib
import re
import time
from dataclasses import dataclass

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import select
from sqlalchemy.orm import Session

from lifecycle.core.errors import UserError
from lifecycle.core.settings import get_settings
from lifecycle.vault.crypto import derive_key
from models.base import utcnow
from models.console import ConsoleAccount, ConsoleRole

_HASHER = PasswordHasher()
USERNAME = re.compile(r"^[a-z][a-z0-9._-]{1,63}$")
MIN_PASSWORD = 12
ISSUER = "pipa-lifecycle"
# Codes one step either side of now are accepted: a phone's clock is rarely exact.
TOTP_WINDOW = 1


@dataclass(frozen=True)
class Who:
    """The logged-in person, as the pages and the logs name them."""

    id: int
    username: str
    display_name: str
    role: str
    epoch: int

    @property
    def operator(self) -> str:
        """The name written into ledger and access-log entries (the CLI's --operator)."""
        return f"console:{self.username}"


def _fernet() -> Fernet:
    key = derive_key(get_settings().master_key_bytes(), b"console-totp-secret")
    return Fernet(base64.urlsafe_b64encode(key))


def check_username(name: str) -> str:
    if not USERNAME.match(name or ""):
        raise UserError(
            "USERNAME must be 2-64 characters: lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter"
        )
    return name


def check_role(role: str) -> str:
    roles = {r.value for r in ConsoleRole}
    if role not in roles:
        raise UserError(f"--role must be one of {', '.join(sorted(roles))}")
    return role


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD or len(password) > 1024:
        raise UserError(f"the password must be {MIN_PASSWORD}-1024 characters")
    return password


def get(s: Session, username: str) -> ConsoleAccount:
    acc = s.scalar(select(ConsoleAccount).where(ConsoleAccount.username == username))
    if acc is None:
        raise UserError(f"no console account {username!r}")
    return acc


def add(s: Session, username: str, display_name: str, role: str, password: str) -> ConsoleAccount:
    """A new active account without a TOTP secret yet (login needs one: `user totp`)."""
    check_username(username)
    check_role(role)
    check_password(password)
    display = " ".join((display_name or "").split())
    if not display or len(display) > 100:
        raise UserError("--name must be 1-100 characters")
    if s.scalar(select(ConsoleAccount.id).where(ConsoleAccount.username == username)):
        raise UserError(f"console account {username!r} already exists")
    acc = ConsoleAccount(
        username=username,
        display_name=display,
        role=role,
        password_hash=_HASHER.hash(password),
        active=True,
        session_epoch=0,
    )
    s.add(acc)
    s.flush()
    return acc


def set_password(s: Session, username: str, password: str) -> None:
    acc = get(s, username)
    acc.password_hash = _HASHER.hash(check_password(password))
    acc.session_epoch += 1


def set_active(s: Session, username: str, active: bool) -> None:
    acc = get(s, username)
    acc.active = active
    acc.session_epoch += 1


def new_totp(s: Session, username: str) -> str:
    """A new TOTP secret for the account (the old one stops working); returns its otpauth://
    URI for the authenticator app. Open sessions end."""
    acc = get(s, username)
    secret = pyotp.random_base32()
    acc.totp_secret = _fernet().encrypt(secret.encode()).decode()
    acc.totp_last_step = None
    acc.session_epoch += 1
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=ISSUER)


def _totp_secret(acc: ConsoleAccount) -> str | None:
    if not acc.totp_secret:
        return None
    try:
        return _fernet().decrypt(acc.totp_secret.encode()).decode()
    except InvalidToken:
        return None  # another install's master key: as if no second factor were set


def _check_code(acc: ConsoleAccount, code: str, now: float) -> bool:
    secret = _totp_secret(acc)
    code = (code or "").strip()
    if secret is None or not (code.isdigit() and len(code) == 6):
        return False
    totp = pyotp.TOTP(secret)
    step = int(now) // totp.interval
    for candidate in range(step - TOTP_WINDOW, step + TOTP_WINDOW + 1):
        if acc.totp_last_step is not None and candidate <= acc.totp_last_step:
            continue  # used already (or older than a used one): replay
        if pyotp.utils.strings_equal(totp.generate_otp(candidate), code):
            acc.totp_last_step = candidate
            return True
    return False


def authenticate(s: Session, username: str, password: str, code: str) -> Who | None:
    """The account if the password and the TOTP code are right, else None (the same answer
    for an unknown name, a wrong password, a wrong code or an inactive account)."""
    acc = s.scalar(
        select(ConsoleAccount).where(ConsoleAccount.username == username).with_for_update()
    )
    if acc is None:
        # Spend the time a real check takes, so the answer's delay tells no names.
        with contextlib.suppress(VerificationError, InvalidHashError):
            _HASHER.verify(_DUMMY_HASH, password)
        return None
    try:
        _HASHER.verify(acc.password_hash, password)
    except (VerificationError, InvalidHashError):
        return None
    if not acc.active or not _check_code(acc, code, time.time()):
        return None
    if _HASHER.check_needs_rehash(acc.password_hash):
        acc.password_hash = _HASHER.hash(password)
    acc.last_login_at = utcnow()
    return who_of(acc)


def who_of(acc: ConsoleAccount) -> Who:
    return Who(acc.id, acc.username, acc.display_name, acc.role, acc.session_epoch)


def current(s: Session, account_id: int, epoch: int) -> Who | None:
    """The session's account if it is still active and nothing ended its sessions since."""
    acc = s.get(ConsoleAccount, account_id)
    if acc is None or not acc.active or acc.session_epoch != epoch:
        return None
    return who_of(acc)


_DUMMY_HASH = _HASHER.hash("not a password of anyone")
