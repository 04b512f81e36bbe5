"""Fill the demo website (models/demo_site.py) with realistic fake Korean data, fast.

Faker is far too slow to call per row for a million members, so it is called a few thousand
times up front to build *pools* of values per field (names, addresses, companies, jobs, ...);
rows are then combined from the pools with a ``random.Random`` seeded from ``(seed, first id of
the chunk)``, so the same seed on the same database gives the same data. Rows go in with
set-based bulk inserts, a chunk of members (and all their rows) per transaction, never an ORM
object or a round trip per row: psycopg 3 ``COPY ... FROM STDIN`` on PostgreSQL, ``executemany``
on SQLite. Memory stays bounded by the chunk size.

Ids are assigned here (so children can point at parents without asking the database): seeding
again *adds* members after the existing highest id, and every table's rows after its own
highest id; PostgreSQL sequences are moved past the new ids in the same transaction. This is a
demo loader: do not run it while the website itself inserts into the same tables.

What the mix looks like (per member, on average): a subscription contract, about 2 counselling
bookings with a record and a payment for each session held, a tax invoice for some payments,
3-4 access logs over the last 6 months (some past the 3-month rule), 2 service-usage rows;
complaints and ad displays for some; about 30% recorded the separate consent to the processing
of their counselling records (``counselling_consent_at``; the others hold records without it,
which ``datamap check`` reports, and none gave the retention consent); about 4% are under 14
with one or two
guardians; about 4% are withdrawn (withdrawn_at in the past, a quarter of them more than 5
days ago, i.e. overdue); some have not logged in for over a year (dormancy candidates). With
``files=True`` about 30% get small uploaded files under ``file_root/members/<id>/`` and an
uploaded_files row holding the absolute path.
"""

from __future__ import annotations

import json
import queue
import random
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from faker import Faker
from sqlalchemy import Boolean, Date, DateTime, Engine, Table, func, select

from lifecycle.core.dbkind import family
from models import demo_site

CHUNK = 20_000
POOL = 3_000
DAY = 86_400.0
YEAR = 365.2425 * DAY

_HOBBIES = [
    "독서", "등산", "요가", "필라테스", "수영", "자전거", "캠핑", "낚시", "사진", "그림", "서예",
    "피아노", "기타 연주", "합창", "영화 감상", "드라마 감상", "여행", "요리", "베이킹", "커피",
    "와인", "원예", "반려동물", "러닝", "마라톤", "골프", "테니스", "배드민턴", "탁구", "볼링",
    "바둑", "체스", "보드게임", "게임", "명상", "뜨개질", "도예", "목공", "캘리그래피", "봉사활동",
]  # fmt: skip
_DEPARTMENTS = [
    "경영지원팀", "인사팀", "재무팀", "영업팀", "마케팅팀", "개발팀", "연구소", "품질관리팀",
    "고객지원팀", "기획팀", "디자인팀", "생산팀", "구매팀", "법무팀", "홍보팀", "교육팀",
]  # fmt: skip
_TITLES = ["사원", "주임", "대리", "과장", "차장", "부장", "팀장", "실장", "이사", "상무", "대표"]
_MARITAL = ["미혼", "기혼", "이혼", "사별"]
_PW_QUESTIONS = [
    "가장 기억에 남는 선생님 성함은?",
    "어릴 적 살던 동네 이름은?",
    "처음 키운 반려동물의 이름은?",
    "가장 좋아하는 음식은?",
    "아버지의 고향은?",
    "출신 초등학교 이름은?",
]
_AREA_CODES = ["02", "031", "032", "033", "041", "042", "043", "051", "052", "053", "054",
               "055", "061", "062", "063", "064"]  # fmt: skip
