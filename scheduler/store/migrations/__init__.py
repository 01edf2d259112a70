"""Alembic environment and revisions for the store's schema (run by scheduler.store.migrate)."""
