"""열람 (개인정보 보호법 제35조): everything held on one member, in a package they can read.

One job reads every table of the data map through the same member expression the engine uses
to reach a member's rows (direct column or ``via`` hops), the member's records in the separate
archive (분리보관, decrypted for this package only), and the provision log (who received what,
when, on which basis), and writes a ZIP: one UTF-8 CSV per table (with BOM, so Excel on Korean
Windows opens it as UTF-8), one per archived table (``분리보관_<table>.csv``) and a summary in
Korean with the items of 시행령 제41조①: the purposes, the retention period of each item in
words with its legal basis, the provisions to third parties, and the consents the member gave.

개인정보 보호법 제35조 gives the right to everyone whose data is processed, and keeping
archived data is processing: so a former member whose data is still kept (live rows the map
retains, or archived records) may ask too, and archived records are part of the answer. A
former member's request needs an address for the answer (``--requester-contact``): the site no
longer holds theirs.

Encrypted by default (WinZip AES-256, pyzipper: opens in 7-Zip, WinZip, Bandizip, which Korean
members have): with ``--password-file`` its first line is the password; without it the worker
writes a random password to ``<out>.password.txt`` (mode 0600) for the operator to give the
member by another channel. ``--plain`` writes an unencrypted ZIP, only when asked, and the
access log records that choice.

Nothing of the package passes the broker, results, logs or Flower: the task gets the request
id, the output path and password *file* path sit on the request row in the primary DB (the
password itself is read by the worker from that file, never stored), results and logs carry
counts only. Every package written is an ``export`` entry of the access log (who, 접속지, how
many rows and archived records, encrypted or not). Credential hashes are listed as withheld
(they are not readable data and would help an attacker who got the file).

Steps: received/dispatched --requester and member checked, package written--> packaged
--answer--> completed. The file is written to ``<out>.part`` and renamed, so a crash never
leaves a half package under the final name; a re-run rewrites it.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import secrets
import zipfile
from collections.abc import Collection, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pyzipper
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from lifecycle.channels.templates import FIELD_LABELS
from lifecycle.core import db
from lifecycle.core.errors import LifecycleError, UserError
from lifecycle.core.settings import get_settings
from lifecycle.core.timeutil import as_utc
from lifecycle.datamap import linkage, member_lists
from lifecycle.datamap.guest_rows import GUEST_NOTE
from lifecycle.datamap.identifiers import flagged_columns
from lifecycle.datamap.member_table import live_member
from lifecycle.datamap.model import MemberLink, TableMap
from lifecycle.engine.context import EngineContext, get_context
from lifecycle.engine.guests import GuestMatch, Shared, shared_line
from lifecycle.engine.selection import member_expr
from lifecycle.requests.states import transition
from lifecycle.rights.common import Requester, requester_refusal, submit_right
from lifecycle.rights.pipeline import Job, Pipeline, Run, answer_requester, refuse, run, starting
from lifecycle.vault import accesslog, retrieval
from models.consents import Consent
from models.recipients import Provision, Recipient
from models.requests import RequestKind, RequestState

log = logging.getLogger(__name__)

_HASH_RE = re.compile(r".*_(hash|digest|salt)$")
WITHHELD = "(비공개: 복호화할 수 없는 보안 값)"
# A unique identifier (고유식별정보) the map flags is never copied out (제24조, 제24조의2): the
# package says one is held, and the privacy officer's page says how it is being destroyed.
IDENTIFIER_WITHHELD = "(보유 중: 고유식별정보는 사본을 제공하지 않습니다)"
MIN_PASSWORD = 8
PASSWORD_SUFFIX = ".password.txt"
ARCHIVED_PREFIX = "분리보관_"

# 처리 목적 of each built-in category, as a member reads it (시행령 제41조①1호). The map does not
# declare purposes yet; a category of the operator's own falls back to the policy's wording.
CATEGORY_PURPOSES: dict[str, str] = {
    "profile": "회원 관리 및 서비스 제공",
    "contact": "회원 관리, 공지 및 요청 처리 결과 안내",
    "credentials": "본인 확인 및 로그인",
    "rrn": "(법적 근거 없이 수집된 항목: 파기 대상)",
    "guardian": "만 14세 미만 아동의 법정대리인 동의 확인 (개인정보 보호법 제22조의2)",
    "hobbies": "맞춤형 서비스 제공",
    "counselling": "상담 예약 및 상담 서비스 제공",
    "contract": "계약 이행 및 전자상거래법에 따른 기록 보존",
    "payment": "대금 결제 및 전자상거래법에 따른 기록 보존",
    "complaint": "불만·분쟁 처리 및 전자상거래법에 따른 기록 보존",
    "advertising": "표시·광고 기록 보존 (전자상거래법)",
    "tax": "세금계산서 발행 및 국세기본법에 따른 장부·증거서류 보존",
    "access_log": "접속 기록 보관 (통신비밀보호법)",
    "service_usage": "서비스 이용 기록 관리",
    "uploads": "회원이 올린 파일 보관 및 서비스 제공",
}
OTHER_PURPOSE = "개인정보 처리방침에 적힌 목적"


class PackageNotWritten(LifecycleError):
    """The output folder is not writable: an operator problem, not a refusal of the request."""


# -- submitting ---------------------------------------------------------------------------------


def check_out_path(out: str) -> str:
    p = Path(out).expanduser()
    if not p.name.lower().endswith(".zip"):
        raise UserError("--out must name a .zip file")
    p = p.resolve()
    if p.exists():
        raise UserError(f"--out {p} already exists; choose a new file name")
    if not p.parent.is_dir() or not os.access(p.parent, os.W_OK):
        raise UserError(f"--out folder {p.parent} does not exist or is not writable")
    return str(p)


def read_password(path: str) -> str:
    """The first line of the password file (what the member will be told separately)."""
    try:
        with open(path, encoding="utf-8") as fh:
            pw = fh.readline().strip()
    except (OSError, UnicodeDecodeError):
        raise UserError(
            "--password-file cannot be read (missing, unreadable or not UTF-8)"
        ) from None
    if len(pw) < MIN_PASSWORD:
        raise UserError(f"the password in --password-file needs at least {MIN_PASSWORD} characters")
    return pw


def password_path(out: str) -> str:
    """Where the worker writes the random password of a package asked for without a file."""
    return f"{out}{PASSWORD_SUFFIX}"


def _still_held(s: Session, member_id: int) -> bool:
    """A former member (withdrawn, or their row gone) whose data is still kept somewhere: live
    rows the map reaches by their id, or records in the archive."""
    ctx = get_context()
    for tm in ctx.datamap.tables.values():
        t = ctx.table(tm.name)
        q = select(t.c[tm.keys[0]] if tm.keys else t.c[next(iter(t.c.keys()))])
        if s.execute(q.where(tm.scoped(t, member_expr(ctx, tm) == member_id)).limit(1)).first():
            return True
    with db.session("archive") as a:
        return retrieval.holds_member(a, member_id)


def submit_access(
    member_id: int,
    out: str,
    password_file: str | None,
    requester: Requester,
    *,
    plain: bool = False,
    dispatch: bool = True,
    actor: str | None = None,
) -> int:
    """Record an access request (former members whose data is kept included). Encrypted unless
    ``plain``: with the password in ``password_file``, else one the worker makes."""
    path = check_out_path(out)
    payload: dict[str, Any] = {"out": path}
    if plain and password_file is not None:
        raise UserError("--plain and --password-file exclude each other")
    if password_file is not None:
        read_password(password_file)
        payload["password_file"] = str(Path(password_file).expanduser().resolve())
    elif plain:
        payload["plain"] = True
    elif Path(password_path(path)).exists():
        raise UserError(f"{password_path(path)} already exists; choose a new --out file name")

    def former(s: Session, mid: int) -> bool:
        if not _still_held(s, mid):
            return False
        if not requester.contact:
            raise UserError(
                f"member {mid} has withdrawn: give --requester-contact (the site no longer "
                "holds an address for the answer)"
            )
        return True

    return submit_right(
        RequestKind.ACCESS.value, member_id, payload, requester, dispatch=dispatch,
        former=former, actor=actor,
    )  # fmt: skip


# -- collecting ---------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


def _csv(header: list[str], rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode("utf-8-sig")


def collect(
    ctx: EngineContext, s: Session, member_id: int
) -> dict[str, tuple[list[str], list[Any]]]:
    """table name -> (column names, rows as text) of every mapped table, for one member."""
    out: dict[str, tuple[list[str], list[Any]]] = {}
    subject = ctx.datamap.subject.table
    names = [subject, *sorted(n for n in ctx.datamap.tables if n != subject)]
    # Guest rows holding the member's email or mobile are theirs too (match_identities), unless
    # another member still with the site holds that identity: then they are nobody's for sure.
    guests = GuestMatch(ctx, s.connection(), [member_id], ctx.datamap.tables.values())
    for name in names:
        tm = ctx.datamap.tables[name]
        t = ctx.table(name)
        cols = [c.name for c in t.columns]
        flagged = flagged_columns(ctx.datamap, name)
        # Every key column: a composite key orders fully, a keyless table (key: []) not at all.
        order = [t.c[k] for k in tm.keys]
        where = member_expr(ctx, tm) == member_id
        guest = guests.where(tm, t) if tm.match_identities else guests.descendant_where(tm, t)
        if guest is not None:
            where = or_(where, guest)
        stmt = select(t).where(tm.scoped(t, where)).order_by(*order)
        out[name] = (cols, [_mask(cols, r, flagged) for r in s.execute(stmt)])
    return out


def named_in(
    ctx: EngineContext, s: Session, member_id: int
) -> dict[str, tuple[list[str], list[Any]]]:
    """File stem -> (columns, rows) of the member's own data in rows another member owns
    (``also_names:``, a notification naming them as its sender): the row's key and the
    columns naming or identifying this member, never the owner's columns."""
    out: dict[str, tuple[list[str], list[Any]]] = {}
    dm = ctx.datamap
    for tm in ctx.ordered_tables:
        t = ctx.table(tm.name) if tm.also_names else None
        for lk in tm.also_names:
            assert t is not None
            if lk.separator is not None:
                got = _listed_in(ctx, s, tm, lk, member_id)
                if got[1]:
                    out[f"{tm.name}.{lk.column}"] = got
                continue
            # The row's key without the owner's link (a scrap's key holds its owner's id).
            links = {x.column for x in tm.links}
            cols = list(dict.fromkeys([*(k for k in tm.keys if k not in links), *lk.cleared]))
            if lk.template is not None:
                # Spelled from the member's id, so the column is compared whole (indexed).
                value = _member_value(ctx, s, lk.member_key, member_id)
                if value is None:
                    continue
                mine = t.c[lk.column] == lk.spelled(value)
            else:
                mine = dm.link_expr(lk, t.c[lk.column], ctx.metadata) == member_id
            stmt = select(*(t.c[c] for c in cols)).where(tm.scoped(t, mine))
            stmt = stmt.order_by(*(t.c[k] for k in tm.keys))
            rows = [[_cell(v) for v in r] for r in s.execute(stmt)]
            if rows:
                out[f"{tm.name}.{lk.column}"] = (cols, rows)
    return out


