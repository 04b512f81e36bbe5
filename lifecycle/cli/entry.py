"""The console script `lifecycle`: the website's `lifecycle withdraw MEMBER_ID` the short way
(``submit_plan``), every other command line through the full command-line interface
(``lifecycle.cli.main``)."""

from __future__ import annotations

import sys
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
    # Imported here: Typer and every command's module are what the short way saves.
    from lifecycle.cli.main import main as full

    full()


if __name__ == "__main__":
    main()
