"""The engine: moving rows out of the website's database when their purpose ends.

Owns the engine context (data map + engines + reflected tables, ``context``), row selection
(``selection``), the mover that archives what the law keeps and destroys the rest (``mover``),
the nightly sweep (``sweep``), its dry run (``preview``), the crypto-shredding purge of expired
archive buckets (``purge``) and the hand-off of parked destruction entries to the ledger
(``ledger_outbox``), and clearing a flagged unique identifier (고유식별정보) in live rows
(``identifiers``). No Celery: ``tasks/`` wraps these.

May import: ``lifecycle.core``, ``lifecycle.datamap``, ``lifecycle.vault``, ``lifecycle.shred``.
"""
