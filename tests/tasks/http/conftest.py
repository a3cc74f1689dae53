"""Fixtures of the HTTP app's tests (the app over SQLite state and a recording enqueue)."""

from tests.tasks.test_http import client, enqueue, routing_file, sqlite_store

__all__ = ["client", "enqueue", "routing_file", "sqlite_store"]
