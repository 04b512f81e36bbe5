"""Registered operators (처리자): who the access log names.

An operator is an OS account (the login the operating system authenticated, or later a web
console's login) with the name the log records for it. While nobody is registered, a command
records ``--operator`` as given or the OS user (an install's first steps, and every install
before this existed); the OS user is in every entry's details either way. Once one operator is
registered, every command resolves to the registered operator of the OS account running it:
an account that is not registered (or was disabled) is refused before it does anything, and
``--operator`` may only repeat that operator's own name or login. Disabling keeps the row, so
old entries keep a name the register explains.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from lifecycle.core.errors import UserError
from models.base import utcnow
from models.guards import Operator

MAX_LOGIN = 64
MAX_NAME = 100


@dataclass(frozen=True)
class OperatorInfo:
    id: int
    login: str
    name: str
    created_at: datetime
    disabled_at: datetime | None

    @property
    def recorded(self) -> str:
        """What the access log's ``operator`` says: the name and the account it belongs to."""
        return f"{self.name} [{self.login}]"


def _info(o: Operator) -> OperatorInfo:
    return OperatorInfo(int(o.id), o.login, o.name, o.created_at, o.disabled_at)


def _clean(text: str, what: str, limit: int) -> str:
    value = " ".join((text or "").split())
    if not value or len(value) > limit or not value.isprintable():
        raise UserError(f"{what} must be a short printable text (1-{limit} characters)")
    return value


def add(s: Session, login: str, name: str) -> OperatorInfo:
    login, name = _clean(login, "the login", MAX_LOGIN), _clean(name, "--name", MAX_NAME)
    old = s.scalar(select(Operator).where(Operator.login == login))
    if old is not None:
        if old.disabled_at is None:
            raise UserError(f"operator {login!r} is already registered")
        old.name, old.disabled_at = name, None  # re-enabled under the name given now
        s.flush()
        return _info(old)
    o = Operator(login=login, name=name, created_at=utcnow())
    s.add(o)
    s.flush()
    return _info(o)


def disable(s: Session, login: str) -> OperatorInfo:
    o = s.scalar(select(Operator).where(Operator.login == login.strip()))
    if o is None or o.disabled_at is not None:
        raise UserError(f"no active operator {login.strip()!r}")
    o.disabled_at = utcnow()
    s.flush()
    return _info(o)


def listing(s: Session) -> list[OperatorInfo]:
    return [_info(o) for o in s.scalars(select(Operator).order_by(Operator.login))]


def resolve(s: Session, os_login: str, claimed: str) -> str | None:
    """The name to record for ``os_login`` claiming ``claimed`` (may be empty); None while no
    operator is registered at all. A one-line UserError when the register refuses."""
    every = listing(s)
    if not every:
        return None
    mine = next((o for o in every if o.login == os_login and o.disabled_at is None), None)
    if mine is None:
        raise UserError(
            f"OS account {os_login!r} is not a registered operator; the privacy officer "
            f"registers it with `lifecycle operators add {os_login} --name NAME`"
        )
    if claimed and claimed not in (mine.name, mine.login, mine.recorded):
        raise UserError(
            f"--operator {claimed!r} is not the operator registered for OS account {os_login!r}"
        )
    return mine.recorded
