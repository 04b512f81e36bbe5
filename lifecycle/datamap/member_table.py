"""The website's member table as the data map describes it: what corrections, provisions and
notices may touch, and how to coerce a value to a column's real type.

The map names the subject table, its key and status column; the real column types come from
reflecting the database (the website's schema is not ours). Values are never echoed in errors:
messages name the field and the expected type only.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from dataclasses import field as dc_field
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Column, Engine, MetaData, Table, or_, select
from sqlalchemy import types as sqltypes
from sqlalchemy.orm import Session

from lifecycle.channels.mailer import valid_address
from lifecycle.core.dbkind import mariadb_json_columns, row_locks
from lifecycle.core.errors import UserError
from lifecycle.datamap.consents import ConsentPurpose, consented
from lifecycle.datamap.current import current_datamap
from lifecycle.datamap.identifiers import FlaggedCategory, flagged_columns, refusal
from lifecycle.datamap.model import DataMap, Subject, withdrawn
from models.consents import Consent

# Where notices go when the map names no contact email column (subject.contact.email).
EMAIL_COLUMN = "email"
# A withdrawal marker kept outside the members' table, read with the member row.
WITHDRAWN_LABEL = "__lc_withdrawn"

# Columns a correction may never set even though they hold personal data: the system keeps
# them (timestamps the site records) or they are not the member's data to restate (hashes,
# consent flags have their own procedure).
SYSTEM_COLUMNS = frozenset(
    {"joined_at", "created_at", "updated_at", "last_login_at", "marketing_consent", "login_id"}
)
_HASH_RE = re.compile(r".*_(hash|digest|salt)$")


@dataclass(frozen=True)
class MemberTable:
    table: Table
    key: str
    status_column: str  # the status column, or the map's withdrawal marker column
    withdrawn_value: str
    dormant_value: str
    email_column: str | None
    # field -> category, for every personal column of the subject table
    categories: dict[str, str]
    system: frozenset[str]
    mobile_column: str | None = None
    marker: bool = False  # withdrawal is a non-empty status_column (e.g. mb_leave_date)
    # field -> its flag, for columns holding a unique identifier (고유식별정보, 제24조의2):
    # never corrected nor provided (see lifecycle.datamap.identifiers)
    identifiers: dict[str, FlaggedCategory] = dc_field(default_factory=dict)
    # A withdrawal marker kept outside this table (a meta row, lifecycle_withdrawals): read
    # with the row as WITHDRAWN_LABEL (see lock_member).
    subject: Subject | None = None

    def refuse_identifier(self, field_: str, what: str) -> None:
        """A one-line UserError when ``field_`` holds a flagged unique identifier."""
        flag = self.identifiers.get(field_)
        if flag is not None:
            raise UserError(refusal(flag, field_, what))

    @property
    def elsewhere(self) -> bool:
        """The withdrawal marker is not a column of this table."""
        return self.subject is not None and self.subject.marker_store is not None

    def is_withdrawn(self, row: Any) -> bool:
        """For a row (mapping) read by :func:`lock_member` (or holding :attr:`status_column`)."""
        if self.elsewhere:
            return withdrawn(row[WITHDRAWN_LABEL], "", marker=True)
        return withdrawn(row[self.status_column], self.withdrawn_value, marker=self.marker)

    @property
    def key_col(self) -> Column[Any]:
        return self.table.c[self.key]

    @property
    def status_col(self) -> Column[Any]:
        return self.table.c[self.status_column]

    @property
    def email_col(self) -> Column[Any] | None:
        return self.table.c[self.email_column] if self.email_column else None

    def active_clause(self) -> Any:
        """Members that get notices: neither withdrawn nor dormant."""
        if self.elsewhere:
            assert self.subject is not None
            return ~self.subject.withdrawn_clause(self.table)
        if self.marker:
            return or_(self.status_col.is_(None), self.status_col == "")
        return self.status_col.not_in([self.withdrawn_value, self.dormant_value])

    def correctable(self, field: str) -> bool:
        return field in self.categories and field not in self.system | set(self.identifiers)

    def check_field(self, field: str) -> Column[Any]:
        self.refuse_identifier(field, "corrected")
        if field in self.system:
            raise UserError(f"field {field} is a system column and cannot be corrected")
        if field not in self.categories:
            raise UserError(
                f"unknown field {field!r}: not a personal-data column of {self.table.name} in "
                "the data map"
            )
        return self.table.c[field]

    def coerce(self, field: str, value: Any) -> Any:
        """Validate one new value against the real column; returns the typed value."""
        col = self.check_field(field)
        return _coerce(field, col, value, is_email=field == self.email_column)

    def validate(self, values: dict[str, Any]) -> dict[str, Any]:
        """Every field and value, or a UserError naming the first bad field."""
        if not isinstance(values, dict) or not values:
            raise UserError("nothing to correct: give at least one FIELD=VALUE")
        return {f: self.coerce(f, v) for f, v in values.items()}


def _coerce(field: str, col: Column[Any], value: Any, *, is_email: bool) -> Any:
    t = col.type
    if value is None or value == "":
        if not col.nullable:
            raise UserError(f"field {field}: a value is required")
        return None
    if isinstance(t, sqltypes.DateTime):
        if isinstance(value, datetime):
            return value
        if not isinstance(value, str):
            raise UserError(f"field {field}: not a date-time (YYYY-MM-DDTHH:MM[:SS][+09:00])")
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            raise UserError(
                f"field {field}: not a date-time (YYYY-MM-DDTHH:MM[:SS][+09:00])"
            ) from None
        return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    if isinstance(t, sqltypes.Date):
        if isinstance(value, date) and not isinstance(value, datetime):
            return value
        if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            raise UserError(f"field {field}: not a date (YYYY-MM-DD)")
        try:
            d = date.fromisoformat(value)
        except ValueError:
            raise UserError(f"field {field}: not a date (YYYY-MM-DD)") from None
        if d > date.today():
            raise UserError(f"field {field}: date lies in the future")
        return d
    if isinstance(t, sqltypes.Boolean):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes", "y"):
            return True
        if text in ("false", "0", "no", "n"):
            return False
        raise UserError(f"field {field}: not a boolean (true/false)")
    if isinstance(t, sqltypes.Integer):
        if isinstance(value, bool):
            raise UserError(f"field {field}: not an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, str) and re.fullmatch(r"[+-]?\d{1,18}", value.strip()):
            return int(value)
        raise UserError(f"field {field}: not an integer")
    if isinstance(t, sqltypes.JSON):
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise UserError(f"field {field}: not valid JSON") from None
        if not isinstance(value, dict | list):
            raise UserError(f"field {field}: must be a JSON object or list")
        return value
    if isinstance(t, sqltypes.String):  # String, Text, VARCHAR, ...
        if not isinstance(value, str):
            raise UserError(f"field {field}: must be text")
        if any(ord(c) < 32 and c not in "\t" for c in value):
            raise UserError(f"field {field}: control characters are not allowed")
        length = getattr(t, "length", None)
        if length is not None and len(value) > length:
            raise UserError(f"field {field}: longer than {length} characters")
        if is_email and not valid_address(value):
            raise UserError(f"field {field}: not an email address")
        return value
    raise UserError(f"field {field}: its column type cannot be corrected from here")


def to_json(value: Any) -> Any:
    """JSON form of a coerced value (what a request payload and a notification carry)."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


