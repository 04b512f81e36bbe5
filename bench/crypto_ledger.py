"""Throughput of archive encryption and ledger verification (pure, no database).

    python bench/crypto_ledger.py [ROWS]

Prints rows/s of ``RecordCipher.encrypt_many`` next to a baseline measured in the same run:
``json.dumps`` of the same rows, the serialisation the sweep does anyway. The ratio says how
much encryption adds on top of it. Then entries/s of ``verify_chain``, which bounds how long
``lifecycle ledger verify`` takes on a large ledger (database fetch time comes on top).
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime

from lifecycle.vault import crypto
from lifecycle.vault.chain import GENESIS_HASH, entry_hash, verify_chain


def _rows(n: int) -> list[dict]:
    return [
        {
            "id": i,
            "member_id": i // 3,
            "amount": 39000 + i % 1000,
            "method": "card",
            "paid_at": "2026-01-01T03:00:00+09:00",
            "memo": "정기 상담 10회권 결제" * 2,
        }
        for i in range(n)
    ]


def bench_encrypt(n: int) -> None:
    rows = _rows(n)
    t0 = time.perf_counter()
    payloads = [json.dumps(r, ensure_ascii=False).encode() for r in rows]
    base = time.perf_counter() - t0

    cipher = crypto.RecordCipher(crypto.new_data_key())
    t0 = time.perf_counter()
    items = [(p, crypto.record_aad("payments", str(i), "payment")) for i, p in enumerate(payloads)]
    cipher.encrypt_many(items)
    enc = time.perf_counter() - t0
    print(f"serialise (baseline): {n / base:12,.0f} rows/s")
    print(f"aad + encrypt_many:   {n / enc:12,.0f} rows/s   ratio {base / enc:.2f}")


def bench_verify(n: int) -> None:
    entries = []
    prev = GENESIS_HASH
    for i in range(1, n + 1):
        e = {
            "seq": i,
            "occurred_at": datetime.now(UTC),
            "action": "archive",
            "categories": ["payment"],
            "tables": ["payments"],
            "subjects": 1000,
            "rows": 3000,
            "reason": "회원탈퇴",
            "legal_basis": "전자상거래법",
            "method": "AES-256-GCM",
            "actor": "lifecycle.sweep",
            "task_id": "x" * 36,
            "request_id": None,
            "subject_ref": None,
            "details": {"bucket": "2031-01-01"},
            "dedup_key": f"k{i}",
            "prev_hash": prev,
        }
        e["hash"] = prev = entry_hash(prev, e)
        entries.append(e)
    t0 = time.perf_counter()
    res = verify_chain(entries, head=(n, prev))
    dt = time.perf_counter() - t0
    assert res.ok
    print(f"verify_chain:         {n / dt:12,.0f} entries/s")


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    bench_encrypt(n)
    bench_verify(n // 4)
