"""The job runtime: everything that talks to Celery, kombu or RedBeat, in one package.

The Celery app and its configuration (``app``, ``config``), the task wrappers (``tasks``), beat
(``schedules``), the process launcher behind `lifecycle up` (``launcher``), Flower hardening,
Celery's logging signals (``logsignals``), the id-only task-argument rules (``taskargs``), the
embedded broker transport (``fsbroker``), broker reachability (``broker``), the bare app that
only talks to the workers (``control``, for `lifecycle status`'s ping) and the broker's transient
errors (``transient``). Task names come from the registry in
``lifecycle.core.dispatch``; domain code sends jobs through it and never imports this package.

May import: every ``lifecycle`` package except ``lifecycle.cli``, and ``models``."""
