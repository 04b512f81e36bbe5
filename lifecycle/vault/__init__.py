"""The archive database's protected parts: envelope encryption (``crypto``), wrapped data keys and
crypto-shredding (``keystore``), and the hash-chained destruction ledger (``ledger``, ``chain``).

May import: ``lifecycle.core``."""
