"""Alembic environment: migrates the connection `History.upgrade` hands over (no ini file)."""

from __future__ import annotations

import logging

from alembic import context

from sync.history.schema import metadata

# No logging.config.fileConfig and no handlers: the application (or pytest) owns logging, and a
# handler added here would outlive the stream it was given. Alembic's INFO lines are noise.
logging.getLogger("alembic").setLevel(logging.WARNING)

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `account-router db upgrade` "
                       "(sync.history.History.upgrade), which passes the connection")

# transactional_ddl: every migration runs inside the caller's transaction (SQLite and
# PostgreSQL both roll DDL back), so an interrupted upgrade leaves the previous schema whole.
context.configure(connection=connection, target_metadata=metadata, transactional_ddl=True)
with context.begin_transaction():
    context.run_migrations()
