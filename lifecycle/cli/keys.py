"""`lifecycle keys rotate|status`: the archive's master key.

Rotation procedure (the master key never lives in a database):

1. Write a new key: ``python -c "import base64,os;print(base64.b64encode(os.urandom(32)).decode())"
   > new.key`` and ``chmod 600 new.key``.
2. Stop the workers and beat that use the archive (a worker still on the old key cannot read
   keys already re-wrapped; its jobs fail and are retried later, nothing is lost).
3. ``lifecycle keys rotate --new-key-file new.key``: re-wraps every live data key and the
   pseudonym key; archived rows are not touched (their data keys do not change). Interrupted?
   Run it again: keys already under the new key are skipped.
4. Point ``LIFECYCLE_MASTER_KEY_FILE`` at ``new.key`` everywhere and start the workers.
   If anything created keys under the old master in between, run
   ``lifecycle keys rotate --old-key-file old.key --new-key-file new.key`` once more.
5. ``lifecycle keys status`` shows every live key under the new id; then destroy ``old.key``
   (and its backups): from then on old database backups can no longer be unwrapped with it.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Annotated

import typer

from lifecycle.cli.app import app
from lifecycle.core.errors import LifecycleError, UserError, reading

keys_app = typer.Typer(help="Archive master key: rotation and status.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


class KeysMismatch(LifecycleError):
    """Live keys that the configured master key cannot unwrap."""

    exit_code = 1


def read_key_file(path: Path, option: str) -> bytes:
    """A 32-byte key from a base64 file, or a one-line UserError saying what is wrong."""
    with reading(path, option):
        raw = path.read_bytes().strip()
    try:
        key = base64.b64decode(raw, validate=True)
    except ValueError:
        raise UserError(f"{option} {path} is not base64 (expected 32 random bytes)") from None
    if len(key) != 32:
        raise UserError(f"{option} {path} must hold 32 bytes (base64), it holds {len(key)}")
    return key


@keys_app.command("rotate")
def rotate_cmd(
    new_key_file: Annotated[
        Path,
        typer.Option("--new-key-file", help="File with the new master key (base64 of 32 bytes)."),
    ],
    old_key_file: Annotated[
        Path | None,
        typer.Option(
            "--old-key-file",
            help="The key to rotate away from (default: the configured master key).",
        ),
    ] = None,
) -> None:
    """Re-wrap every live data key under a new master key (resumable; re-runs are no-ops).

    Afterwards point LIFECYCLE_MASTER_KEY_FILE at the new file and restart the workers.
    """
    from lifecycle.core.db import check_reachable
    from lifecycle.core.settings import get_settings
    from lifecycle.vault import crypto, keystore

    new = read_key_file(new_key_file, "--new-key-file")
    if old_key_file is not None:
        old = read_key_file(old_key_file, "--old-key-file")
    else:
        old = get_settings().master_key_bytes()
    check_reachable("archive")
    result = keystore.rotate_master(old, new)
    from lifecycle.cli.operator import record

    # Changes the protection of every archived record: the handler access log names who did it.
    record("change", "keys rotate", details={
        "rewrapped": result.rewrapped, "already_new": result.already_new,
        "destroyed_skipped": result.destroyed, "new_key_id": result.new_key_id,
    })  # fmt: skip
    typer.echo(
        f"re-wrapped {result.rewrapped} keys under master key {result.new_key_id} "
        f"({result.already_new} already were, {result.destroyed} destroyed keys skipped)"
    )
    if crypto.master_key_id(get_settings().master_key_bytes()) != result.new_key_id:
        typer.echo(
            f"next: set LIFECYCLE_MASTER_KEY_FILE={new_key_file.absolute()} and restart workers"
        )


@keys_app.command("init")
def init_cmd(
    key_file: Annotated[
        Path | None,
        typer.Option("--key-file", help="Where to write it (default: LIFECYCLE_MASTER_KEY_FILE)."),
    ] = None,
) -> None:
    """Create the master key of a brand-new install (mode 0600); refuses an existing file and
    an archive that already holds keys (they are under another key: find that key file)."""
    from lifecycle.core.db import check_reachable, session
    from lifecycle.core.settings import create_master_key_file, get_settings
    from lifecycle.vault import keystore

    s = get_settings()
    path = key_file or s.master_key_file
    if path is None:
        raise UserError("LIFECYCLE_MASTER_KEY is set: the key is given literally, not a file")
    if path.exists():
        raise UserError(f"{path} already exists; a master key is never overwritten")
    check_reachable("archive")
    with session("archive") as a:
        census = keystore.key_census(a)
    if any(census.values()):
        raise UserError(
            f"the archive DB already holds {sum(census.values())} keys wrapped under "
            f"{', '.join(sorted(census))}: a new master key could not read them; point "
            "LIFECYCLE_MASTER_KEY_FILE at this install's original key file instead"
        )
    try:
        # Owner-only, like the key: a new install's var/ or secrets/ folder often does not exist.
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        create_master_key_file(path)
    except OSError as exc:
        raise UserError(f"cannot write {path} ({exc.strerror})") from None
    typer.echo(f"created master key {path} (mode 0600); back it up apart from the databases")


@keys_app.command("status")
def status_cmd() -> None:
    """Live wrapped keys per master key id (no key material is shown); exits 1 when any live
    key is not under the configured master key, saying what to do."""
    from sqlalchemy import func, select

    from lifecycle.core.db import check_reachable, session
    from lifecycle.core.settings import get_settings
    from lifecycle.vault import crypto, keystore
    from models.archive import DataKey

    current = crypto.master_key_id(get_settings().master_key_bytes())
    check_reachable("archive")
    with session("archive") as s:
        census = keystore.key_census(s)
        destroyed = s.execute(
            select(func.count()).select_from(DataKey).where(DataKey.wrapped_key.is_(None))
        ).scalar_one()
    typer.echo(f"configured master key: {current}")
    for mid, n in sorted(census.items()):
        mark = " (configured)" if mid == current else " (NOT the configured key)"
        typer.echo(f"  {n} live keys under {mid}{mark}")
    typer.echo(f"  {destroyed} destroyed data keys")
    advice = keystore.mismatch_advice(census, current)
    if advice:
        raise KeysMismatch(advice)
