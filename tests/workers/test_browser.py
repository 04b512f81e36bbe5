"""A real browser: headless Chromium logs in to Flower and sees the jobs, redacted.

Skipped when Chromium is absent (.ci/run installs Debian's `chromium`). No driver library is
needed: Chromium's own ``--dump-dom`` gives the page after its scripts ran (the task table is
filled by an XHR), ``--screenshot`` the picture. The login goes in the URL (user:password@),
which Chromium uses for HTTP basic auth and reuses for the page's own requests.
"""

from __future__ import annotations

import html
import shutil
import struct
import subprocess
import time
import zlib
from pathlib import Path

import pytest

from tests.helpers import LifecycleEnv, free_port, wait_until
from tests.upstack import UpStack, start_up, submit_withdrawal

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FOREIGN_EMAIL = "park.seoyeon.private@example.com"
# Beat's housekeeping ticks (schedules/ticker.py) except the daily lease pruning.
TICKS = (
    "relay",
    "watchdog",
    "notify-resend-due",
    "shred-resend-pending",
    "relay-stale",
    "notice-resume-stale",
    "rights-answer-pending",
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.integration,  # `lifecycle up`: worker, beat and Flower's HTTP server
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is not installed"),
]


def _chromium(tmp: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    profile = tmp / f"profile-{time.monotonic_ns()}"
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            # Let the page's XHR (the task table) finish before dumping or shooting.
            "--virtual-time-budget=10000",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _dom(stack: UpStack, tmp: Path, path: str, password: str | None = None) -> str:
    url = f"http://{stack.user}:{password or stack.password}@127.0.0.1:{stack.port}{path}"
    r = _chromium(tmp, "--dump-dom", url)
    assert r.returncode == 0, r.stderr[-2000:]
    return html.unescape(r.stdout)


def _png_is_a_real_picture(png: Path) -> tuple[int, int, int]:
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    pos, idat = 8, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    distinct = len(set(zlib.decompress(idat)))
    return width, height, distinct


def test_flower_in_headless_chromium(embedded_env: LifecycleEnv, tmp_path: Path) -> None:
    from workers.app import app

    # Housekeeping 20 times faster, so every tick runs within seconds (relay-stale, the
    # slowest below, every 15 s). Beat logs each tick at DEBUG.
    embedded_env.vars["LIFECYCLE_TICK_SCALE"] = "0.05"
    stack = start_up(embedded_env, free_port(), tmp_path, loglevel="DEBUG")
    # Flower answers from here on: what the ticks do after this point is what it would list.
    marks = [len(p.read_text(errors="replace")) for p in (stack.out, stack.err)]

    def ticks_since_flower() -> str:
        return "".join(
            p.read_text(errors="replace")[m:]
            for p, m in zip((stack.out, stack.err), marks, strict=True)
        )

    try:
        request_id = submit_withdrawal(77)
        assert embedded_env.run("ping", "--wait", timeout=120).returncode == 0
        app.send_task("foreign.echo", args=[1], argsrepr=f"('{FOREIGN_EMAIL}',)", queue="nobody")
        stack.wait_task(lambda t: t["name"] == "lifecycle.withdraw")
        stack.wait_task(lambda t: t["name"] == "foreign.echo")

        # Every housekeeping tick ran at least once while Flower was watching.
        wait_until(
            lambda: all(f"housekeeping tick {t}:" in ticks_since_flower() for t in TICKS),
            60,
            "every housekeeping tick run while Flower listens",
        )
        page = _dom(stack, tmp_path, "/tasks")
        for name in ("lifecycle.withdraw", "lifecycle.ping"):
            assert name in page, f"{name} not listed on Flower's task page"
        # The relay ran (it dispatched the withdrawal) yet no housekeeping tick is listed.
        for name in ("lifecycle.relay", "resend_due", "resend_pending", "resume_stale"):
            assert name not in page, f"housekeeping tick {name} listed on Flower's task page"
        assert f"request={request_id}" in page
        assert "<redacted>" in page
        assert FOREIGN_EMAIL not in page

        denied = _dom(stack, tmp_path, "/tasks", password="wrong-password")
        assert "lifecycle." not in denied

        shot = tmp_path / "flower-tasks.png"
        url = f"http://{stack.user}:{stack.password}@127.0.0.1:{stack.port}/tasks"
        r = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1400,900", url)
        assert r.returncode == 0, r.stderr[-2000:]
    finally:
        assert stack.stop() == 0
    assert shot.exists()
    width, height, distinct = _png_is_a_real_picture(shot)
    assert (width, height) == (1400, 900)
    assert shot.stat().st_size > 20_000 and distinct > 50, "the screenshot looks blank"
