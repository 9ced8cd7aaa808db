"""The application service: loads plans, runs commands on them, saves them.

Each command method takes the plan id, who gives the command (`by`), the
sender's command id and the command's own fields, and returns an `Outcome`
with the notification position of what it recorded, so a page can wait for
its read model to catch up. A command repeated with the same id is answered
with the first answer and records nothing. A version clash in the store (two
saves of the same plan at once) is retried on the fresh plan; the user only
sees a conflict when the item they edited really changed (`EditConflict`).
A command that finds the store locked by other writers past the lock timeout
is refused `StoreBusy`; one that cannot reach the database raises
`StoreUnavailable` (both retryable; nothing is recorded).
"""

from __future__ import annotations

import copy
import random
import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec
import psycopg
from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import (
    InterfaceError,
    JSONTranscoder,
    Mapper,
    OperationalError,
    RecordConflictError,
    Recording,
)
from eventsourcing.utils import get_topic

from domain.crypto import PlanKeyMapper
from domain.erasure import ErasureRecord
from domain.errors import DomainError, EditConflict, PlanErased, PlanNotFound, Repeated, StoreBusy, StoreUnavailable
from domain.history import HistoryEntry, describe
from domain.items import Receipt
from domain.plan import ClientPlan, PlanRecord, form_used_for_another_change
from domain.postgres import InsertConnectionBusy
from domain.snapshots import PrunedSnapshotStore, SnapshotWriter
from domain.storage import StoreSettings
from domain.transcodings import plan_transcoder
from domain.values import Actor

SAVE_ATTEMPTS = 20
LIBRARY_ATTEMPTS = 10
"""How often the library's PostgreSQL recorder tries a statement that failed."""
SNAPSHOT_INTERVAL = 100


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    plan_id: str
    item_id: str | None
    version: int
    position: int
    repeated: bool = False


class PlanSummary(msgspec.Struct, frozen=True, kw_only=True):
    plan_id: str
    client_name: str
    segment: str
    expert: str
    expert_organisation: str
    counterpart: str | None
    is_closed: bool
    version: int
    opened_on: str


