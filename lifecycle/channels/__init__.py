"""How a message leaves: SMTP (``mailer``), signed webhooks (``webhooks``), Korean templates
(``templates``) and the shared send-rate limit (``ratelimit``). No request logic.

May import: ``lifecycle.core``."""
