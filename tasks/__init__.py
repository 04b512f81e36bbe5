"""Celery task wrappers: thin shells around the pure logic in `lifecycle`, carrying ids only.

Each task is declared with its name from ``lifecycle.core.dispatch`` and the conventions of
``base.LifecycleTask`` (ids in, counts out, safe failures, leases)."""
