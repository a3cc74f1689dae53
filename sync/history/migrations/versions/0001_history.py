"""The decision history: labels, traces, decisions and events (sync/history/schema.py).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Spelled out rather than created from schema.metadata: a migration is a fixed step, and the
# metadata moves on with later revisions.
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "history_labels",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("digest", sa.Text, nullable=False, unique=True),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "history_traces",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("digest", sa.Text, nullable=False, unique=True),
        sa.Column("body", sa.Text, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "history_decisions",
        # Fixed-width columns first, widest first: PostgreSQL aligns each column, so this order
        # wastes no padding bytes.
        sa.Column("id", _ID, primary_key=True, autoincrement=False),
        sa.Column("created_at", sa.BigInteger),
        sa.Column("decided_at", sa.BigInteger),
        sa.Column("written_at", sa.BigInteger),
        sa.Column("crm", sa.Integer, nullable=False),
        sa.Column("object", sa.Integer, nullable=False),
        sa.Column("owner", sa.Integer),
        sa.Column("previous_owner", sa.Integer),
        sa.Column("owner_crm_id", sa.Integer),
        sa.Column("pool", sa.Integer),
        sa.Column("rule", sa.Integer),
        sa.Column("trigger", sa.Integer, nullable=False),
        sa.Column("trace_id", sa.Integer, nullable=False),
        sa.Column("outcome", sa.SmallInteger, nullable=False),
        sa.Column("record_id", sa.Text, nullable=False),
        sa.Column("write_error", sa.Text),
        sqlite_autoincrement=True,
    )
    op.create_index("history_decisions_by_record", "history_decisions", ["record_id"],
                    postgresql_using="hash")
    op.create_index("history_decisions_by_time", "history_decisions", ["decided_at"])
    op.create_index("history_decisions_by_owner", "history_decisions", ["owner", "decided_at"])
    op.create_table(
        "history_events",
        sa.Column("id", _ID, primary_key=True, autoincrement=False),
        sa.Column("decision_id", sa.BigInteger),
        sa.Column("record_id", sa.Text, nullable=False),
        sa.Column("crm", sa.Integer, nullable=False),
        sa.Column("object", sa.Integer, nullable=False),
        sa.Column("kind", sa.Integer, nullable=False),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("history_events_by_decision", "history_events", ["decision_id"])
    op.create_index("history_events_by_time", "history_events", ["at"])


def downgrade() -> None:
    for table in ("history_events", "history_decisions", "history_traces", "history_labels"):
        op.drop_table(table)
