"""Alembic migrations of the history schema, run by `account-router db upgrade`."""
