"""SQLAlchemy models: the lifecycle's own tables (primary and archive DBs) and the demo site."""
