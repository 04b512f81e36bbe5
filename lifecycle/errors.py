"""Errors that reach the operator as one line (no traceback, non-zero exit)."""

from __future__ import annotations


class LifecycleError(Exception):
    """Base for every error whose message is safe and meant for the operator.

    Messages never contain personal data: they name ids, tables, columns and settings only.
    """

    exit_code = 1


class UserError(LifecycleError):
    """Bad input: the command was refused and nothing was changed."""

    exit_code = 2


class BrokerUnavailable(LifecycleError):
    exit_code = 3
