"""Requests from the website: the outbox it writes to (``outbox``), the one state machine every
request kind steps through (``states``), the relay that hands committed rows to the workers
(``relay``), and 처리정지 (``restriction``).

May import: ``lifecycle.core``."""
