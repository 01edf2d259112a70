"""Durable state: jobs, queues, allocations, events and audit (SQLAlchemy 2; SQLite or PostgreSQL)."""
