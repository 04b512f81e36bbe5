"""열람 (개인정보 보호법 제35조): everything held on one member, in a package they can read.

One job reads every table of the data map through the same member expression the engine uses
to reach a member's rows (direct column or ``via`` hops), plus the provision log (who received
what, when, on which basis), and writes a ZIP: one UTF-8 CSV per table (with BOM, so Excel on
Korean Windows opens it as UTF-8) and a summary in Korean. With a password file the ZIP is
WinZip-AES-256 encrypted (pyzipper); the password goes to the member by another channel.

Nothing of the package passes the broker, results, logs or Flower: the task gets the request
id, the output path and password *file* path sit on the request row in the primary DB (the
password itself is read by the worker from that file, never stored), results and logs carry
counts only.

Archived data (분리보관) is not included. PIPA 제21조③ keeps it only for the legal purpose it
was retained for (e.g. 전자상거래법 records) and the archive is not opened for anything else;
a live member normally has nothing there, and the summary says what kinds of records could be
kept separately and where to ask about them. Credential hashes are listed as withheld (they
are not readable data and would help an attacker who got the file).

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
import zipfile
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pyzipper
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from lifecycle.channels.templates import FIELD_LABELS
from lifecycle.core.errors import LifecycleError, UserError
from lifecycle.core.settings import get_settings
from lifecycle.datamap import linkage
from lifecycle.datamap.guest_rows import GUEST_NOTE
from lifecycle.datamap.identifiers import flagged_columns
from lifecycle.engine.context import EngineContext, get_context
from lifecycle.engine.guests import GuestMatch, Shared, shared_line
from lifecycle.engine.selection import member_expr
from lifecycle.requests.states import transition
from lifecycle.rights.common import Requester, refusal_of, submit_right
from lifecycle.rights.pipeline import Job, Pipeline, Run, answer_requester, refuse, run, starting
from models.recipients import Provision, Recipient
from models.requests import RequestKind, RequestState

log = logging.getLogger(__name__)

_HASH_RE = re.compile(r".*_(hash|digest|salt)$")
WITHHELD = "(비공개: 복호화할 수 없는 보안 값)"
# A unique identifier (고유식별정보) the map flags is never copied out (제24조, 제24조의2): the
# package says one is held, and the privacy officer's page says how it is being destroyed.
IDENTIFIER_WITHHELD = "(보유 중: 고유식별정보는 사본을 제공하지 않습니다)"
MIN_PASSWORD = 8


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


def submit_access(
    member_id: int,
    out: str,
    password_file: str | None,
    requester: Requester,
    *,
    dispatch: bool = True,
) -> int:
    payload: dict[str, Any] = {"out": check_out_path(out)}
    if password_file is not None:
        read_password(password_file)
        payload["password_file"] = str(Path(password_file).expanduser().resolve())
    return submit_right(RequestKind.ACCESS.value, member_id, payload, requester, dispatch=dispatch)


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
        rows = []
        for r in s.execute(stmt):
            rows.append(
                [
                    WITHHELD
                    if _HASH_RE.fullmatch(c)
                    else (IDENTIFIER_WITHHELD if _cell(v) else "")
                    if c in flagged
                    else _cell(v)
                    for c, v in zip(cols, r, strict=True)
                ]
            )
        out[name] = (cols, rows)
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
            # The row's key without the owner's link (a scrap's key holds its owner's id).
            links = {x.column for x in tm.links}
            cols = list(dict.fromkeys([*(k for k in tm.keys if k not in links), *lk.cleared]))
            mine = dm.link_expr(lk, t.c[lk.column], ctx.metadata) == member_id
            stmt = select(*(t.c[c] for c in cols)).where(tm.scoped(t, mine))
            stmt = stmt.order_by(*(t.c[k] for k in tm.keys))
            rows = [[_cell(v) for v in r] for r in s.execute(stmt)]
            if rows:
                out[f"{tm.name}.{lk.column}"] = (cols, rows)
    return out


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


def _summary(
    ctx: EngineContext,
    request_id: int,
    member_id: int,
    tables: dict[str, Any],
    given: int,
    left: Sequence[Shared] = (),
    named: dict[str, Any] | None = None,
) -> str:
    lines = [
        f"{get_settings().organisation()} 개인정보 열람 자료",
        "",
        f"접수번호: {request_id}",
        f"회원 번호: {member_id}",
        f"작성일: {ctx.today().isoformat()}",
        "",
        "■ 보유 중인 개인정보 (표별 CSV 파일, UTF-8)",
    ]
    for name, (_cols, rows) in tables.items():
        tm = ctx.datamap.tables[name]
        cats = ", ".join(tm.columns)
        lines.append(f"  - {name}.csv: {len(rows)}건 (항목 분류: {cats})")
        for cat, cols in tm.columns.items():
            rule = ctx.datamap.rule(cat)
            labels = ", ".join(f"{FIELD_LABELS.get(c, c)}({c})" for c in cols)
            lines.append(
                f"      · {cat}: {labels} — 보유기간 {rule.period}, 근거 {rule.legal_basis}"
            )
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
    lines += [
        "",
        f"■ 제3자 제공 내역: 제3자제공내역.csv ({given}건)",
        "",
        "■ 참고",
        "  - 비밀번호 등 단방향 암호화된 값은 복호화할 수 없어 '비공개'로 표시하였습니다.",
        "  - 주민등록번호 등 고유식별정보는 보유 여부만 표시하고 사본은 제공하지 않습니다",
        "    (개인정보 보호법 제24조, 제24조의2).",
        "  - 관계 법령에 따라 분리 보관 중인 정보(예: 탈퇴·휴면 후 보존하는 계약·결제 기록)는",
        "    법령에서",
        "    정한 목적 외에는 이용하지 않으므로 이 자료에 포함하지 않았습니다. 해당 정보의 보유",
        "    여부와 기간은 개인정보 보호책임자에게 문의하실 수 있습니다.",
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


def _package(job: Job) -> None:
    ctx, request_id, payload = job.run.ctx, job.request_id, job.payload
    refusal = refusal_of(
        job.s,
        job.req,
        job.mt,
        exclusive=False,
        unknown="회원 정보를 찾을 수 없습니다 (unknown or withdrawn member)",
    )
    if refusal is None and not payload.get("out"):
        refusal = "열람 자료를 저장할 위치가 지정되지 않았습니다 (no output path)"
    if refusal is not None:
        refuse(job, refusal)
        return
    password = None
    if payload.get("password_file"):
        try:
            password = read_password(str(payload["password_file"]))
        except UserError as exc:
            raise PackageNotWritten(f"access request {request_id}: {exc}") from None
    tables = collect(ctx, job.s, job.member_id)
    wrong = _other_members_in(ctx, job.s, job.member_id, tables)
    if wrong:
        refuse(
            job,
            "열람 자료에 다른 회원의 정보가 섞여 있어 제공을 보류합니다; 개인정보 보호책임자가 "
            f"확인합니다 ({wrong})",
        )
        return
    left = guest_rows_left(ctx, job.s, job.member_id)
    given = provisions(job.s, job.member_id)
    files = {f"{name}.csv": _csv(cols, rows) for name, (cols, rows) in tables.items()}
    named = named_in(ctx, job.s, job.member_id)
    files.update({f"{stem}.csv": _csv(cols, rows) for stem, (cols, rows) in named.items()})
    files["제3자제공내역.csv"] = _csv(
        ["제공받는 자", "제공 항목", "제공 근거", "목적", "제공 일시"], given
    )
    files["요약.txt"] = _summary(
        ctx, request_id, job.member_id, tables, len(given), left, named
    ).encode("utf-8-sig")
    try:
        write_package(str(payload["out"]), files, password)
    except OSError as exc:
        raise PackageNotWritten(
            f"access request {request_id}: package not written ({type(exc).__name__}: "
            f"{exc.strerror or 'error'}); fix the folder, the request is retried"
        ) from None
    nrows = sum(len(r) for _c, r in (*tables.values(), *named.values()))
    job.req.payload = {
        **payload,
        "tables": len(tables),
        "rows": nrows,
        "provisions": len(given),
        "encrypted": password is not None,
    }
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