class PlanService(Application):
    """Polku's write side over the event store chosen by `StoreSettings`."""

    name = "Polku"
    snapshotting_intervals = {ClientPlan: SNAPSHOT_INTERVAL}

    def __init__(
        self,
        settings: StoreSettings | Mapping[str, str] | None = None,
        clock: Callable[[], datetime] | None = None,
    ):
        """`settings` may also be POLKU_* variables, as the projection runner passes them."""
        if not isinstance(settings, StoreSettings):
            settings = StoreSettings.from_environ(None if settings is None else dict(settings))
        self.settings = settings
        self.clock = clock or (lambda: datetime.now(UTC))
        self.keyring = self.settings.open_keyring()
        self._plan_locks = PlanLocks(wait_s=max(self.settings.lock_timeout_s, 1))
        self._snapshot_writer = SnapshotWriter(self._write_snapshot)
        super().__init__(env=self.settings.event_store_env)

    def construct_env(self, name: str, env: Any = None) -> Any:
        """Use only the given settings, never stray variables of the process.

        The library would otherwise let any POLKU_* or bare library variable in
        the environment override the store that the settings chose.
        """
        from eventsourcing.utils import Environment

        return Environment(name, {"IS_SNAPSHOTTING_ENABLED": "y", **(env or {})})

    def construct_factory(self, env: Any) -> Any:
        """Bound every wait for a PostgreSQL lock, reads included.

        The library sets its lock timeout only inside an insert's transaction, and
        retries a timed-out statement up to ten times; so each attempt (read or
        write) gets a tenth of the configured budget, set on every pooled
        connection before any is opened.
        """
        factory = super().construct_factory(env)
        if self.settings.kind == "postgres":
            per_attempt_s = max(self.settings.lock_timeout_s, 1) / LIBRARY_ATTEMPTS
            factory.datastore.lock_timeout = per_attempt_s
            factory.datastore.pool.kwargs["options"] = f"-c lock_timeout={int(per_attempt_s * 1000)}"
        return factory

    def construct_snapshot_store(self) -> PrunedSnapshotStore:
        """Snapshots are written with the deletion of all but the plan's latest two."""
        return PrunedSnapshotStore(mapper=self.mapper, recorder=self.factory.aggregate_recorder(purpose="snapshots"))

    def save(self, *objs: Any, **kwargs: Any) -> list[Recording]:
        """The library's save, collecting the aggregates' events without its protocol checks.

        The library asks of each object `isinstance(obj, DomainEventProtocol)` and then
        `CollectEventsProtocol`: runtime-checkable protocols, which walk the protocol's
        attributes on every call and cost more than the rest of collecting a command's
        event (about 10 µs a save). What `PlanService` saves is aggregates; anything
        else, or keyword arguments, goes the library's way.
        """
        if kwargs or not all(isinstance(obj, Aggregate) for obj in objs):
            return super().save(*objs, **kwargs)
        processing_event = ProcessingEvent()
        for aggregate in objs:
            processing_event.events.extend(aggregate.collect_events())
            processing_event.aggregates[aggregate.id] = aggregate
        recordings = self._record(processing_event)
        self._take_snapshots(processing_event)
        self._notify(recordings)
        self.notify(processing_event.events)  # the library's deprecated hook, as its save calls it
        return recordings

    def _take_snapshots(self, processing_event: Any) -> None:
        """Hand the snapshot of each plan whose save crossed the interval to the writer.

        Replaces the library's step (which re-reads the plan from the store and writes
        its snapshot inside the command). The snapshot is of the plan just saved, at
        exactly its saved version; it gets a copy, because the command's plan goes back
        to the cache and the next command changes it. Copying a 10,000-event plan takes
        a fraction of what encoding and encrypting it would (docs/performance.md).
        """
        if self.snapshots is None or not self.snapshotting_intervals:
            return
        for plan_id, aggregate in processing_event.aggregates.items():
            interval = self.snapshotting_intervals.get(type(aggregate))
            crossed = interval and any(
                event.originator_id == plan_id and event.originator_version % interval == 0
                for event in processing_event.events
            )
            if crossed:
                snapshot_class = getattr(type(aggregate), "Snapshot", type(self).snapshot_class)
                self._snapshot_writer.submit(snapshot_class.take(copy.deepcopy(aggregate)))

    def _write_snapshot(self, snapshot: Any) -> None:
        """Store a snapshot (on the writer's thread), keeping only the latest two.

        A plan erased meanwhile is skipped: its key is gone, and the mapper would
        refuse to encrypt without it anyway.
        """
        if self.keyring.is_erased(snapshot.originator_id):
            return
        self.snapshots.put([snapshot])

    def flush_snapshots(self) -> None:
        """Wait until every snapshot taken so far is written (or has failed)."""
        self._snapshot_writer.drain()

    def construct_mapper(self) -> Mapper:
        return PlanKeyMapper(self.construct_transcoder(), self.keyring)

    def construct_transcoder(self) -> JSONTranscoder:
        return plan_transcoder()

    def close(self) -> None:
        """Write the snapshots still waiting, then close the store and the keyring."""
        self._snapshot_writer.close()
        super().close()
        self.keyring.close()

    # ---------------------------------------------------------------- queries

    def get_plan(self, plan_id: uuid.UUID | str, version: int | None = None) -> ClientPlan:
        """The plan as its rules see it now (snapshot, cache), or the whole `PlanRecord`
        at an earlier `version` (for the history view)."""
        if version is not None:
            return self.plan_record(plan_id, version)
        identifier = self._readable(plan_id)
        try:
            with self._plan_locks.holding(identifier):
                return self.repository.get(identifier)
        except AggregateNotFoundError:
            raise PlanNotFound(plan_id) from None

    def plan_record(self, plan_id: uuid.UUID | str, version: int | None = None) -> PlanRecord:
        """The plan with everything it recorded (notes, measures, earlier schedules,
        the latest changes of each item), after its event `version` or its last one.

        It is replayed from the events: snapshots hold only what the rules need.
        """
        identifier = self._readable(plan_id)
        record = PlanRecord.replay(self.events.get(identifier, lte=version))
        if record is None:
            raise PlanNotFound(plan_id)
        return record

    def plan_at(self, plan_id: uuid.UUID | str, moment: datetime) -> PlanRecord:
        """The plan as it was at `moment`: after every event recorded by then."""
        identifier = self._readable(plan_id)
        record = None
        for event in self.events.get(identifier):
            if event.timestamp > moment:
                break
            record = PlanRecord.fold(event, record)
        if record is None:
            raise PlanNotFound(plan_id)
        return record

    def history(self, plan_id: uuid.UUID | str) -> list[HistoryEntry]:
        """Every change of the plan, oldest first, as who did what and when."""
        identifier = self._readable(plan_id)
        entries = []
        record = None
        member_names: dict[str, str] = {}
        for event in self.events.get(identifier):
            record = PlanRecord.fold(event, record)
            member_names.update((member.id, member.name) for member in record.members.values())
            entries.append(describe(event, record, member_names))
        if not entries:
            raise PlanNotFound(plan_id)
        return entries

    def plan_ids(self) -> Iterator[uuid.UUID]:
        """Ids of every plan ever opened and not erased, oldest first."""
        topic = get_topic(ClientPlan.Opened)
        start = None
        while True:
            page = self.recorder.select_notifications(start=start, limit=500, topics=[topic])
            for notification in page:
                plan_id = notification.originator_id
                if not self.keyring.is_erased(plan_id):
                    yield plan_id
            if len(page) < 500:
                return
            start = page[-1].id + 1

    def summaries(self) -> list[PlanSummary]:
        return [summarise(self.get_plan(plan_id)) for plan_id in self.plan_ids()]

    # --------------------------------------------------------------- commands

    def open_plan(self, *, by: Actor, command_id: str, **fields: Any) -> Outcome:
        """Open a plan. The plan id follows from the command id, so a repeat finds it."""
        plan = ClientPlan.open(by=by, command_id=command_id, at=self.clock(), **fields)
        with _store_failures_as_refusals():
            try:
                existing = self.get_plan(plan.id)
            except PlanNotFound:
                self.keyring.create(plan.id)
                try:
                    recordings = self.save(plan)
                except RecordConflictError:
                    existing = self.get_plan(plan.id)
                else:
                    with self._plan_locks.holding(plan.id):
                        self._cache_saved(plan)
                    return Outcome(
                        plan_id=str(plan.id), item_id=str(plan.id), version=1, position=recordings[-1].notification.id
                    )
            if not self._opens_as_recorded(plan, existing):
                raise form_used_for_another_change()
            return Outcome(
                plan_id=str(existing.id),
                item_id=str(existing.id),
                version=1,
                position=self._position_covering_everything(),
                repeated=True,
            )

    def change_client_details(self, plan_id: str, *, by: Actor, command_id: str, **fields: Any) -> Outcome:
        return self._change(plan_id, ClientPlan.change_client_details, by, command_id, fields)

    def record_client_contact(self, plan_id: str, *, by: Actor, command_id: str, **fields: Any) -> Outcome:
        return self._change(plan_id, ClientPlan.record_client_contact, by, command_id, fields)

    def set_non_disclosure(self, plan_id: str, *, by: Actor, command_id: str, **fields: Any) -> Outcome:
        return self._change(plan_id, ClientPlan.set_non_disclosure, by, command_id, fields)

    def record_client_view_on_goal(self, plan_id: str, *, by: Actor, command_id: str, **fields: Any) -> Outcome:
        return self._change(plan_id, ClientPlan.record_client_view_on_goal, by, command_id, fields)

    def give_consent(self, plan_id: str, *, by: Actor, command_id: str, **fields: Any) -> Outcome:
        return self._change(plan_id, ClientPlan.give_consent, by, command_id, fields)

    def withdraw_consent(self, plan_id: str, *, by: Actor, command_id: str, **fields: Any) -> Outcome:
        return self._change(plan_id, ClientPlan.withdraw_consent, by, command_id, fields)

    def record_need(self, plan_id: str, *, by: Actor, command_id: str, **fields: Any) -> Outcome:
        return self._change(plan_id, ClientPlan.record_need, by, command_id, fields)

    def update_need(self, plan_id: str, *, by: Actor, command_id: str, **fields: Any) -> Outcome:
        return self._change(plan_id, ClientPlan.update_need, by, command_id, fields)

    def set_goal(self, plan_id: str, *, by: Actor, command_id: str, **fields: Any) -> Outcome:
        return self._change(plan_id, ClientPlan.set_goal, by, command_id, fields)

    def revise_goal(self, plan_id: str, *, by: Actor, command_id: str, **fields: Any) -> Outcome:
        return self._change(plan_id, ClientPlan.revise_goal, by, command_id, fields)

    def settle_goal(self, plan_id: str, *, by: Actor, command_id: str, **fields: Any) -> Outcome:
        return self._change(plan_id, ClientPlan.settle_goal, by, command_id, fields)

    def add_member(self, plan_id: str, *, by: Actor, command_id: str, **fields: Any) -> Outcome:
        return self._change(plan_id, ClientPlan.add_member, by, command_id, fields)

    def update_member(self, plan_id: str, *, by: Actor, command_id: str, **fields: Any) -> Outcome:
        return self._change(plan_id, ClientPlan.update_member, by, command_id, fields)

    def remove_member(self, plan_id: str, *, by: Actor, command_id: str, **fields: Any) -> Outcome:
        return self._change(plan_id, ClientPlan.remove_member, by, command_id, fields)

    def name_counterpart(self, plan_id: str, *, by: Actor, command_id: str, **fields: Any) -> Outcome:
        return self._change(plan_id, ClientPlan.name_counterpart, by, command_id, fields)

    def propose_handover(self, plan_id: str, *, by: Actor, command_id: str, **fields: Any) -> Outcome:
        return self._change(plan_id, ClientPlan.propose_handover, by, command_id, fields)

    def accept_handover(self, plan_id: str, *, by: Actor, command_id: str, **fields: Any) -> Outcome:
        return self._change(plan_id, ClientPlan.accept_handover, by, command_id, fields)

    def decline_handover(self, plan_id: str, *, by: Actor, command_id: str, **fields: Any) -> Outcome:
        return self._change(plan_id, ClientPlan.decline_handover, by, command_id, fields)

    def withdraw_handover(self, plan_id: str, *, by: Actor, command_id: str, **fields: Any) -> Outcome:
        return self._change(plan_id, ClientPlan.withdraw_handover, by, command_id, fields)

    def plan_step(self, plan_id: str, *, by: Actor, command_id: str, **fields: Any) -> Outcome:
        return self._change(plan_id, ClientPlan.plan_step, by, command_id, fields)

    def update_step(self, plan_id: str, *, by: Actor, command_id: str, **fields: Any) -> Outcome:
        return self._change(plan_id, ClientPlan.update_step, by, command_id, fields)

    def reschedule_step(self, plan_id: str, *, by: Actor, command_id: str, **fields: Any) -> Outcome:
        return self._change(plan_id, ClientPlan.reschedule_step, by, command_id, fields)

    def progress_step(self, plan_id: str, *, by: Actor, command_id: str, **fields: Any) -> Outcome:
        return self._change(plan_id, ClientPlan.progress_step, by, command_id, fields)

    def record_step_outcome(self, plan_id: str, *, by: Actor, command_id: str, **fields: Any) -> Outcome:
        return self._change(plan_id, ClientPlan.record_step_outcome, by, command_id, fields)

    def record_measure(self, plan_id: str, *, by: Actor, command_id: str, **fields: Any) -> Outcome:
        return self._change(plan_id, ClientPlan.record_measure, by, command_id, fields)

    def add_note(self, plan_id: str, *, by: Actor, command_id: str, **fields: Any) -> Outcome:
        return self._change(plan_id, ClientPlan.add_note, by, command_id, fields)

    def close_plan(self, plan_id: str, *, by: Actor, command_id: str, **fields: Any) -> Outcome:
        return self._change(plan_id, ClientPlan.close, by, command_id, fields)

    def reopen_plan(self, plan_id: str, *, by: Actor, command_id: str, **fields: Any) -> Outcome:
        return self._change(plan_id, ClientPlan.reopen, by, command_id, fields)

    def erase_plan(self, plan_id: str, *, by: Actor, reason: str) -> Outcome:
        """Erase a closed plan's key at the end of its retention period.

        The plan's events and snapshots stay in the store, unreadable; an erasure
        record (with no personal data) tells the read models to drop the plan. A
        snapshot of the plan still waiting to be written is dropped, and one being
        written is waited for, before the key goes: none is written after it. The
        plan's lock keeps commands from handing over another meanwhile.
        """
        identifier = _plan_uuid(plan_id)
        with _store_failures_as_refusals():
            with self._plan_locks.holding(identifier):
                plan = self.get_plan(identifier)
                record = ErasureRecord.record(plan=plan, by=by, reason=reason, at=self.clock())
                self._snapshot_writer.forget(plan.id)
                self.keyring.erase(plan.id)
                self._forget_cached(plan.id)
            recordings = self.save(record)
        return Outcome(plan_id=str(plan.id), item_id=None, version=plan.version, position=recordings[-1].notification.id)

    # ---------------------------------------------------------------- helpers

    def _change(
        self,
        plan_id: str | uuid.UUID,
        command: Callable[..., str | None],
        by: Actor,
        command_id: str,
        fields: dict[str, Any],
    ) -> Outcome:
        identifier = _plan_uuid(plan_id)
        with _store_failures_as_refusals(), self._plan_locks.holding(identifier):
            fresh = False
            for _attempt in range(SAVE_ATTEMPTS):
                plan, borrowed = self._plan_for_command(identifier, fresh)
                try:
                    item_id = command(plan, by=by, command_id=command_id, at=self.clock(), **fields)
                    recordings = self.save(plan)
                except Repeated as repeat:
                    if borrowed:
                        self._cache_saved(plan)
                    if not self._asks_what_was_recorded(identifier, command, by, command_id, fields, repeat.receipt):
                        raise form_used_for_another_change() from None
                    return Outcome(
                        plan_id=str(plan.id),
                        item_id=repeat.receipt.item_id,
                        version=repeat.receipt.version,
                        position=self._position_covering_everything(),
                        repeated=True,
                    )
                except DomainError as refusal:
                    if borrowed and not plan._pending_events:  # refused before anything changed
                        self._cache_saved(plan)
                    if not fresh:  # refuse only what the fresh plan refuses
                        fresh = True
                        continue
                    if isinstance(refusal, EditConflict):
                        raise self._explained(refusal, plan) from None
                    raise
                except RecordConflictError:
                    fresh = True
                    _back_off(_attempt)
                    continue
                self._cache_saved(plan)
                return Outcome(
                    plan_id=str(plan.id),
                    item_id=item_id,
                    version=plan.version,
                    position=recordings[-1].notification.id,
                )
            raise StoreBusy()

    def _opens_as_recorded(self, asked: ClientPlan, existing: ClientPlan) -> bool:
        """Whether an opening whose id opened `existing` already asks for the same plan
        (the same person, client and expert), told apart only by its moment."""
        (opening,) = self.events.get(existing.id, lte=1)
        (again,) = asked.collect_events()
        return {**vars(again), "timestamp": opening.timestamp} == vars(opening)

    def _asks_what_was_recorded(
        self,
        plan_id: uuid.UUID,
        command: Callable[..., str | None],
        by: Actor,
        command_id: str,
        fields: dict[str, Any],
        receipt: Receipt,
    ) -> bool:
        """Whether a repeated command asks for exactly the change its id recorded.

        A retry after a lost answer, or a form sent again from the browser's history after
        an edit, carries the same id with other content: answering it "saved" would drop
        what was typed the second time. The command is run again on the plan as it was
        before the recording, at the recording's moment, and the event it would record is
        compared with the one recorded. Repeats are rare, so the cost of reading the plan
        at that version is paid seldom.
        """
        if receipt.version < 2:  # the opening's id (in a receipt that did not name its kind)
            return False
        (recorded,) = self.events.get(plan_id, gt=receipt.version - 1, lte=receipt.version)
        before = self.repository.get(plan_id, version=receipt.version - 1)
        try:
            command(before, by=by, command_id=command_id, at=recorded.timestamp, **fields)
        except (DomainError, Repeated):  # refused then, or an id older than the receipts kept
            return False
        (again,) = before.collect_events()
        return vars(again) == vars(recorded)

    def _plan_for_command(self, plan_id: uuid.UUID, fresh: bool) -> tuple[ClientPlan, bool]:
        """The plan a command runs on, and whether it is the cached plan itself.

        Unless `fresh`, the command runs on the cached plan as it is, not a copy and
        without asking the store for newer events: a query before every command was a
        round trip each (0.5 ms on PostgreSQL), and copying a 10,000-event plan's 500
        items 0.6 ms. The plan leaves the cache while the command works on it, so no
        one else (another thread, or a nested call) can see it half changed; `_change`
        puts it back once saved, or once refused unchanged. The cached plan is what
        this process last saved or read, so it is current unless another process or
        instance wrote since; then the save clashes on the version and the command runs
        again on the fresh plan (`get_plan`, a copy brought up to date with the store),
        and a refusal is only given after the command was judged on the fresh plan.
        """
        cache = self.repository.cache
        if fresh or cache is None:
            return self.get_plan(plan_id), False
        self._readable(plan_id)
        try:
            return cache.get(plan_id, evict=True), True
        except KeyError:
            return self.get_plan(plan_id), False

    def _explained(self, conflict: EditConflict, plan: ClientPlan) -> EditConflict:
        """The conflict with every change since the editor's revision (up to 20).

        The plan keeps only each item's latest change; an editor further behind is
        told the rest from the plan's record, replayed from its events.
        """
        if len(conflict.changes) >= conflict.current_revision - conflict.seen_revision:
            return conflict
        return self.plan_record(plan.id, plan.version).explain(conflict)

    def _readable(self, plan_id: uuid.UUID | str) -> uuid.UUID:
        """The plan's id, unless it names no plan or an erased one."""
        identifier = _plan_uuid(plan_id)
        if self.keyring.is_erased(identifier):
            raise PlanErased(identifier)
        return identifier

    def _cache_saved(self, plan: ClientPlan) -> None:
        """Cache the plan just saved: it is the stored plan at its new version.

        The library caches only what it reads, so the next command would read this
        command's event back, decrypt it and apply it again to the older cached plan
        (a tenth of a millisecond), or rebuild a plan just opened from the store.
        The caller holds the plan's lock, so no other thread is reading the cached plan.
        """
        if self.repository.cache is not None:
            self.repository.cache.put(plan.id, plan)

    def _forget_cached(self, plan_id: uuid.UUID) -> None:
        if self.repository.cache is None:
            return
        try:
            self.repository.cache.get(plan_id, evict=True)
        except KeyError:
            pass

    def _position_covering_everything(self) -> int:
        """A position at or after every event recorded so far.

        A repeated command's events were recorded earlier; waiting for the
        current end of the log covers them without knowing exactly where.
        """
        return self.recorder.max_notification_id() or 0


