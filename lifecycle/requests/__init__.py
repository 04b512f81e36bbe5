"""Requests from the website: the outbox it writes to (``outbox``), the one state machine every
request kind steps through (``states``), the relay that hands committed rows to the workers
(``relay``), and the use block that stops a member's data being used or provided while a
request is open (``use_block``; 처리정지 is one reason for it).

May import: ``lifecycle.core``."""
