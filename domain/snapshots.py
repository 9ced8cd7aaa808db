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
the store keeps the latest `KEPT_SNAPSHOTS` and deletes the rest as it writes one
(`PrunedSnapshotStore`).

A plan's snapshot is encoded by msgspec against the plan's typed state
(`PlanSnapshotBody`), not by the library's JSON transcoder, which calls back into
Python for every part: at 10,000 events encoding took 8 ms and decoding 6 ms, now
about 0.3 and 1.3 ms. Snapshots stored before are library JSON and still load.

That JSON is compressed (zlib, fastest level) before it is encrypted: a 10,000-event
plan's snapshot shrinks from about 490 kB to 95 kB. On SQLite the writer then holds
the store's write lock (which the commands wait for) and fills the WAL that a
command's commit checkpoints with a fifth of the pages. Compressing costs the writer's
thread less than it saves there (its CPU per snapshot went down by 25-40%; zlib lets
go of the GIL meanwhile). Opening the plan costs about 0.5 ms more on SQLite, where
inflating it outweighs reading and decrypting a fifth of the bytes (the 10,000-event
plan still opens in a few milliseconds), and less on PostgreSQL, where the row's bytes
cost more to fetch (docs/performance.md). Typed snapshots stored uncompressed before
still load.
"""

from __future__ import annotations

import logging
import threading
import uuid
import zlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Any

import msgspec
from eventsourcing.domain import Snapshot
from eventsourcing.persistence import EventStore, Recording, StoredEvent
from eventsourcing.sqlite import SQLiteAggregateRecorder

from domain import items

logger = logging.getLogger(__name__)

KEPT_SNAPSHOTS = 2
"""The new snapshot and the one before it (a reader that picked it a moment ago still finds it)."""
QUEUED_PLANS = 256
"""Plans whose snapshot may wait to be written at once; beyond that a snapshot is dropped
(and taken again at the plan's next interval)."""


class PlanStateV2(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A `ClientPlan`'s state at class versions 2 and 3, as `Snapshot.take` collects it.

    Its fields are the plan's attributes: a plan with an attribute missing here cannot
    be encoded (the test of the codec compares them). Version 3 has the attributes of
    version 2 (it only derives the opening day differently), so both share this struct
    and tag, and the state's `class_version` says which to upcast. A class version
    whose attributes differ gets a struct and tag of its own, and this one stays to
    read the snapshots written before it.
    """

    _created_on: datetime
    _modified_on: datetime
    opened_at: datetime
    opened_on: date
    client: items.Client
    responsibility: items.Responsibility
    consents: dict[str, items.Consent]
    needs: dict[str, items.Need]
    goals: dict[str, items.Goal]
    members: dict[str, items.Member]
    steps: dict[str, items.Step]
    handovers: list[items.Handover]
    closing: items.Closing | None
    receipts: dict[str, items.Receipt]
    class_version: int


class PlanSnapshotBody(msgspec.Struct, kw_only=True, tag="plan-v2", tag_field="snapshot"):
    """What a plan's snapshot stores besides its id and version: JSON whose first key
    is the tag, so it is told from the library's JSON (which starts with "timestamp")."""

    timestamp: datetime
    topic: str
    state: PlanStateV2


TYPED_SNAPSHOT_PREFIX = b'{"snapshot":'
COMPRESSED_SNAPSHOT_PREFIX = b"zlib:"
"""Starts a typed snapshot compressed with zlib (a snapshot's JSON starts with '{')."""
COMPRESSION_LEVEL = 1
"""zlib's fastest level: at 10,000 events 2 ms for 5.3x, where level 6 takes 8 ms for 6.4x."""
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(PlanSnapshotBody)


def encode_plan_snapshot(snapshot: Snapshot) -> bytes:
    """The snapshot of a `ClientPlan` (topic, timestamp and state), as typed JSON, compressed."""
    body = PlanSnapshotBody(timestamp=snapshot.timestamp, topic=snapshot.topic, state=PlanStateV2(**snapshot.state))
    return COMPRESSED_SNAPSHOT_PREFIX + zlib.compress(_encoder.encode(body), COMPRESSION_LEVEL)


def is_typed_snapshot(plain: bytes) -> bool:
    """Whether `plain` is what `encode_plan_snapshot` writes, or wrote before it compressed."""
    return plain.startswith((COMPRESSED_SNAPSHOT_PREFIX, TYPED_SNAPSHOT_PREFIX))


def plan_snapshot_json(plain: bytes) -> bytes:
    """The typed JSON of a snapshot, compressed or not."""
    if plain.startswith(COMPRESSED_SNAPSHOT_PREFIX):
        return zlib.decompress(memoryview(plain)[len(COMPRESSED_SNAPSHOT_PREFIX) :])
    return plain


def decode_plan_snapshot(plain: bytes, originator_id: uuid.UUID, originator_version: int) -> Snapshot:
    """The library's `Snapshot` of what `encode_plan_snapshot` wrote.

    Built as the library's mapper builds events (no constructor call); `mutate` then
    makes the plan from it, upcasting by its `class_version` like any snapshot.
    """
    body = _decoder.decode(plan_snapshot_json(plain))
    state = body.state
    snapshot = object.__new__(Snapshot)
    object.__setattr__(
        snapshot,
        "__dict__",
        {
            "originator_id": originator_id,
            "originator_version": originator_version,
            "timestamp": body.timestamp,
            "topic": body.topic,
            "state": {name: getattr(state, name) for name in state.__struct_fields__},
        },
    )
    return snapshot


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


class PrunedSnapshotStore(EventStore):
    """The library's snapshot store, whose `put` also deletes all but each plan's latest
    `KEPT_SNAPSHOTS`, in the same transaction.

    One commit per snapshot (one fsync on SQLite), where writing and then pruning took
    two; the writer holds the store's write lock meanwhile, and the commands that save
    then wait for it. `PlanService` writes every snapshot through here, the writer's and
    the library's `take_snapshot` alike.
    """

    def put(self, domain_events: Sequence[Any], **kwargs: Any) -> list[Recording]:
        stored = [self.mapper.to_stored_event(snapshot) for snapshot in domain_events]
        if stored:
            plan_ids = list(dict.fromkeys(snapshot.originator_id for snapshot in stored))
            if isinstance(self.recorder, SQLiteAggregateRecorder):
                _put_and_prune_sqlite(self.recorder, stored, plan_ids, KEPT_SNAPSHOTS)
            else:
                _put_and_prune_postgres(self.recorder, stored, plan_ids, KEPT_SNAPSHOTS)
        return []


def _put_and_prune_sqlite(
    recorder: SQLiteAggregateRecorder, stored: list[StoredEvent], plan_ids: list[uuid.UUID], keep: int
) -> None:
    table = recorder.events_table_name
    with recorder.datastore.transaction(commit=True) as c:
        recorder._insert_events(c, stored)
        for plan_id in plan_ids:
            c.execute(
                f"DELETE FROM {table} WHERE originator_id = ? AND originator_version < ("
                f"SELECT originator_version FROM {table} WHERE originator_id = ? "
                "ORDER BY originator_version DESC LIMIT 1 OFFSET ?)",
                (plan_id.hex, plan_id.hex, keep - 1),
            )


def _put_and_prune_postgres(recorder: Any, stored: list[StoredEvent], plan_ids: list[uuid.UUID], keep: int) -> None:
    from psycopg.sql import SQL, Identifier

    statement = SQL(
        "DELETE FROM {schema}.{table} WHERE originator_id = %s AND originator_version < ("
        "SELECT originator_version FROM {schema}.{table} WHERE originator_id = %s "
        "ORDER BY originator_version DESC LIMIT 1 OFFSET %s)"
    ).format(schema=Identifier(recorder.datastore.schema), table=Identifier(recorder.events_table_name))
    with recorder.datastore.transaction(commit=True) as curs:
        recorder._insert_stored_events(curs, stored)
        for plan_id in plan_ids:
            curs.execute(statement, (plan_id, plan_id, keep - 1))