class PlanLocks:
    """One re-entrant lock per plan, held by the thread running a command on it.

    The library's repository deep-copies a cached plan outside the lock under which
    another thread fast-forwards the same cached plan, so two commands on one plan at
    once could copy it while it changed ("dictionary changed size during
    iteration"); and a command now works on the cached plan itself. Commands and
    reads of one plan in this process run one at a time (commands would clash in the
    store anyway); those on different plans do not wait for each other. A wait longer
    than `wait_s` is refused as `StoreBusy`, never endless.
    """

    def __init__(self, wait_s: float):
        self.wait_s = wait_s
        self._guard = threading.Lock()
        self._locks: dict[uuid.UUID, tuple[threading.RLock, list[int]]] = {}

    @contextmanager
    def holding(self, plan_id: uuid.UUID) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.setdefault(plan_id, (threading.RLock(), [0]))
            users[0] += 1
        try:
            if not lock.acquire(timeout=self.wait_s):
                raise StoreBusy()
            try:
                yield
            finally:
                lock.release()
        finally:
            with self._guard:
                users[0] -= 1
                if not users[0]:
                    del self._locks[plan_id]


def summarise(plan: ClientPlan) -> PlanSummary:
    counterpart = plan.counterpart
    return PlanSummary(
        plan_id=str(plan.id),
        client_name=plan.client.name,
        segment=plan.client.segment,
        expert=plan.expert.name,
        expert_organisation=plan.expert.organisation_name,
        counterpart=counterpart.name if counterpart else None,
        is_closed=plan.is_closed,
        version=plan.version,
        opened_on=plan.opened_on.isoformat(),
    )


