"""The console script `lifecycle`: the website's `lifecycle withdraw MEMBER_ID` (``submit_plan``)
and a plain `lifecycle shred PATH... --wait` (``shred_plan``) the short way, every other command
line through the full command-line interface (``lifecycle.cli.main``)."""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from typing import NoReturn


def main() -> NoReturn:
    argv = sys.argv[1:]
    # Only the website's own command line pays for the check; the module is small.
    if "withdraw" in argv[:3]:
        from lifecycle.cli.submit_plan import run

        code = run(argv)
        if code is not None:
            sys.stdout.flush()
            raise SystemExit(code)
    elif "shred" in argv[:3]:
        from lifecycle.cli.shred_plan import run as run_shred

        code = run_shred(argv)
        if code is not None:
            _leave(code)
    # Imported here: Typer and every command's module are what the short way saves.
    from lifecycle.cli.main import main as full

    full()


def _leave(code: int) -> NoReturn:
    """Exit as the full command does (``lifecycle.cli.main._leave``): the exit handlers run,
    Python's teardown of every module does not (after `shred --wait` it took 0.09 s)."""
    main_thread = threading.main_thread()
    if any(t is not main_thread and not t.daemon and t.is_alive() for t in threading.enumerate()):
        raise SystemExit(code)  # a thread that must finish: Python's exit waits for it
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
