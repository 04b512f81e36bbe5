"""Secure file deletion: the overwrite itself (``shredder``, pure), filesystem trust checks
(``fsinfo``), and shred jobs that carry paths to the host holding the files (``jobs``).

May import: ``lifecycle.core``, ``lifecycle.vault``."""
