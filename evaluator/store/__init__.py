"""Persistence: every table, the `Store`, the schema and its Alembic migrations."""
