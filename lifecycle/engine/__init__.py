"""The lifecycle engine: withdrawal, purpose-end sweep, encrypted archive moves, purge.

Pure-ish logic on SQLAlchemy engines and sessions, no Celery (the task wrappers in ``tasks/``
are thin). Entry points:

- :func:`lifecycle.engine.context.get_context` - data map + engines + reflected tables
- :func:`lifecycle.engine.mover.move` - archive retained parts, destroy the rest, ledger
- :func:`lifecycle.engine.withdraw.carry_out` / ``submit_withdrawal`` - one withdrawal request
- :func:`lifecycle.engine.sweep.run_sweep` / ``run_batch`` - the nightly sweep
- :func:`lifecycle.engine.preview.sweep_preview` - ``--dry-run``
- :func:`lifecycle.engine.purge.run_purge` / ``purge_preview`` - crypto-shredding purge
- :func:`lifecycle.engine.outbox.flush_ledger_outbox` - destruction entries into the ledger
"""
