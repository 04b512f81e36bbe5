"""Individual notices to members (policy change, request completed, dormancy): creation and fan-out
(``members``), one batch's sending (``sending``), the Redis journal of what went out
(``journal``) and settling rows left in doubt (``reconcile``).

May import: ``lifecycle.core``, ``lifecycle.datamap``, ``lifecycle.channels``,
``lifecycle.requests``."""
