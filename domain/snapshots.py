"""A plan's snapshots: written in the background, pruned to the latest two.

Every `SNAPSHOT_INTERVAL`th event of a plan, `PlanService` takes a snapshot of the
plan the command has just saved. The library would re-read that plan from the store
(latest snapshot and the 100 events after it), encode, encrypt and write it inside the
command: one command in a hundred took tens of milliseconds more, most of a long plan's
mean append cost. `SnapshotWriter` writes them on one thread of its own instead, while
the command is answered.

The library keeps every snapshot it takes; a plan that lives to 10,000 events would
leave 100 of them. Only the latest is ever read to open the plan (a plan at an earlier
version is replayed from its events, `PlanService.plan_record`), so after writing one
`PlanService` keeps the latest `KEPT_SNAPSHOTS` and deletes the rest.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from eventsourcing.sqlite import SQLiteAggregateRecorder

logger = logging.getLogger(__name__)

KEPT_SNAPSHOTS = 2
"""The new snapshot and the one before it (a reader that picked it a moment ago still finds it)."""
QUEUED_PLANS = 256
"""Plans whose snapshot may wait to be written at once; beyond that a snapshot is dropped
(and taken again at the plan's next interval)."""


class SnapshotWriter:
    """Writes snapshots handed to it on one background thread, oldest plan first.

    A plan has at most one snapshot waiting: a newer one replaces it, since only the
    latest version is worth writing. `write` runs on the writer's thread; whatever it
    raises is logged and the snapshot dropped, never passed back to the command that
    handed it over. The thread starts with the first snapshot and `close` writes what
    is waiting, then stops it.
    """

    def __init__(self, write: Callable[[Any], None], capacity: int = QUEUED_PLANS):
        self._write = write
        self._capacity = capacity
        self._waiting: OrderedDict[uuid.UUID, Any] = OrderedDict()
        self._writing: uuid.UUID | None = None
        self._closed = False
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def submit(self, snapshot: Any) -> None:
        """Queue `snapshot` (a library snapshot no one changes any more) to be written."""
        plan_id, version = snapshot.originator_id, snapshot.originator_version
        with self._changed:
            if self._closed:
                logger.warning("snapshot of plan %s at version %s not written: closed", plan_id, version)
                return
            if plan_id not in self._waiting and len(self._waiting) >= self._capacity:
                logger.warning("snapshot of plan %s at version %s dropped: queue full", plan_id, version)
                return
            self._waiting[plan_id] = snapshot
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="polku-snapshots", daemon=True)
                self._thread.start()
            self._changed.notify_all()

    def forget(self, plan_id: uuid.UUID) -> None:
        """Drop the plan's waiting snapshot and wait until none of it is being written.

        Erasing a plan calls this before erasing its key, so no snapshot of the plan is
        written once the key is gone.
        """
        with self._changed:
            self._waiting.pop(plan_id, None)
            self._changed.wait_for(lambda: self._writing != plan_id)

    def drain(self) -> None:
        """Wait until every snapshot handed over so far is written (or failed)."""
        with self._changed:
            self._changed.wait_for(lambda: not self._waiting and self._writing is None)

    def close(self) -> None:
        """Write what is waiting, then stop the thread."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._waiting or self._closed)
                if not self._waiting:
                    return
                plan_id, snapshot = self._waiting.popitem(last=False)
                self._writing = plan_id
            try:
                self._write(snapshot)
            except Exception:
                logger.exception("snapshot of plan %s at version %s failed", plan_id, snapshot.originator_version)
            finally:
                with self._changed:
                    self._writing = None
                    self._changed.notify_all()


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
