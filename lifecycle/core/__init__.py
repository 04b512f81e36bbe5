"""Foundations every other package may use: settings, databases, errors, logging, locks, time,
queue names, job leases, the database's transient errors, and the registry of task names with
the one way to send a job (``dispatch``). No Celery here: the job runtime is ``workers``.

May import: ``models`` and third-party libraries only; never another ``lifecycle`` package."""
