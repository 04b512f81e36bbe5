"""The privacy office's console accounts (lifecycle/console): who may log in, with which role.

No member data here: the staff's own login name, display name, role, an Argon2id password hash
and the TOTP secret encrypted under a key derived from the master key. ``session_epoch`` moves
on every password or TOTP change and on deactivation, which ends the account's open sessions.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Boolean, DateTime, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import BigId, PrimaryBase, utcnow


class ConsoleRole(enum.StrEnum):
    OFFICER = "officer"  # 개인정보 보호책임자 (제31조)
    HANDLER = "handler"  # 개인정보취급자 (제28조)
    AUDITOR = "auditor"  # 감사: reads, changes nothing


class ConsoleAccount(PrimaryBase):
    __tablename__ = "lifecycle_console_accounts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(255))
    # Fernet token of the base32 TOTP secret; NULL until `lifecycle console user totp`.
    totp_secret: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The last TOTP time step accepted: a code is good once (RFC 6238 §5.2).
    totp_last_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    session_epoch: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