def _member_value(ctx: EngineContext, s: Session, member_key: str, member_id: int) -> Any:
    """The member's ``member_key`` (their key, or their login id); None when they have none."""
    dm = ctx.datamap
    if member_key == dm.subject.key:
        return member_id
    st = ctx.subject_table
    value = s.execute(select(st.c[member_key]).where(st.c[dm.subject.key] == member_id)).scalar()
    return None if value is None or value == "" else value


def _listed_in(
    ctx: EngineContext, s: Session, tm: TableMap, lk: MemberLink, member_id: int
) -> tuple[list[str], list[Any]]:
    """Rows whose ``lk`` column lists the member (a poll's voters): each row's key and the
    member's own entry, never the other members listed with it."""
    assert lk.separator is not None
    t = ctx.table(tm.name)
    value = _member_value(ctx, s, lk.member_key, member_id)
    if value is None:
        return [], []
    links = {x.column for x in tm.links}
    keys = [k for k in tm.keys if k not in links]
    col = t.c[lk.column]
    stmt = select(*(t.c[k] for k in keys), col).where(
        tm.scoped(t, member_lists.may_list(col, [value]))
    )
    rows = [
        [*(_cell(v) for v in r[:-1]), str(value)]
        for r in s.execute(stmt.order_by(*(t.c[k] for k in tm.keys)))
        if member_lists.named(r[-1], lk.separator, {value: member_id})
    ]
    return [*keys, lk.column], rows


