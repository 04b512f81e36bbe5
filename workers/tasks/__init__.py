"""Celery task wrappers: thin shells around the pure logic in `lifecycle`, carrying ids only."""
