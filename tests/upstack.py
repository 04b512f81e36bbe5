"""Run `lifecycle up` (worker, beat, Flower) as a user would, for the Flower and browser tests."""

from __future__ import annotations

import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import LifecycleEnv, wait_until


@dataclass
class UpStack:
    proc: subprocess.Popen[bytes]
    out: Path
    err: Path
    port: int
    user: str
    password: str

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, auth: tuple[str, str] | None = None, **kw: Any) -> httpx.Response:
        auth = auth if auth is not None else (self.user, self.password)
        return httpx.get(f"{self.base}{path}", auth=auth, timeout=10, **kw)

    def tasks(self) -> dict[str, dict[str, Any]]:
        r = self.get("/api/tasks")
        r.raise_for_status()
        return r.json()

    def wait_task(self, pred: Any, timeout: float = 60) -> dict[str, Any]:
        """The first task (as Flower's API shows it) for which ``pred(task)`` holds."""
        seen: dict[str, Any] = {}

        def match() -> dict[str, Any] | None:
            nonlocal seen
            seen = self.tasks()
            return next((task for task in seen.values() if pred(task)), None)

        try:
            found: dict[str, Any] = wait_until(match, timeout, interval=0.5)
        except TimeoutError:
            raise AssertionError(
                f"no matching task in Flower after {timeout}s: {list(seen.values())}"
            ) from None
        return found

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(90)

    def logs(self) -> str:
        return self.out.read_text(errors="replace") + self.err.read_text(errors="replace")


def wait_text(path: Path, needle: str, proc: subprocess.Popen[bytes], timeout: float) -> str:

    def seen() -> str | None:
        text = path.read_text(errors="replace") if path.exists() else ""
        if needle in text:
            return text
        if proc.poll() is not None:
            raise AssertionError(f"lifecycle up exited early:\n{text[-3000:]}")
        return None

    try:
        text: str = wait_until(seen, timeout, interval=0.2)
    except TimeoutError:
        raise AssertionError(
            f"{needle!r} not seen in {timeout}s:\n{path.read_text()[-3000:]}"
        ) from None
    return text


def start_up(
    env: LifecycleEnv, port: int, tmp: Path, tag: str = "up", loglevel: str = "INFO"
) -> UpStack:
    out, err = tmp / f"{tag}.out", tmp / f"{tag}.err"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lifecycle.cli.main", "up", "-c", "1", "--loglevel", loglevel],
        env=env.environ(LIFECYCLE_FLOWER_PORT=str(port)),
        cwd=env.var_dir.parent,
        stdout=out.open("wb"),
        stderr=err.open("wb"),
        start_new_session=True,
    )
    try:
        banner = wait_text(out, "Flower: http://127.0.0.1:", proc, 90)
        login = banner.split("login: ", 1)[1].splitlines()[0]
        user, password = (x.strip() for x in login.split(" / "))
        wait_text(err, " ready.", proc, 90)
        stack = UpStack(proc, out, err, port, user, password)

        def answers() -> bool:
            try:
                return stack.get("/api/workers").status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(answers, 30, "Flower answering /api/workers", interval=0.3)
        return stack
    except BaseException:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(90)
        raise


def submit_withdrawal(member_id: int) -> int:
    """What the website does: write the request row; the relay (beat, every 5 s) sends it."""
    from lifecycle.core import db
    from lifecycle.requests.outbox import submit

    with db.session("primary") as s:
        return submit(s, "withdrawal", member_id)
