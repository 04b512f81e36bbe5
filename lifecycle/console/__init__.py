"""The privacy office's web console (Korean): accounts and their roles, login with a password and
TOTP or through the organisation's OIDC provider, and the pages through which the privacy
officer, handlers and auditors see and act on requests, holds, incidents, the ledger, the access
log and the data-map findings.

It owns no rule of its own: every action calls the domain function the CLI calls (intake,
deadlines, refusal and answer, holds, incidents, the ledger, the access log) and writes the
same ledger and access-log entries, naming the logged-in person. It never imports Celery:
requests reach the workers through the relay, as the CLI's do.

- ``accounts``: console accounts (Argon2id password hashes, encrypted TOTP secrets, roles);
  used by `lifecycle console user ...` and by the login.
- ``roles``: what each role may do, checked on the server for every action.
- ``common``: what the page modules share (the logged-in person, the role check, the access-log
  entry of a page or action, the login guard).
- ``web``: the Flask application (pages, forms with CSRF tokens, login rate limit, sessions).
- ``oidc``: login through the organisation's OpenID Connect provider (a blueprint).
- ``holds_actions``, ``incident_actions``: the officer's hold and incident actions (blueprints).
"""