def guest_rows_left(ctx: EngineContext, s: Session, member_id: int) -> list[Shared]:
    """Guest rows holding the member's identity that the package leaves out, because a member
    still with the site holds that identity too (counts only)."""
    tables = [tm for tm in ctx.datamap.tables.values() if tm.match_identities]
    guests = GuestMatch(ctx, s.connection(), [member_id], tables)
    return [f for tm in tables for f in guests.left(tm)]


def _other_members_in(
    ctx: EngineContext, s: Session, member_id: int, tables: dict[str, tuple[list[str], list[Any]]]
) -> str | None:
    """Why the package may not go out, if a row it holds names another member in a column the
    map declares as the row's own member's identity (counts and columns only), else None."""
    rows = {
        name: [(member_id, dict(zip(cols, r, strict=True))) for r in body]
        for name, (cols, body) in tables.items()
        if ctx.datamap.tables[name].identities
    }
    found = linkage.misfits(ctx.datamap, s.connection(), ctx.metadata, rows)
    return "; ".join(m.line() for m in found) or None


def provisions(s: Session, member_id: int) -> list[list[str]]:
    rows = s.execute(
        select(
            Recipient.name,
            Provision.fields,
            Provision.basis,
            Provision.purpose,
            Provision.provided_at,
        )
        .join(Recipient, Recipient.id == Provision.recipient_id)
        .where(Provision.member_id == member_id)
        .order_by(Provision.provided_at, Provision.id)
    ).all()
    basis = {"consent": "정보주체의 동의", "legal_request": "법령에 따른 요청"}
    return [
        [
            name,
            ", ".join(f"{FIELD_LABELS.get(f, f)}({f})" for f in fields or []),
            basis.get(b, b),
            purpose or "",
            _cell(at),
        ]
        for name, fields, b, purpose, at in rows
    ]


