"""The demo website's schema: 마음터심리상담센터's member site.

This is *the website's* schema, not the lifecycle's: the engine never imports it, it reads the
data map and reflects the real tables. It exists so `lifecycle demo seed` has a realistic site to
fill and tests have one to run against. Every item the privacy policy says is collected has a
column here.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

from models.base import BigId

metadata = MetaData()

members = Table(
    "members",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("login_id", String(64), nullable=False, unique=True),
    Column("password_hash", String(200), nullable=False),
    Column("password_question", String(200)),
    Column("password_answer_hash", String(200)),
    Column("name", String(100), nullable=False),
    Column("birth_date", Date),
    Column("sex", String(1)),  # 'M' / 'F'
    Column("rrn", String(14)),  # 주민등록번호, only where a law requires it
    Column("home_phone", String(20)),
    Column("home_address", String(300)),
    Column("mobile", String(20)),
    Column("email", String(200)),
    Column("job", String(100)),
    Column("company", String(100)),
    Column("department", String(100)),
    Column("title", String(100)),
    Column("hobbies", String(300)),
    Column("marital_status", String(20)),
    Column("anniversaries", JSON),  # e.g. {"결혼기념일": "2015-05-02"}
    # active | withdrawn | dormant. The site sets 'withdrawn' in the same transaction as it
    # writes the withdrawal request; the lifecycle does the rest.
    Column("status", String(16), nullable=False, server_default="active"),
    Column("joined_at", DateTime(timezone=True), nullable=False),
    Column("last_login_at", DateTime(timezone=True)),
    Column("withdrawn_at", DateTime(timezone=True)),
    Column("marketing_consent", Boolean, nullable=False, server_default="0"),
    # 민감정보 (개인정보 보호법 제23조①1호): when the member gave the separate consent to the
    # processing of their counselling records; NULL = not given. Keeping them after leaving is
    # another consent, which the site has no column for (the lifecycle's lifecycle_consents).
    Column("counselling_consent_at", DateTime(timezone=True)),
)
Index("ix_members_status", members.c.status)

# 법정대리인: members under 14 joined with a guardian's consent.
guardians = Table(
    "guardians",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("member_id", BigInteger, ForeignKey("members.id"), nullable=False, index=True),
    Column("name", String(100), nullable=False),
    Column("relation", String(20)),
    Column("mobile", String(20)),
    Column("email", String(200)),
    Column("consented_at", DateTime(timezone=True)),
)

counselling_bookings = Table(
    "counselling_bookings",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("member_id", BigInteger, ForeignKey("members.id"), nullable=False, index=True),
    Column("counsellor", String(100), nullable=False),
    Column("scheduled_at", DateTime(timezone=True), nullable=False),
    Column("status", String(16), nullable=False),  # booked | done | cancelled
    Column("request_note", Text),
)

# 민감정보 (health data): the most sensitive class.
counselling_records = Table(
    "counselling_records",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("member_id", BigInteger, ForeignKey("members.id"), nullable=False, index=True),
    # Indexed: deleting a booking checks this foreign key, which without an index is a scan
    # of every counselling record per deleted booking.
    Column("booking_id", BigInteger, ForeignKey("counselling_bookings.id"), index=True),
    Column("session_at", DateTime(timezone=True), nullable=False),
    Column("counsellor", String(100), nullable=False),
    Column("notes", Text, nullable=False),
    Column("diagnosis", String(200)),
)

contracts = Table(
    "contracts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("member_id", BigInteger, ForeignKey("members.id"), nullable=False, index=True),
    Column("kind", String(32), nullable=False),  # subscription | withdrawal | package
    Column("signed_at", DateTime(timezone=True), nullable=False),
    Column("terms_version", String(16)),
    Column("ended_at", DateTime(timezone=True)),
)

payments = Table(
    "payments",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("member_id", BigInteger, ForeignKey("members.id"), nullable=False, index=True),
    Column("amount", Integer, nullable=False),
    Column("method", String(20), nullable=False),  # card | transfer | ...
    Column("card_last4", String(4)),
    Column("payer_name", String(100)),
    Column("paid_at", DateTime(timezone=True), nullable=False),
)

tax_invoices = Table(
    "tax_invoices",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("payment_id", BigInteger, ForeignKey("payments.id"), nullable=False, index=True),
    Column("member_id", BigInteger, ForeignKey("members.id"), nullable=False, index=True),
    Column("issued_at", DateTime(timezone=True), nullable=False),
    Column("supply_amount", Integer, nullable=False),
    Column("vat", Integer, nullable=False),
    Column("buyer_name", String(100)),
    Column("buyer_reg_no", String(20)),
)

complaints = Table(
    "complaints",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("member_id", BigInteger, ForeignKey("members.id"), nullable=False, index=True),
    Column("filed_at", DateTime(timezone=True), nullable=False),
    Column("body", Text, nullable=False),
    Column("resolution", Text),
    Column("resolved_at", DateTime(timezone=True)),
)

# 표시·광고에 관한 기록
ad_displays = Table(
    "ad_displays",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("member_id", BigInteger, ForeignKey("members.id"), nullable=False, index=True),
    Column("campaign", String(100), nullable=False),
    Column("channel", String(20), nullable=False),  # sms | email | push
    Column("shown_at", DateTime(timezone=True), nullable=False),
)

# 접속기록 (통신비밀보호법: 3 months). member_id is NULL for anonymous visitors.
access_logs = Table(
    "access_logs",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("member_id", BigInteger, ForeignKey("members.id"), index=True),
    Column("ip", String(45), nullable=False),
    Column("path", String(300), nullable=False),
    Column("user_agent", String(300)),
    Column("accessed_at", DateTime(timezone=True), nullable=False, index=True),
)

# 서비스 이용기록
service_usage = Table(
    "service_usage",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("member_id", BigInteger, ForeignKey("members.id"), nullable=False, index=True),
    Column("action", String(50), nullable=False),
    Column("used_at", DateTime(timezone=True), nullable=False),
)

# Uploaded files live on disk under a managed storage root; the row holds the path.
uploaded_files = Table(
    "uploaded_files",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("member_id", BigInteger, ForeignKey("members.id"), nullable=False, index=True),
    Column("path", String(500), nullable=False),
    Column("original_name", String(300)),
    Column("kind", String(32)),  # intake_form | consent_scan | counselling_attachment
    Column("uploaded_at", DateTime(timezone=True), nullable=False),
)

ALL_TABLES = [
    members,
    guardians,
    counselling_bookings,
    counselling_records,
    contracts,
    payments,
    tax_invoices,
    complaints,
    ad_displays,
    access_logs,
    service_usage,
    uploaded_files,
]
