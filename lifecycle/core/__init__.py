"""Foundations every other package may use: settings, databases, errors, logging, task-argument
rules, locks, time, the embedded broker transport, and the one way to send a job (``dispatch``).

May import: ``models`` and third-party libraries only; never another ``lifecycle`` package."""
