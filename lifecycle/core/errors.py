"""Errors that reach the operator as one line (no traceback, non-zero exit)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class LifecycleError(Exception):
    """Base for every error whose message is safe and meant for the operator.

    Messages never contain personal data: they name ids, tables, columns and settings only.
    """

    exit_code = 1


class UserError(LifecycleError):
    """Bad input: the command was refused and nothing was changed."""

    exit_code = 2


class SettingsError(LifecycleError):
    """A setting is wrong; the message is one line an operator can act on."""

    exit_code = 2


class DatabaseUnavailable(LifecycleError):
    """A database cannot be reached; the message is one actionable line."""

    exit_code = 3


class BrokerUnavailable(LifecycleError):
    """The broker or result backend cannot be reached."""

    exit_code = 3


# Errors a task retries or fails with. They live here, not beside their tasks, because Flower's
# redaction (workers/flower_hardening.py) keeps the message of every LifecycleError subclass it
# knows, and the Flower process imports this module, not the task modules.


class NotDelivered(LifecycleError):
    """A delivery attempt that did not deliver: status code or error class only, no payload."""


class JobDeferred(LifecycleError):
    """Part of a job is left for a later try; the message says how much and why (the error
    class and a safe reason such as ``connection refused 127.0.0.1:25``, never a value)."""


@contextmanager
def reading(path: Path, what: str) -> Iterator[None]:
    """Turn each way an operator-named file can fail to read into a one-line UserError that
    names the file and the reason (never its content)."""
    try:
        yield
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise UserError(f"{what} {path} is a directory") from None
    except UnicodeDecodeError:
        raise UserError(f"{what} {path} is not UTF-8 text") from None
    except OSError as exc:
        raise UserError(f"{what} {path} cannot be read ({exc.strerror})") from None