_cache: dict[str, tuple[DataMap, MemberTable]] = {}


def member_table(engine: Engine) -> MemberTable:
    """Reflect the subject table named by the data map in force (cached per database and map
    version: an edited map is reflected again)."""
    dm = current_datamap()
    cache_key = engine.url.render_as_string(hide_password=True)
    hit = _cache.get(cache_key)
    if hit is not None and hit[0] is dm:
        return hit[1]
    subject = dm.subject
    tmap = dm.subject_table
    md = MetaData()
    try:
        json_columns = mariadb_json_columns(engine, subject.table)

        def keep_json(_inspector: Any, _table: Table, column: dict[str, Any]) -> None:
            # Without this a MariaDB JSON column reads as text: a correction would accept
            # malformed JSON there, which the server's own check then refuses mid-job.
            if column["name"] in json_columns:
                column["type"] = sqltypes.JSON()

        table = Table(
            subject.table, md, autoload_with=engine, listeners=[("column_reflect", keep_json)]
        )
    except Exception:
        raise UserError(
            f"subject table {subject.table!r} from the data map does not exist in the primary "
            "database"
        ) from None
    categories = {c: cat for cat, cols in tmap.columns.items() for c in cols if c in table.c}
    system = set(SYSTEM_COLUMNS) | set(tmap.key_columns) | set(tmap.non_personal)
    # A consent's own columns change only through `lifecycle consent give/withdraw`.
    system |= {c for p in dm.consents.values() for c in (p.column, p.date_column) if c}
    # A login that is the email stays correctable (lifecycle.datamap.logins checks collisions).
    login = None if subject.login_is_contact else subject.login_column
    optional = (subject.state_column, subject.withdrawn_at_column, login)
    system |= {c for c in optional if c is not None}
    system |= {*tmap.files, *(f for ft in tmap.file_templates for f in ft.fields)}
    if subject.dormancy.last_active_column:
        system.add(subject.dormancy.last_active_column)
    system |= {c.name for c in table.c if _HASH_RE.fullmatch(c.name)}
    mt = MemberTable(
        table=table,
        key=subject.key,
        status_column=subject.state_column or "",
        withdrawn_value=subject.withdrawn_value,
        dormant_value=subject.dormancy.status_value,
        email_column=subject.email_column or (EMAIL_COLUMN if EMAIL_COLUMN in table.c else None),
        categories=categories,
        system=frozenset(system),
        mobile_column=subject.mobile_column,
        marker=subject.marker_column is not None,
        subject=subject,
        identifiers={c: f for c, f in flagged_columns(dm, subject.table).items() if c in table.c},
    )
    _cache[cache_key] = (dm, mt)
    return mt