def _answer(value: str) -> str:
    """A consent column's value as the package shows it, in words."""
    if value in ("", "false", "0", "None"):
        return "동의하지 않음 (또는 철회)"
    if value == "true" or value.isdigit():
        return "동의함"
    return f"동의함 ({value})"


def consent_facts(
    ctx: EngineContext, s: Session, member_id: int, member: dict[str, str] | None
) -> list[str]:
    """동의 사실 (시행령 제41조①): every consent purpose the map declares, with the member's
    answer (the site's column where it records one, else the lifecycle's history) and each
    given/withdrawn time and consent-text version of the history (``lifecycle_consents``).
    ``member``: the member row as the package shows it; None for a former member."""
    dm = ctx.datamap
    history: dict[str, list[Consent]] = {}
    for c in s.scalars(select(Consent).where(Consent.member_id == member_id).order_by(Consent.id)):
        history.setdefault(c.purpose, []).append(c)
    lines: list[str] = []
    for p in dm.consents.values():
        rows = history.get(p.name, [])
        if p.column and member is not None and p.column in member:
            answer = _answer(member[p.column])
        elif rows:
            answer = "철회함" if rows[-1].withdrawn_at is not None else "동의함"
        elif member is None:
            answer = "탈퇴로 회원 정보가 삭제되어 기록 없음"
        else:
            answer = "기록 없음"
        lines.append(f"  - {p.label} ({p.name}): {answer}")
        for c in rows:
            parts = []
            if c.given_at is not None:
                parts.append(f"동의 {as_utc(c.given_at).date().isoformat()}")
            if c.withdrawn_at is not None:
                parts.append(f"철회 {as_utc(c.withdrawn_at).date().isoformat()}")
            if c.text_version:
                parts.append(f"동의서 {c.text_version}")
            lines.append(f"      · {', '.join(parts) or '기록됨'}")
    # A retention rule still naming a members' column (the older `consent: COLUMN` form).
    for rule in dm.rules.values():
        col = rule.consent
        if col and col not in dm.consents and member is not None and col in member:
            label = CATEGORY_PURPOSES.get(rule.category, rule.category)
            lines.append(
                f"  - {label} 정보의 보관에 대한 별도 동의 ({col}): {_answer(member[col])}"
            )
    return lines


