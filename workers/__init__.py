"""The Celery app, its configuration and the process launcher behind `lifecycle up`."""
