"""Consent purposes (동의) and sensitive categories (민감정보) in the data map.

A map declares every purpose the site asks consent for, and the categories that depend on it::

    sensitive: [counselling]              # 민감정보 (개인정보 보호법 제23조)
    consents:
      marketing_email: {kind: marketing, label: "광고성 정보 수신 동의 (이메일)",
                        column: mb_mailling, date_column: mb_mailling_date}
      counselling:     {kind: processing, label: "민감정보(상담기록) 처리 동의",
                        column: counselling_consent_at, categories: [counselling]}
      counselling_retention: {kind: retention, label: "탈퇴 후 상담기록 보관 동의",
                              categories: [counselling]}
      provision_partner: {kind: provision, label: "제휴사 제공 동의", recipient: partner,
                          categories: [profile, contact]}

- ``kind``: :data:`KINDS`. ``processing`` and ``guardian`` consents carry the processing of
  their ``categories``: withdrawing one destroys them. ``retention`` keeps its ``categories``
  after withdrawal (a rule names it: ``consent: PURPOSE``). ``provision`` lets ``lifecycle
  provide --basis consent --purpose PURPOSE`` hand over its ``categories`` (to ``recipient``
  when named). ``marketing`` covers advertising per channel (one purpose per channel).
- ``column`` (optional): the members' table column where the site records the consent
  (recorded: not NULL, false, 0 or ''), with ``date_column`` the time it changed. Without it
  the consent lives only in the lifecycle's own ``lifecycle_consents`` table. Either way that
  table keeps the history (text version, given and withdrawn times, source).
- A consent covering a sensitive category covers only sensitive ones: 제23조①1호 asks for it
  separately from the consent to other processing.

Pure: parsing and SQL expressions only; the history and withdrawals live in
``lifecycle.rights.consent``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, column, exists, false, func, inspect, or_, select
from sqlalchemy import table as table_clause
from sqlalchemy import types as sqltypes

# The lifecycle's own consent history (migration p_consent_0001), read here as a plain clause:
# the data map never imports the lifecycle's models.
CONSENT_TABLE = "lifecycle_consents"

# kind -> what the law asks of it (cited in docs, ledger entries and refusals).
KINDS: dict[str, str] = {
    "marketing": "개인정보 보호법 제22조④ (홍보·판매 권유 동의는 구분하여 받음)",
    "processing": "개인정보 보호법 제15조①1호, 제23조①1호 (민감정보는 별도 동의)",
    "retention": "개인정보 보호법 제21조①, 제23조①1호 (보유기간 경과 후 보존 동의)",
    "provision": "개인정보 보호법 제17조①1호, 제18조②1호 (제3자 제공 동의)",
    "guardian": "개인정보 보호법 제22조의2① (만 14세 미만 아동: 법정대리인 동의)",
}
# Kinds whose withdrawal destroys the categories that depend on them (제37조⑤, 2023 amendment:
# on withdrawal of consent the data is destroyed without delay unless another law keeps it).
DESTROYING = frozenset({"processing", "guardian"})
_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


@dataclass(frozen=True)
class ConsentPurpose:
    name: str
    kind: str
    label: str
    categories: tuple[str, ...] = ()
    column: str | None = None  # the members' table column the site records it in
    date_column: str | None = None  # ... and the time it last changed
    recipient: str | None = None  # provision: the one recipient it allows (None: any)

    @property
    def law(self) -> str:
        return KINDS[self.kind]

    @property
    def destroys(self) -> tuple[str, ...]:
        """The categories withdrawing it destroys (in the member's live rows)."""
        return self.categories if self.kind in DESTROYING else ()


def parse(
    spec: Mapping[str, Any],
    sensitive: Iterable[str],
    used: Iterable[str],
    err: Callable[..., Exception],
) -> dict[str, ConsentPurpose]:
    """``consents:`` of a map (``sensitive``: the flagged categories; ``used``: the categories
    some table holds). Raises ``err(message, *path)`` on the first problem."""
    sens, held = set(sensitive), set(used)
    out: dict[str, ConsentPurpose] = {}
    if not isinstance(spec, Mapping):
        raise err("consents: must map each purpose to {kind, label, ...}", "consents")
    allowed = {"kind", "label", "categories", "column", "date_column", "recipient"}
    for name, body in spec.items():
        where = ("consents", name)
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise err(f"consent purpose {name!r} must be a short lower_snake_case name", *where)
        if not isinstance(body, Mapping):
            raise err(f"consents.{name} must be a mapping (kind:, label:, ...)", *where)
        extra = sorted(set(body) - allowed)
        if extra:
            raise err(f"consents.{name}: unknown key {extra[0]!r}", *where, extra[0])
        kind = body.get("kind")
        if kind not in KINDS:
            raise err(f"consents.{name}.kind must be one of {', '.join(KINDS)}", *where, "kind")
        label = body.get("label")
        if not isinstance(label, str) or not label.strip():
            raise err(f"consents.{name} needs label: the consent's wording as asked", *where)
        cats = body.get("categories") or []
        if not isinstance(cats, list) or not all(isinstance(c, str) for c in cats):
            raise err(f"consents.{name}.categories must be a list of categories", *where)
        for i, c in enumerate(cats):
            if c not in held:
                raise err(f"consents.{name}: category {c!r} is held by no table", *where,
                          "categories", i)  # fmt: skip
        if kind in ("processing", "retention", "guardian", "provision") and not cats:
            raise err(f"consents.{name}: a {kind} consent names the categories it covers "
                      "(categories: [...])", *where)  # fmt: skip
        mixed = sorted(set(cats) - sens) if set(cats) & sens else []
        if mixed:
            raise err(
                f"consents.{name} covers sensitive {sorted(set(cats) & sens)[0]!r} together "
                f"with {mixed[0]!r}: 개인정보 보호법 제23조①1호 asks for the consent to "
                "sensitive data separately; declare a purpose of its own for it",
                *where,
                "categories",
            )
        for key in ("column", "date_column", "recipient"):
            v = body.get(key)
            if v is not None and (not isinstance(v, str) or not v.strip()):
                raise err(f"consents.{name}.{key} must be a name", *where, key)
        if body.get("date_column") and not body.get("column"):
            raise err(f"consents.{name}: date_column goes with column", *where, "date_column")
        if body.get("recipient") and kind != "provision":
            raise err(f"consents.{name}: recipient goes with kind: provision", *where,
                      "recipient")  # fmt: skip
        out[name] = ConsentPurpose(
            name, kind, " ".join(label.split()), tuple(cats), body.get("column"),
            body.get("date_column"), body.get("recipient"),
        )  # fmt: skip
    return out


def consented(value: Any) -> bool:
    """A consent's recorded value says the member consented (non-NULL and not false/0/'')."""
    return value is not None and value is not False and value not in (0, "", "0")


def lifecycle_table() -> Any:
    return table_clause(
        CONSENT_TABLE,
        column("member_id"),
        column("purpose"),
        column("given_at"),
        column("withdrawn_at"),
    ).alias()


def given_expr(purpose: ConsentPurpose, subject_table: Any, key: str, who: Any) -> Any:
    """A scalar subquery: recorded (see :func:`consented`) when the member whose ``key`` is
    ``who`` currently gives ``purpose``; read from the site's column, else from the
    lifecycle's table (the newest grant not withdrawn)."""
    if purpose.column is not None:
        st = subject_table.alias()
        return select(st.c[purpose.column]).where(st.c[key] == who).scalar_subquery()
    lc = lifecycle_table()
    return (
        select(func.max(lc.c.given_at))
        .where(lc.c.member_id == who, lc.c.purpose == purpose.name, lc.c.withdrawn_at.is_(None))
        .scalar_subquery()
    )


def holding(col: Any) -> Any:
    """``col`` holds a value (text: not empty)."""
    if isinstance(col.type, sqltypes.String):
        return and_(col.is_not(None), col != "")
    return col.is_not(None)


def not_given(purpose: ConsentPurpose, subject_table: Any, key: Any) -> Any:
    """For rows of ``subject_table`` (``key``: its key column): the member does not give
    ``purpose`` now (the SQL form of ``not`` :func:`consented`)."""
    if purpose.column is None:
        lc = lifecycle_table()
        return ~exists().where(
            lc.c.member_id == key, lc.c.purpose == purpose.name, lc.c.withdrawn_at.is_(None)
        )
    c = subject_table.c[purpose.column]
    t = c.type
    if isinstance(t, sqltypes.Boolean):
        return or_(c.is_(None), c == false())
    if isinstance(t, sqltypes.Integer | sqltypes.Numeric):
        return or_(c.is_(None), c == 0)
    if isinstance(t, sqltypes.String):
        return or_(c.is_(None), c.in_(("", "0")))
    return c.is_(None)


@dataclass(frozen=True)
class Unconsented:
    """Rows of one table holding a category that depends on a consent their live member does
    not give (counts only)."""

    purpose: str
    table: str
    categories: tuple[str, ...]
    rows: int
    members: int
    where: str  # where the consent is read from

    def line(self) -> str:
        return (
            f"consent {self.purpose}: {self.table}: {self.rows} row(s) of {self.members} "
            f"member(s) hold {', '.join(self.categories)} with no consent recorded "
            f"({self.where}); record it (lifecycle consent give) or destroy them (lifecycle "
            f"consent withdraw --purpose {self.purpose})"
        )


def count_unconsented(dm: Any, conn: Any, md: Any) -> list[Unconsented]:
    """Per purpose that carries categories (processing, guardian) and table holding them: the
    rows of live members who do not give it. ``md`` holds the reflected mapped tables."""
    st = md.tables[dm.subject.table]
    key = st.c[dm.subject.key]
    out: list[Unconsented] = []
    for p in dm.consents.values():
        if not p.destroys:
            continue
        if p.column is None and not inspect(conn).has_table(CONSENT_TABLE):
            continue  # validate_against already says the table is missing
        who = select(key).where(~dm.subject.withdrawn_clause(st), not_given(p, st, key))
        source = f"{st.name}.{p.column}" if p.column else CONSENT_TABLE
        for tm in dm.tables.values():
            cats = tuple(c for c in tm.columns if c in p.destroys)
            if not cats:
                continue
            t = md.tables[tm.table]
            member = dm.member_expr(tm.name, md)
            held = or_(*(holding(t.c[c]) for cat in cats for c in tm.columns[cat]))
            cond = tm.scoped(t, and_(member.in_(who), held))
            rows, members = conn.execute(
                select(func.count(), func.count(func.distinct(member))).where(cond)
            ).one()
            if rows:
                out.append(Unconsented(p.name, tm.name, cats, int(rows), int(members), source))
    return out