def lock_member(s: Session, mt: MemberTable, member_id: int, *, share: bool) -> Any:
    """Read (and on PostgreSQL lock) the member row; None if absent.

    Provisions take a share lock and corrections an exclusive one before restricting, so a
    provision can never slip in between a correction's restriction check and its restriction.
    """
    stmt = select(mt.table).where(mt.key_col == member_id)
    if mt.elsewhere:
        assert mt.subject is not None
        stmt = stmt.add_columns(mt.subject.withdrawn_at_col(mt.table).label(WITHDRAWN_LABEL))
    if row_locks(s):
        stmt = stmt.with_for_update(read=share)
    return s.execute(stmt).mappings().first()


def live_member(s: Session, mt: MemberTable, member_id: int, *, exclusive: bool) -> Any:
    """The member row (locked), or a one-line UserError: an unknown member, or one the map's
    status column or withdrawal marker says has withdrawn, has no live data to act on. Every
    request and provision asks this, never the status column directly."""
    row = lock_member(s, mt, member_id, share=not exclusive)
    if row is None or mt.is_withdrawn(row):
        raise UserError(f"member {member_id} does not exist or has withdrawn")
    return row


def open_grants(member_id: int, purpose: str) -> Any:
    """The member's grants of ``purpose`` in the lifecycle's history not withdrawn."""
    return select(Consent).where(
        Consent.member_id == member_id, Consent.purpose == purpose, Consent.withdrawn_at.is_(None)
    )


def gives_consent(s: Session, p: ConsentPurpose, member_id: int, row: Any) -> bool:
    """Whether the member (``row``: their member row, read by :func:`live_member`) currently
    gives ``p``: the site's column where the map names one, else the lifecycle's history."""
    if p.column is not None:
        return consented(row[p.column])
    return s.scalars(open_grants(member_id, p.name).limit(1)).first() is not None


def clear_cache() -> None:
    _cache.clear()