def member_row(ctx: EngineContext, tables: dict[str, Any]) -> dict[str, str] | None:
    """The member's row as the package shows it (None: a former member, the row is gone)."""
    subject = tables.get(ctx.datamap.subject.table)
    return dict(zip(subject[0], subject[1][0], strict=True)) if subject and subject[1] else None


def _summary(
    ctx: EngineContext,
    request_id: int,
    member_id: int,
    tables: dict[str, Any],
    given: int,
    left: Sequence[Shared] = (),
    named: dict[str, Any] | None = None,
    archived: dict[str, list[dict[str, Any]]] | None = None,
    destroyed: int = 0,
    former: bool = False,
    consents: Sequence[str] = (),
) -> str:
    dm = ctx.datamap
    lines = [
        f"{get_settings().organisation()} 개인정보 열람 자료",
        "",
        f"접수번호: {request_id}",
        f"회원 번호: {member_id}" + (" (탈퇴 회원)" if former else ""),
        f"작성일: {ctx.today().isoformat()}",
        "",
        "■ 보유 중인 개인정보 (표별 CSV 파일, UTF-8)",
    ]
    cats_seen: dict[str, None] = {}
    for name, (_cols, rows) in tables.items():
        tm = dm.tables[name]
        lines.append(f"  - {name}.csv: {len(rows)}건 (항목 분류: {', '.join(tm.columns)})")
        for cat, cols in tm.columns.items():
            cats_seen[cat] = None
            labels = ", ".join(f"{FIELD_LABELS.get(c, c)}({c})" for c in cols)
            lines.append(f"      · {cat}: {labels}")
            lines.append(f"        보유기간: {dm.rule(cat).in_words(tm.anchor_of(cat))}")
    for stem, (cols, rows) in (named or {}).items():
        lines.append(
            f"  - {stem}.csv: 다른 회원의 기록에 회원님이 표시된 {len(rows)}건 "
            f"(회원님을 나타내는 항목만: {', '.join(cols)})"
        )
    for f in left:
        lines.append(
            f"  - {f.table}: 회원님의 {f.kind}을(를) 가진 비회원 기록 {f.rows}건은 "
            f"같은 {f.kind}을(를) 쓰는 다른 회원이 있어 포함하지 않았습니다 "
            "(개인정보 보호책임자가 확인합니다)"
        )
    lines += ["", "■ 분리 보관 중인 개인정보 (관계 법령에 따라 별도 데이터베이스에 암호화 보관)"]
    for name, recs in (archived or {}).items():
        cats = sorted({str(r["category"]) for r in recs})
        until = max(str(r["retain_until"]) for r in recs)
        lines.append(
            f"  - {ARCHIVED_PREFIX}{name}.csv: {len(recs)}건 (항목 분류: {', '.join(cats)})"
        )
        for cat in cats:
            cats_seen[cat] = None
            anchor = dm.tables[name].anchor_of(cat) if name in dm.tables else None
            lines.append(f"      · {cat} 보유기간: {dm.rule(cat).in_words(anchor)}")
        lines.append(f"        가장 늦은 파기 예정일: {until}")
    if not archived:
        lines.append("  - 없음")
    if destroyed:
        lines.append(f"  - 보유기간이 끝나 암호 키가 파기된 기록 {destroyed}건 (복원할 수 없음)")
    lines += ["", "■ 처리 목적"]
    for cat in cats_seen:
        lines.append(f"  - {cat}: {CATEGORY_PURPOSES.get(cat, OTHER_PURPOSE)}")
    lines += ["", "■ 동의 사실", *(consents or ["  - 기록된 동의 없음"])]
    lines += [
        "",
        f"■ 제3자 제공 내역: 제3자제공내역.csv ({given}건)",
        "",
        "■ 참고",
        "  - 비밀번호 등 단방향 암호화된 값은 복호화할 수 없어 '비공개'로 표시하였습니다.",
        "  - 주민등록번호 등 고유식별정보는 보유 여부만 표시하고 사본은 제공하지 않습니다",
        "    (개인정보 보호법 제24조, 제24조의2).",
        "  - 분리 보관 중인 정보는 법령에서 정한 목적 외에는 이용하지 않으며, 이 열람을 위해서만",
        "    복호화하였습니다 (개인정보 보호법 제21조③, 제35조).",
        "  - 열람 결과에 이의가 있거나 정정·삭제·처리정지를 원하시면 개인정보 보호책임자에게",
        "    요구하실 수 있습니다.",
    ]
    return "\r\n".join(lines) + "\r\n"


