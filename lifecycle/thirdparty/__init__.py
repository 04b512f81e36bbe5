"""Third parties that received personal data: recipients and the provision log (``recipients``),
deliveries of correction/deletion notices to them with retries (``deliveries``,
``retry_schedule``).

May import: ``lifecycle.core``, ``lifecycle.datamap``, ``lifecycle.channels``, ``lifecycle.vault``,
``lifecycle.requests``."""