def _back_off(attempt: int) -> None:
    """Wait a little, at random, after losing a race to save the plan.

    Without it one editor can lose to a faster one again and again (the other
    thread wins every race while this one reloads); the jitter breaks the rhythm.
    """
    time.sleep(random.uniform(0, 0.001 * (attempt + 1)))


#: SQLSTATEs of losing to other writers: lock_not_available (the lock timeout),
#: serialization_failure, deadlock_detected.
_CONTENDED_SQLSTATES = frozenset({"55P03", "40001", "40P01"})
_SQLITE_CONTENDED = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


@contextmanager
def _store_failures_as_refusals() -> Iterator[None]:
    """A store that stays locked is :class:`StoreBusy`; one that cannot be reached is
    :class:`StoreUnavailable`: both retryable, never a crash.

    The library's errors (its PostgreSQL recorders try a statement up to ten times first,
    reads and inserts alike; its SQLite ones wait out the busy timeout) and the key
    stores' own (psycopg's, and sqlite3's from ``keys.sqlite3``, which a command-line
    process may hold) are told apart by the database's error under them: a lock
    timeout, a serialization failure or a deadlock (SQLite: busy or locked) is other
    writers holding the plan, and so is the process's insert connection kept by its other
    inserting threads (``InsertConnectionBusy``, no database error under it); anything else
    (a connection refused, dropped again, none free in time, the server out of
    connections) is the database out of reach. Told as busy, the user of an unreachable
    database would wait for other editors who are not there, and the operator would look
    for them.
    """
    try:
        yield
    except (
        OperationalError, InterfaceError, psycopg.OperationalError, psycopg.InterfaceError, sqlite3.OperationalError
    ) as error:
        if _lost_to_other_writers(error):
            raise StoreBusy() from error
        raise StoreUnavailable(str(error)) from error


def _lost_to_other_writers(error: BaseException) -> bool:
    """Whether ``error``, or an error it was raised from, says other writers held the store."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, InsertConnectionBusy) or getattr(cause, "sqlstate", None) in _CONTENDED_SQLSTATES:
            return True
        sqlite_code = getattr(cause, "sqlite_errorcode", 0) if isinstance(cause, sqlite3.OperationalError) else 0
        if sqlite_code & 0xFF in _SQLITE_CONTENDED:
            return True
        cause = cause.__cause__
    return False


def _plan_uuid(plan_id: uuid.UUID | str) -> uuid.UUID:
    if isinstance(plan_id, uuid.UUID):
        return plan_id
    try:
        return uuid.UUID(str(plan_id))
    except ValueError:
        raise PlanNotFound(plan_id) from None