_GUARDIAN_RELATIONS = ["부", "모", "조부", "조모", "법정대리인"]
_COUNSELLORS_N = 40
_NOTE_OPENERS = [
    "내담자는 최근 수면 문제를 호소함.",
    "직장 내 대인관계 스트레스로 내원.",
    "가족 간 갈등에 대한 상담을 희망함.",
    "지난 회기 이후 정서 상태가 다소 안정됨.",
    "학교생활 적응의 어려움을 보고함.",
    "불안감과 긴장감이 지속된다고 보고함.",
    "우울감이 2주 이상 지속되었다고 보고함.",
    "진로 결정에 대한 고민을 주로 이야기함.",
    "배우자와의 의사소통 문제를 다룸.",
    "상실 경험 이후 애도 과정에 있음.",
]
_NOTE_MIDDLES = [
    "인지행동치료 기법으로 자동적 사고를 탐색함.",
    "호흡 및 이완 훈련을 함께 연습함.",
    "감정 일기 작성을 과제로 제시함.",
    "강점 탐색 활동을 진행함.",
    "최근 사건에 대한 감정을 명료화함.",
    "대처 전략 목록을 함께 작성함.",
    "수면 위생 교육을 실시함.",
    "역할극을 통해 자기주장 연습을 함.",
]
_NOTE_ENDINGS = [
    "다음 회기에 과제 수행 여부를 확인할 예정.",
    "위기 징후는 관찰되지 않음.",
    "2주 후 추적 상담 예정.",
    "필요 시 정신건강의학과 연계를 안내함.",
    "보호자 상담을 병행하기로 함.",
    "종결을 위한 준비를 논의함.",
]
_DIAGNOSES = [
    None, None, "우울 에피소드", "범불안장애", "적응장애", "공황장애", "불면증",
    "사회불안", "외상 후 스트레스 반응", "대인관계 문제", "부부 갈등", "학업 스트레스",
]  # fmt: skip
_REQUEST_NOTES = [
    None, None, None, "첫 상담입니다.", "저녁 시간대를 희망합니다.", "여성 상담사를 원합니다.",
    "아이와 함께 방문합니다.", "주차가 가능한지 궁금합니다.", "지난번 상담사와 계속하고 싶습니다.",
    "비대면 상담을 원합니다.",
]  # fmt: skip
_COMPLAINT_BODIES = [
    "예약 시간이 사전 안내 없이 변경되었습니다.",
    "결제 금액이 두 번 청구되었습니다.",
    "환불 처리가 지연되고 있습니다.",
    "상담 예약 취소가 되지 않습니다.",
    "안내받은 금액과 실제 결제 금액이 다릅니다.",
    "홈페이지 로그인이 되지 않습니다.",
    "영수증 재발급을 요청했으나 답이 없습니다.",
]
_RESOLUTIONS = [
    None,
    "사과 안내 및 일정 재조정 완료.",
    "중복 결제 건 취소 처리 완료.",
    "환불 완료 및 안내 문자 발송.",
    "시스템 오류 수정 후 안내 완료.",
]
_CAMPAIGNS = [
    "봄맞이 마음건강 캠페인", "직장인 스트레스 검사 이벤트", "가족상담 할인",
    "신규회원 첫 상담 20%", "수면클리닉 안내", "청소년 진로상담 주간", "부부상담 패키지",
    "연말 감사 이벤트",
]  # fmt: skip
_CHANNELS = ["sms", "email", "push"]
_PATHS = [
    "/", "/login", "/logout", "/mypage", "/booking", "/booking/new", "/booking/cancel",
    "/counselling/history", "/payments", "/notice", "/faq", "/programs", "/programs/family",
    "/programs/youth", "/contact", "/privacy", "/terms", "/files/upload",
]  # fmt: skip
_USER_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; SM-S921N) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0 Mobile Safari/537.36 SamsungBrowser/25.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (Linux; Android 13; KAKAOTALK) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/123.0 Mobile Safari/537.36",
]
_ACTIONS = [
    "login", "view_program", "book_session", "cancel_booking", "pay", "download_receipt",
    "read_notice", "update_profile", "self_test", "chat_inquiry",
]  # fmt: skip
_FILE_KINDS = [
    ("intake_form", "초기상담신청서.pdf"),
    ("consent_scan", "개인정보수집동의서_스캔.jpg"),
    ("counselling_attachment", "심리검사결과지.pdf"),
    ("counselling_attachment", "상담일지_첨부.docx"),
]
_PAY_METHODS = ["card"] * 7 + ["transfer"] * 2 + ["easy_pay"]
_PRICES = [50_000, 60_000, 70_000, 80_000, 90_000, 100_000, 120_000, 150_000]