def write_package(path: str, files: dict[str, bytes], password: str | None) -> None:
    """Write the ZIP atomically (``.part``, fsync, rename), readable by the owner only."""
    part = f"{path}.part"
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        if password is not None:
            zf: Any = pyzipper.AESZipFile(
                fh, "w", compression=pyzipper.ZIP_DEFLATED, encryption=pyzipper.WZ_AES
            )
            zf.setpassword(password.encode("utf-8"))
            zf.setencryption(pyzipper.WZ_AES, nbits=256)
        else:
            zf = zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED)
        with zf:
            # Non-ASCII (Korean) names get the UTF-8 name flag from the writer itself.
            for name, data in files.items():
                zf.writestr(name, data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(part, path)


# -- the job ------------------------------------------------------------------------------------


def _password(payload: dict[str, Any], request_id: int) -> str | None:
    """The package's password: the operator's file, else the worker's own (made once, kept
    for a re-run), None only for an explicit ``--plain``."""
    if payload.get("plain"):
        return None
    try:
        if payload.get("password_file"):
            return read_password(str(payload["password_file"]))
        path = password_path(str(payload["out"]))
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return read_password(path)  # a re-run: the one it made before
        pw = secrets.token_urlsafe(15)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(pw + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return pw
    except (UserError, OSError) as exc:
        raise PackageNotWritten(
            f"access request {request_id}: password not available ({type(exc).__name__}); "
            "fix the file or folder, the request is retried"
        ) from None


def _mask(cols: Sequence[str], values: Sequence[Any], flagged: Collection[str]) -> list[str]:
    return [
        WITHHELD
        if _HASH_RE.fullmatch(c)
        else (IDENTIFIER_WITHHELD if _cell(v) else "")
        if c in flagged
        else _cell(v)
        for c, v in zip(cols, values, strict=True)
    ]


def archived_files(
    ctx: EngineContext, records: list[dict[str, Any]]
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, bytes]]:
    """The archived records by source table, and one CSV per table: the record's key, category,
    the day it will be destroyed, then its columns (hashes and flagged identifiers withheld as
    in the live tables)."""
    by_table: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_table.setdefault(str(r["table"]), []).append(r)
    files = {}
    for name, recs in by_table.items():
        cols = sorted({c for r in recs for c in r["data"]})
        flagged: Collection[str] = (
            flagged_columns(ctx.datamap, name) if name in ctx.datamap.tables else ()
        )
        rows = [
            [str(r["key"]), str(r["category"]), str(r["retain_until"]),
             *_mask(cols, [r["data"].get(c) for c in cols], flagged)]
            for r in recs
        ]  # fmt: skip
        files[f"{ARCHIVED_PREFIX}{name}.csv"] = _csv(
            ["원본 키", "항목 분류", "파기 예정일", *cols], rows
        )
    return by_table, files


def _package(job: Job) -> None:
    ctx, request_id, payload = job.run.ctx, job.request_id, job.payload
    refusal = requester_refusal(job.s, job.req)
    former = False
    if refusal is None:
        try:
            live_member(job.s, job.mt, job.member_id, exclusive=False)
        except UserError:
            former = True
            if not _still_held(job.s, job.member_id):
                refusal = "보유 중인 회원님의 개인정보가 없습니다 (nothing held on this member)"
    if refusal is None and not payload.get("out"):
        refusal = "열람 자료를 저장할 위치가 지정되지 않았습니다 (no output path)"
    if refusal is not None:
        refuse(job, refusal)
        return
    tables = collect(ctx, job.s, job.member_id)
    wrong = _other_members_in(ctx, job.s, job.member_id, tables)
    if wrong:
        refuse(
            job,
            "열람 자료에 다른 회원의 정보가 섞여 있어 제공을 보류합니다; 개인정보 보호책임자가 "
            f"확인합니다 ({wrong})",
        )
        return
    # Decrypted for this package only (제35조); the access-log entry below says it was.
    with db.session("archive") as a:
        records, destroyed = retrieval.archived_of(a, job.member_id)
    archived, archived_csvs = archived_files(ctx, records)
    left = guest_rows_left(ctx, job.s, job.member_id)
    given = provisions(job.s, job.member_id)
    files = {f"{name}.csv": _csv(cols, rows) for name, (cols, rows) in tables.items()}
    named = named_in(ctx, job.s, job.member_id)
    files.update({f"{stem}.csv": _csv(cols, rows) for stem, (cols, rows) in named.items()})
    files.update(archived_csvs)
    files["제3자제공내역.csv"] = _csv(
        ["제공받는 자", "제공 항목", "제공 근거", "목적", "제공 일시"], given
    )
    consents = consent_facts(ctx, job.s, job.member_id, member_row(ctx, tables))
    files["요약.txt"] = _summary(
        ctx,
        request_id,
        job.member_id,
        tables,
        len(given),
        left,
        named,
        archived,
        destroyed,
        former,
        consents,
    ).encode("utf-8-sig")
    # Made only for a package that goes out: a refused request leaves no password file.
    password = _password(payload, request_id)
    try:
        write_package(str(payload["out"]), files, password)
    except OSError as exc:
        raise PackageNotWritten(
            f"access request {request_id}: package not written ({type(exc).__name__}: "
            f"{exc.strerror or 'error'}); fix the folder, the request is retried"
        ) from None
    nrows = sum(len(r) for _c, r in (*tables.values(), *named.values()))
    counts = {
        "tables": len(tables),
        "rows": nrows,
        "archived_records": len(records),
        "archived_destroyed": destroyed,
        "provisions": len(given),
        "encrypted": password is not None,
        "former_member": former,
    }
    # Written before the state commits: a crash in between writes the package and this entry
    # again on the re-run, which is what happened.
    with db.session("archive") as a:
        accesslog.record(
            a, operator=job.req.actor or "website", kind="export", action="access package",
            member_id=job.member_id, request_id=request_id,
            details={**counts, "subjects": 1, "rows": nrows + len(records)},
        )  # fmt: skip
    job.req.payload = {**payload, **counts}
    # Left out for a shared identity: said in the package and kept as the request's note.
    note = shared_line({f.key: f.rows for f in left})
    transition(job.req, RequestState.PACKAGED, error=note)


def _complete(job: Job) -> None:
    note = job.req.error if (job.req.error or "").startswith(GUEST_NOTE) else None
    transition(job.req, RequestState.COMPLETED, error=note)


def _logged(r: Run) -> None:
    log.info("access request %s: %s", r.request_id, r.state)


ACCESS = Pipeline(
    RequestKind.ACCESS.value,
    {**starting(_package), RequestState.PACKAGED.value: _complete},
    finish=(answer_requester, _logged),
)


def run_access(request_id: int, task_id: str | None = None) -> dict[str, Any]:
    """Carry the request to its end from wherever it stands; counts only in the result."""
    return run(ACCESS, request_id, task_id, ctx=get_context())
