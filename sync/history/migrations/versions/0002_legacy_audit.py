"""Move a state file's own audit trail (state schema 4: `decisions` + `bodies`) into the history.

Revision ID: 0002
Revises: 0001

Embedded state files written before the history existed kept their audit in two tables of the
state file; this copies every row into `history_decisions` under its old id (so the rowid
sequence continues) and drops the old tables. A database without them (PostgreSQL, a new
file) is left as it is.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import sqlite

from sync.history import codec
from sync.history.schema import decisions as history_decisions
from sync.history.store import decision_params, ensure_labels, ensure_traces
from sync.models import Decision, Outcome, TraceStep

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_BATCH = 5000
_NO_MATCH = ("no_match", "conditions not met")


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name != "sqlite":
        return
    inspector = sa.inspect(conn)
    tables = set(inspector.get_table_names())
    if "decisions" not in tables:
        return
    columns = {c["name"] for c in inspector.get_columns("decisions")}
    if "body" not in columns:
        return  # not the state file's audit table: leave it alone
    if "bodies" in tables and "body_id" in columns:
        body, join = ("COALESCE(bodies.body, decisions.body)",
                      "LEFT JOIN bodies ON bodies.id = decisions.body_id")
    else:  # before state schema 4 every body was inline
        body, join = "decisions.body", ""
    labels: dict[tuple[str, str], int] = {}
    traces: dict[str, int] = {}
    insert = sqlite.insert(history_decisions).on_conflict_do_nothing(index_elements=["id"])
    last = -1
    while True:
        rows = conn.exec_driver_sql(
            "SELECT decisions.id, record_id, crm, object, owner, pool, outcome, " + body +
            " FROM decisions " + join + " WHERE decisions.id > ? ORDER BY decisions.id LIMIT ?",
            (last, _BATCH),
        ).all()
        if not rows:
            break
        encoded = [(int(r[0]), codec.encode(_legacy_decision(*r[1:]))) for r in rows]
        ensure_labels(conn, {(kind, getattr(e, name)) for _, e in encoded
                             for name, kind in codec.LABEL_FIELDS
                             if getattr(e, name) is not None}, labels, sqlite.insert)
        ensure_traces(conn, {e.body for _, e in encoded}, traces, sqlite.insert)
        conn.execute(insert, [decision_params(i, e, labels, traces) for i, e in encoded])
        last = int(rows[-1][0])
    if "bodies" in tables:
        op.drop_table("bodies")
    op.drop_table("decisions")


def downgrade() -> None:
    # The old tables are not rebuilt: the history holds every row they held.
    pass


def _legacy_decision(record_id: str, crm: str, object: str, owner: str | None,
                     pool: str | None, outcome: str, body: str) -> Decision:
    """A row of the old audit table, in either body form it ever had (sync/state/sqlite.py
    before the history: the full `to_dict` JSON, or the short keys p/c/r/m/t/g/ca/d/w/e)."""
    try:
        data: dict[str, Any] = json.loads(body)
        if not isinstance(data, dict):
            raise ValueError("not an object")
    except ValueError:
        # Never seen, never dropped: an unreadable body becomes the reason, verbatim.
        return Decision(record_id=record_id, object=object, crm=crm, outcome=Outcome(outcome),
                        owner=owner, pool=pool, reason=body)
    if "record_id" in data:
        return Decision.from_dict(data)
    trace = tuple(TraceStep(s, *_NO_MATCH) if isinstance(s, str) else TraceStep(*s)
                  for s in data.get("t", ()))
    rule = data.get("r")
    reason = data["m"] if "m" in data else f"rule {rule}: {trace[-1].detail}" if trace else ""
    created, decided, written = (data.get(k) for k in ("ca", "d", "w"))
    return Decision(
        record_id=record_id, object=object, crm=crm, outcome=Outcome(outcome),
        previous_owner=data.get("p"), owner=owner, owner_crm_id=data.get("c"), rule=rule,
        reason=reason, trace=trace, trigger=data.get("g", "file"), pool=pool,
        created_at=None if created is None else datetime.fromisoformat(created),
        decided_at=None if decided is None else datetime.fromisoformat(decided),
        written_at=None if written is None else datetime.fromisoformat(written),
        write_error=data.get("e"),
    )