# Demo addresses must never reach a real mailbox, even through a real relay: only names under
# the reserved example.com and .test / .invalid (RFC 2606, RFC 6761), shaped like the Korean
# providers so the data still looks like a Korean site's.
DEMO_MAIL_DOMAINS = (
    "example.com",
    "naver.test",
    "daum.test",
    "hanmail.test",
    "kakao.test",
    "gmail.test",
    "nate.invalid",
)


@dataclass(frozen=True)
class Pools:
    """Values built once with Faker; rows are combined from these."""

    names: list[str]
    logins: list[str]  # ASCII letters only, so name+id is unique
    domains: list[str]
    addresses: list[str]
    companies: list[str]
    jobs: list[str]
    hobbies: list[str]
    password_hashes: list[str]
    answer_hashes: list[str]
    anniversaries: list[str | None]
    counsellors: list[str]
    notes: list[str]


def build_pools(seed: int, size: int = POOL) -> Pools:

    fake = Faker("ko_KR")
    fake.seed_instance(seed)
    rng = random.Random(f"pools:{seed}")
    logins: list[str] = []
    while len(logins) < size:
        word = re.sub(r"[^a-z]", "", fake.user_name().lower())[:20]
        if word:
            logins.append(word)
    alphabet = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

    def bcrypt_like() -> str:
        return "$2b$12$" + "".join(rng.choices(alphabet, k=53))

    def hobby_combo() -> str:
        return ", ".join(rng.sample(_HOBBIES, rng.randint(1, 3)))

    def anniversary() -> str | None:
        if rng.random() < 0.6:
            return None
        y, m, d = rng.randint(1985, 2024), rng.randint(1, 12), rng.randint(1, 28)
        key = rng.choice(["결혼기념일", "첫 만남", "자녀 생일", "부모님 생신"])
        return json.dumps({key: f"{y:04d}-{m:02d}-{d:02d}"}, ensure_ascii=False)

    def note() -> str:
        return " ".join(
            [rng.choice(_NOTE_OPENERS), rng.choice(_NOTE_MIDDLES), rng.choice(_NOTE_ENDINGS)]
        )

    return Pools(
        names=[fake.name() for _ in range(size)],
        logins=logins,
        domains=list(DEMO_MAIL_DOMAINS),
        addresses=[fake.address() for _ in range(size)],
        companies=[fake.company() for _ in range(size // 3)],
        jobs=[fake.job() for _ in range(size // 3)],
        hobbies=[hobby_combo() for _ in range(size)],
        password_hashes=[bcrypt_like() for _ in range(size // 3)],
        answer_hashes=[bcrypt_like() for _ in range(size // 3)],
        anniversaries=[anniversary() for _ in range(size // 3)],
        counsellors=[fake.name() for _ in range(_COUNSELLORS_N)],
        notes=[note() for _ in range(size)],
    )


def create_schema(engine: Engine) -> None:
    """Create the demo site's tables if they do not exist (safe to run again)."""
    demo_site.metadata.create_all(engine, checkfirst=True)


# -- writers -----------------------------------------------------------------------------------


class _Writer:
    def __init__(self, engine: Engine) -> None:
        self.raw = engine.raw_connection()
        self.conn: Any = self.raw.driver_connection

    def write(self, table: Table, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        raise NotImplementedError

    def after_chunk(self, last_ids: dict[str, int]) -> None:
        pass

    def commit(self) -> None:
        self.raw.commit()

    def close(self) -> None:
        self.raw.close()


class _PgWriter(_Writer):
    def write(self, table: Table, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        cols = ", ".join(f'"{c}"' for c in columns)
        with self.conn.cursor() as cur, cur.copy(f'COPY "{table.name}" ({cols}) FROM STDIN') as cp:
            for row in rows:
                cp.write_row(row)

    def after_chunk(self, last_ids: dict[str, int]) -> None:
        # Ids were assigned here; move each serial past them so the website's own inserts
        # do not collide with seeded rows.
        with self.conn.cursor() as cur:
            for name, last in last_ids.items():
                cur.execute(
                    "SELECT setval(pg_get_serial_sequence(%s, 'id'), %s)", (f'"{name}"', last)
                )


def _sqlite_converter(col_type: Any) -> Callable[[Any], Any] | None:

    # The same text formats SQLAlchemy's SQLite types write, so the site reads them back.
    if isinstance(col_type, DateTime):
        return lambda v: v if v is None else v.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(col_type, Date):
        return lambda v: v if v is None else v.isoformat()
    if isinstance(col_type, Boolean):
        return lambda v: v if v is None else int(v)
    return None


class _SqliteWriter(_Writer):
    def write(self, table: Table, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        convs = [(i, _sqlite_converter(table.c[c].type)) for i, c in enumerate(columns)]
        convs = [(i, f) for i, f in convs if f is not None]
        if convs:
            out = []
            for row in rows:
                r = list(row)
                for i, f in convs:
                    r[i] = f(r[i])  # type: ignore[misc]
                out.append(r)
            rows = out  # type: ignore[assignment]
        cols = ", ".join(f'"{c}"' for c in columns)
        marks = ", ".join("?" for _ in columns)
        self.conn.executemany(f'INSERT INTO "{table.name}" ({cols}) VALUES ({marks})', rows)


class _MysqlWriter(_Writer):
    def write(self, table: Table, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        cols = ", ".join(f"`{c}`" for c in columns)
        marks = ", ".join("%s" for _ in columns)
        # PyMySQL folds an INSERT ... VALUES executemany into multi-row statements; explicit ids
        # move InnoDB's AUTO_INCREMENT past them by themselves.
        with self.conn.cursor() as cur:
            cur.executemany(f"INSERT INTO `{table.name}` ({cols}) VALUES ({marks})", rows)


# -- generation --------------------------------------------------------------------------------

T = demo_site
_COLUMNS: dict[str, list[str]] = {t.name: [c.name for c in t.columns] for t in demo_site.ALL_TABLES}


def _ts(x: float) -> datetime:
    return datetime.fromtimestamp(int(x), UTC)


@dataclass
class _Member:
    id: int
    name: str
    joined: float
    end: float  # withdrawal time, or now
    under14: bool
    marketing: bool
    company: str | None


class _Generator:
    def __init__(self, pools: Pools, seed: int, now: datetime, file_root: Path | None) -> None:
        self.p = pools
        self.seed = seed
        self.now = now
        self.t_now = now.timestamp()
        self.file_root = file_root
        self.next_id: dict[str, int] = {}

    def _ids(self, table: str, n: int) -> range:
        start = self.next_id[table]
        self.next_id[table] = start + n
        return range(start, start + n)

    def chunk(self, first: int, count: int) -> Iterable[tuple[Table, list[tuple[Any, ...]], int]]:
        """Yield ``(table, rows, files_written)`` for members ``first .. first+count-1``."""
        rng = random.Random(f"{self.seed}:{first}")
        p, now = self.p, self.t_now
        rows: list[tuple[Any, ...]] = []
        members: list[_Member] = []
        today = self.now.date()
        for mid in range(first, first + count):
            sex = "M" if rng.random() < 0.45 else "F"
            under14 = rng.random() < 0.04
            age_days = (
                rng.randint(7 * 365, 13 * 365 + 300) if under14 else rng.randint(18 * 365, 80 * 365)
            )
            birth = today - timedelta(days=age_days)
            yy = birth.year % 100
            gender = (1 if sex == "M" else 2) + (2 if birth.year >= 2000 else 0)
            rrn = f"{yy:02d}{birth.month:02d}{birth.day:02d}-{gender}{rng.randint(0, 999999):06d}"
            joined = now - rng.uniform(20 * DAY, min(8 * YEAR, age_days * DAY - 6 * YEAR))
            r = rng.random()
            if r < 0.03:  # withdrawn recently: within the 5-day window
                status, withdrawn = "withdrawn", now - rng.uniform(0.1 * DAY, 4.5 * DAY)
            elif r < 0.04:  # withdrawn long ago and never processed: overdue
                status, withdrawn = "withdrawn", now - rng.uniform(6 * DAY, 60 * DAY)
            else:
                status, withdrawn = "active", None
            withdrawn = max(withdrawn, joined + DAY) if withdrawn else None
            end = withdrawn or now
            if rng.random() < 0.06:  # dormancy candidate: no login for over a year
                last_login = max(joined, end - rng.uniform(1.05 * YEAR, 3 * YEAR))
            else:
                last_login = end - rng.uniform(0, min(60 * DAY, end - joined))
            login = rng.choice(p.logins)
            adult = not under14
            company = rng.choice(p.companies) if adult and rng.random() < 0.7 else None
            name = rng.choice(p.names)
            marketing = rng.random() < 0.4
            rows.append(
                (
                    mid,
                    f"{login}{mid}",
                    rng.choice(p.password_hashes),
                    rng.choice(_PW_QUESTIONS),
                    rng.choice(p.answer_hashes),
                    name,
                    birth,
                    sex,
                    rrn,
                    f"{rng.choice(_AREA_CODES)}-{rng.randint(200, 9999)}-{rng.randint(1000, 9999)}"
                    if rng.random() < 0.5
                    else None,
                    rng.choice(p.addresses),
                    f"010-{rng.randint(1000, 9999)}-{rng.randint(1000, 9999)}",
                    f"{login}{mid}@{rng.choice(p.domains)}",
                    rng.choice(p.jobs) if adult else "학생",
                    company,
                    rng.choice(_DEPARTMENTS) if company else None,
                    rng.choice(_TITLES) if company else None,
                    rng.choice(p.hobbies),
                    rng.choice(_MARITAL) if adult else "미혼",
                    rng.choice(p.anniversaries) if adult else None,
                    status,
                    _ts(joined),
                    _ts(last_login),
                    _ts(withdrawn) if withdrawn else None,
                    marketing,
                    # About 3 in 10 gave the separate consent (민감정보) to the processing of
                    # counselling records: derived from the id, so the seeded stream stays as
                    # it was.
                    _ts(joined + DAY) if (mid * 2654435761) % 10 < 3 else None,
                )
            )
            members.append(_Member(mid, name, joined, end, under14, marketing, company))
        yield T.members, rows, 0
        yield from self._children(rng, members)

    def _children(
        self, rng: random.Random, members: list[_Member]
    ) -> Iterable[tuple[Table, list[tuple[Any, ...]], int]]:
        p, now = self.p, self.t_now

        def between(a: float, b: float) -> float:
            return a + rng.random() * max(b - a, 0.0)

        guardians, contracts = [], []
        for m in members:
            if m.under14:
                for _ in range(1 if rng.random() < 0.7 else 2):
                    gid = self.next_id["guardians"]
                    self.next_id["guardians"] += 1
                    login = rng.choice(p.logins)
                    guardians.append(
                        (
                            gid,
                            m.id,
                            rng.choice(p.names),
                            rng.choice(_GUARDIAN_RELATIONS),
                            f"010-{rng.randint(1000, 9999)}-{rng.randint(1000, 9999)}",
                            f"{login}.g{gid}@{rng.choice(p.domains)}",
                            _ts(m.joined),
                        )
                    )
            cid = self._ids("contracts", 1)[0]
            withdrawn = m.end < now
            contracts.append(
                (
                    cid,
                    m.id,
                    "subscription",
                    _ts(m.joined),
                    rng.choice(["2019-01", "2021-03", "2023-09"]),
                    _ts(m.end) if withdrawn else None,
                )
            )
            if withdrawn:
                cid = self._ids("contracts", 1)[0]
                contracts.append((cid, m.id, "withdrawal", _ts(m.end), "2023-09", None))
            if rng.random() < 0.2:
                cid = self._ids("contracts", 1)[0]
                signed = between(m.joined, m.end)
                contracts.append((cid, m.id, "package", _ts(signed), "2023-09", None))
        yield T.guardians, guardians, 0
        yield T.contracts, contracts, 0
        del guardians, contracts

        bookings, records, payments, invoices = [], [], [], []
        for m in members:
            for _ in range(rng.choice((0, 1, 1, 2, 2, 3, 4))):
                bid = self._ids("counselling_bookings", 1)[0]
                at = between(m.joined, m.end + (30 * DAY if m.end >= now else 0))
                counsellor = rng.choice(p.counsellors)
                if at > now:
                    state = "booked"
                elif rng.random() < 0.1:
                    state = "cancelled"
                else:
                    state = "done"
                bookings.append((bid, m.id, counsellor, _ts(at), state, rng.choice(_REQUEST_NOTES)))
                if state != "done":
                    continue
                rid = self._ids("counselling_records", 1)[0]
                records.append(
                    (rid, m.id, bid, _ts(at), counsellor, rng.choice(p.notes),
                     rng.choice(_DIAGNOSES))
                )  # fmt: skip
                pid = self._ids("payments", 1)[0]
                amount = rng.choice(_PRICES)
                method = rng.choice(_PAY_METHODS)
                payments.append(
                    (
                        pid,
                        m.id,
                        amount,
                        method,
                        f"{rng.randint(0, 9999):04d}" if method == "card" else None,
                        rng.choice(p.names) if m.under14 else m.name,
                        _ts(at),
                    )
                )
                if m.company and rng.random() < 0.3:
                    iid = self._ids("tax_invoices", 1)[0]
                    supply = round(amount / 1.1)
                    invoices.append(
                        (
                            iid,
                            pid,
                            m.id,
                            _ts(at + rng.uniform(0, 3 * DAY)),
                            supply,
                            amount - supply,
                            m.company,
                            f"{rng.randint(100, 999)}-{rng.randint(10, 99)}-"
                            f"{rng.randint(10000, 99999)}",
                        )
                    )
        yield T.counselling_bookings, bookings, 0
        yield T.counselling_records, records, 0
        yield T.payments, payments, 0
        yield T.tax_invoices, invoices, 0
        del bookings, records, payments, invoices

        complaints, ads = [], []
        for m in members:
            if rng.random() < 0.05:
                filed = between(m.joined, m.end)
                resolution = rng.choice(_RESOLUTIONS)
                resolved = _ts(min(filed + rng.uniform(DAY, 14 * DAY), now)) if resolution else None
                complaints.append(
                    (
                        self._ids("complaints", 1)[0],
                        m.id,
                        _ts(filed),
                        rng.choice(_COMPLAINT_BODIES),
                        resolution,
                        resolved,
                    )
                )
            if m.marketing:
                for _ in range(rng.randint(1, 3)):
                    shown = between(max(m.joined, m.end - YEAR), m.end)
                    ads.append(
                        (
                            self._ids("ad_displays", 1)[0],
                            m.id,
                            rng.choice(_CAMPAIGNS),
                            rng.choice(_CHANNELS),
                            _ts(shown),
                        )
                    )
        yield T.complaints, complaints, 0
        yield T.ad_displays, ads, 0
        del complaints, ads

        logs, usage = [], []
        for m in members:
            for _ in range(rng.randint(2, 5)):
                at = between(max(m.joined, m.end - 180 * DAY), m.end)
                logs.append(self._access_log(rng, m.id, at))
            for _ in range(rng.randint(1, 3)):
                usage.append(
                    (
                        self._ids("service_usage", 1)[0],
                        m.id,
                        rng.choice(_ACTIONS),
                        _ts(between(m.joined, m.end)),
                    )
                )
        for _ in range(len(members) // 10):  # anonymous visitors
            logs.append(self._access_log(rng, None, now - rng.uniform(0, 180 * DAY)))
        yield T.access_logs, logs, 0
        yield T.service_usage, usage, 0
        del logs, usage

        if self.file_root is not None:
            files, written = [], 0
            for m in members:
                if rng.random() >= 0.3:
                    continue
                folder = self.file_root / "members" / str(m.id)
                folder.mkdir(parents=True, exist_ok=True)
                for _ in range(rng.randint(1, 2)):
                    fid = self._ids("uploaded_files", 1)[0]
                    kind, original = rng.choice(_FILE_KINDS)
                    path = folder / f"{kind}_{fid}{Path(original).suffix}"
                    body = f"[demo] {kind} {fid}\n{rng.choice(p.notes)}\n".encode()
                    path.write_bytes(body + rng.randbytes(rng.randint(64, 1024)))
                    written += 1
                    files.append(
                        (fid, m.id, str(path), original, kind, _ts(between(m.joined, m.end)))
                    )
            yield T.uploaded_files, files, written

    def _access_log(self, rng: random.Random, member_id: int | None, at: float) -> tuple[Any, ...]:
        ip = (
            f"{rng.choice((1, 14, 27, 39, 58, 61, 106, 110, 112, 121, 175, 211, 220, 223))}."
            f"{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        )
        return (
            self._ids("access_logs", 1)[0],
            member_id,
            ip,
            rng.choice(_PATHS),
            rng.choice(_USER_AGENTS),
            _ts(at),
        )


# -- entry point -------------------------------------------------------------------------------


def seed(
    engine: Engine,
    members: int,
    *,
    files: bool,
    file_root: Path,
    seed: int = 0,
    now: datetime | None = None,
    chunk: int = CHUNK,
    progress: Callable[[int], None] | None = None,
) -> dict[str, int]:
    """Add ``members`` members (and their rows) after the highest existing member id.

    Returns rows inserted per table, plus ``files`` (files written under ``file_root``).
    ``progress`` is called with the number of members done after each committed chunk.
    """
    if members < 1:
        raise ValueError("members must be at least 1")
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    create_schema(engine)
    root = file_root.absolute() if files else None
    gen = _Generator(build_pools(seed), seed, now, root)
    with engine.connect() as conn:
        for t in demo_site.ALL_TABLES:
            gen.next_id[t.name] = (conn.execute(select(func.max(t.c.id))).scalar() or 0) + 1
    counts = {t.name: 0 for t in demo_site.ALL_TABLES}
    counts["files"] = 0
    writers: dict[str, type[_Writer]] = {"postgresql": _PgWriter, "mysql": _MysqlWriter}
    writer: _Writer = writers.get(family(engine), _SqliteWriter)(engine)
    first = gen.next_id["members"]
    gen.next_id["members"] += members
    # Generation (Python) runs in a thread while the main thread waits on the database, so on
    # PostgreSQL the client and the server work at the same time. The queue bounds memory.
    items: queue.Queue[Any] = queue.Queue(maxsize=4)
    stop = threading.Event()

    def put(item: Any) -> None:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def produce() -> None:
        try:
            done = 0
            while done < members and not stop.is_set():
                n = min(chunk, members - done)
                for item in gen.chunk(first + done, n):
                    put(item)
                done += n
                # Ids are contiguous per table, so next-1 is the highest one used so far.
                put(_ChunkDone(done, {k: v - 1 for k, v in gen.next_id.items() if v > 1}))
            put(None)
        except BaseException as exc:
            put(exc)

    producer = threading.Thread(target=produce, name="demo-seed-generator", daemon=True)
    producer.start()
    try:
        while True:
            item = items.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, _ChunkDone):
                # One transaction per chunk: an interrupted seed leaves whole chunks only.
                writer.after_chunk(item.last_ids)
                writer.commit()
                if progress:
                    progress(item.members_done)
                continue
            table, rows, written = item
            writer.write(table, _COLUMNS[table.name], rows)
            counts[table.name] += len(rows)
            counts["files"] += written
    finally:
        stop.set()
        producer.join()
        writer.close()
    return counts


@dataclass(frozen=True)
class _ChunkDone:
    members_done: int
    last_ids: dict[str, int]


def member_age_on(birth: date, today: date) -> int:
    """Full years of age (만 나이) on ``today``."""
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))
