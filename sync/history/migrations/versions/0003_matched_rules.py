"""Each decision's matched rules: `history_decisions.matched`, a label of the set's names.

Revision ID: 0003
Revises: 0002

The rules whose `when` a record matched (all of them, not only up to the winner) are what the
dashboard's overlap page counts (docs/operations.md#territory-overlap). A label id: a run has a
handful of distinct sets, stored once in `history_labels` (kind `matched`). Rows decided
before this revision keep NULL there, and the page counts them apart.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: PostgreSQL adds it without rewriting the table, SQLite in place.
    op.add_column("history_decisions", sa.Column("matched", sa.Integer))


def downgrade() -> None:
    with op.batch_alter_table("history_decisions") as batch:
        batch.drop_column("matched")
