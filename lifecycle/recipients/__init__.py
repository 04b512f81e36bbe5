"""제3자 제공: the recipients (third parties) that received personal data and the provision log
(``provisions``),
deliveries of correction/deletion notices to them with retries (``deliveries``,
``retry_schedule``).

May import: ``lifecycle.core``, ``lifecycle.datamap``, ``lifecycle.channels``, ``lifecycle.vault``,
``lifecycle.requests``."""
