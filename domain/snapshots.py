"""Pruning a plan's old snapshots.

The library keeps every snapshot it takes; a plan that lives to 10,000 events would
leave 100 of them. Only the latest is ever read to open the plan (a plan at an earlier
version is replayed from its events, `PlanService.plan_record`), so after taking one
`PlanService` keeps the latest `KEPT_SNAPSHOTS` and deletes the rest.
"""

from __future__ import annotations

import uuid
from typing import Any

from eventsourcing.sqlite import SQLiteAggregateRecorder

KEPT_SNAPSHOTS = 2
"""The new snapshot and the one before it (a reader that picked it a moment ago still finds it)."""


def prune_snapshots(recorder: Any, plan_id: uuid.UUID, keep: int = KEPT_SNAPSHOTS) -> None:
    """Delete all but the latest `keep` snapshots of one plan, on SQLite or PostgreSQL."""
    if isinstance(recorder, SQLiteAggregateRecorder):
        _prune_sqlite(recorder, plan_id, keep)
    else:
        _prune_postgres(recorder, plan_id, keep)


def _prune_sqlite(recorder: SQLiteAggregateRecorder, plan_id: uuid.UUID, keep: int) -> None:
    table = recorder.events_table_name
    with recorder.datastore.transaction(commit=True) as c:
        c.execute(
            f"DELETE FROM {table} WHERE originator_id = ? AND originator_version < ("
            f"SELECT originator_version FROM {table} WHERE originator_id = ? "
            "ORDER BY originator_version DESC LIMIT 1 OFFSET ?)",
            (plan_id.hex, plan_id.hex, keep - 1),
        )


def _prune_postgres(recorder: Any, plan_id: uuid.UUID, keep: int) -> None:
    from psycopg.sql import SQL, Identifier

    statement = SQL(
        "DELETE FROM {schema}.{table} WHERE originator_id = %s AND originator_version < ("
        "SELECT originator_version FROM {schema}.{table} WHERE originator_id = %s "
        "ORDER BY originator_version DESC LIMIT 1 OFFSET %s)"
    ).format(schema=Identifier(recorder.datastore.schema), table=Identifier(recorder.events_table_name))
    with recorder.datastore.transaction(commit=True) as curs:
        curs.execute(statement, (plan_id, plan_id, keep - 1))
