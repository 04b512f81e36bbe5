"""Individual notices to members (policy change, request completed, dormancy): creation and fan-out
(``members``), one batch's sending (``sending``), the Redis journal of what went out
(``journal``), settling rows left in doubt (``reconcile``) and destroying captured addresses
kept too long (``addresses``).

May import: ``lifecycle.core``, ``lifecycle.datamap``, ``lifecycle.channels``,
``lifecycle.requests``, ``lifecycle.vault`` (the ledger)."""
