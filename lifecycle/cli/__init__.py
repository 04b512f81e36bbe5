"""The `lifecycle` console script: parsing, one-line errors and ``--wait``; no rules of its own.

Command modules import the capability packages inside each command, not at module top: every
invocation registers all commands, and importing the engine, Celery and SQLAlchemy for each of
them would double the start-up time of `lifecycle --help` or `lifecycle status` (measured
0.56 s vs 2.1 s). Everything below the CLI imports at module top.
"""
