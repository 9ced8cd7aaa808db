"""The plan projection: every plan's current state and its caseload rows.

It folds each plan's events into a `PlanRecord` with the domain's own `apply`
methods (the same code that rebuilds the aggregate, keeping also what the
rules never read: notes, measures, earlier schedules, the latest changes of
each item), so the read model cannot drift from the rules. The folded plan is kept as a
typed JSON document (``projections.codec``) in the read-model store. Recently folded or
read plans stay decoded in memory (`PlanCache`), shared by the follower and pages and never changed: the follower
folds each event onto a copy, and checks the row's version as it writes.

`PlanViews` is what the rest of the system uses: it opens the read-model
store, follows the event log with the library's projection runner (the
subscription wakes at once after a local save), and lets a page wait until
the read model has reached the position of its own edit.

On PostgreSQL several instances share one read-model schema: one of them, the
holder of an advisory lock, runs the projection; each write NOTIFYs
"<plan id>:<position>" in its own transaction, and every instance LISTENs and
tells its listeners and waiting pages (`projections.leader`, docs/deployment.md).
"""

from __future__ import annotations

import asyncio
import copy
import heapq
import itertools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, NamedTuple

from eventsourcing.persistence import InfrastructureFactory, IntegrityError, Tracking
from eventsourcing.projection import BaseProjectionRunner, Projection
from eventsourcing.utils import Environment

from domain.application import PlanService
from domain.erasure import ErasureRecord
from domain.plan import ClientPlan, PlanRecord
from domain.storage import StoreSettings
from projections.codec import decode_record, encode_record
from projections.leader import LeaderElection, NoticeListener, try_advisory_lock
from projections.leader import connect as pg_connect
from projections.summary import people_of, summarise
from projections.views import (
    CaseloadEntry,
    Person,
    PlanRow,
    PlanViewTables,
    PostgresPlanViews,
    ReadModelSuperseded,
    SQLitePlanViews,
    StaleRow,
)

CACHED_PLANS = 1000
MARKS_KEPT = 10_000
"""(person, plan) pairs whose latest ``mark_seen`` version this process remembers."""
RESTART_DELAY = 0.1
MAX_RESTART_DELAY = 10.0

logger = logging.getLogger(__name__)

PositionListener = Callable[[str | None, int], None]
"""Called after each event is applied: (the plan it changed, or None; position)."""


class Kept(NamedTuple):
    """A decoded plan as the read model held it, shared: nobody changes it once it is kept."""

    plan: PlanRecord
    position: int
    """The position of the plan's latest event (the row's ``position``)."""
    written: tuple[dict[str, Any], list[Person]] | None
    """The summary and people this process's follower wrote with it; None if it was read from the row."""


class Gone(NamedTuple):
    """What :class:`PlanCache` keeps for a plan dropped or erased, a new one at every drop.

    A reader that decoded the plan's row before the drop does not put its copy back: its
    ``put`` names the entry it saw, and no later drop leaves that same object in place. And
    a plan kept at an earlier position than a drop's (a notice of a newer write, or an
    erasure) is refused whoever puts it, so an erased plan's personal data cannot come back.
    """

    position: int | None
    """The position the drop was at, if it knew one."""


class PlanCache:
    """Decoded plans of the read model by plan id, at the version each one's row last held.

    One per process, shared by the follower and the threads that read plans for pages. A
    kept plan is never changed: the follower folds each event onto a copy
    (``ClientPlan.__deepcopy__`` copies only what an event can change) and keeps the
    result, and pages only read what they are handed. So an edit decodes its plan at
    most once (none at all in the process that writes the read model: its follower keeps
    the plan before it commits the row, and the commit's notice wakes the pages), and a plan cannot
    change under a page that renders it. Whoever uses a kept plan checks it against the
    row first: the follower by writing only onto the version it folded from
    (:class:`~projections.views.StaleRow`), a reader by asking the row's version. Bounded
    (least recently used first out).
    """

    def __init__(self, size: int | None = None):
        self.size = CACHED_PLANS if size is None else size
        self._entries: OrderedDict[str, Kept | Gone] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, plan_id: str) -> Kept | Gone | None:
        """The plan's :class:`Kept`, a :class:`Gone` after a drop, or None."""
        with self._lock:
            entry = self._entries.get(plan_id)
            if entry is not None:
                self._entries.move_to_end(plan_id)
            return entry

    def put(self, plan_id: str, kept: Kept, *, unless_changed_from: Any = ...) -> None:
        """Keep ``kept``, unless a plan or a drop at a later position is in place; with
        ``unless_changed_from``, only if the entry is still that very one."""
        with self._lock:
            entry = self._entries.get(plan_id)
            if unless_changed_from is not ... and entry is not unless_changed_from:
                return
            if entry is not None and entry.position is not None and kept.position < entry.position:
                return
            self._set(plan_id, kept)

    def drop(self, plan_id: str, position: int | None = None) -> None:
        """Forget the plan; with ``position``, unless it is kept at that position or a later one."""
        with self._lock:
            entry = self._entries.get(plan_id)
            if position is not None:
                if isinstance(entry, Kept) and entry.position >= position:
                    return
                if isinstance(entry, Gone) and entry.position is not None:
                    position = max(position, entry.position)
            self._set(plan_id, Gone(position))

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def _set(self, plan_id: str, entry: Kept | Gone) -> None:
        self._entries[plan_id] = entry
        self._entries.move_to_end(plan_id)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


class PlanProjection(Projection[PlanViewTables]):
    name = "plan_views"
    topics = ()

    def __init__(self, view: PlanViewTables, cache: PlanCache | None = None):
        super().__init__(view)
        self.cache = cache or PlanCache()

    def process_event(self, domain_event: Any, tracking: Tracking) -> str | None:
        """Apply one event; returns the id of the plan it changed, if any."""
        if isinstance(domain_event, ClientPlan.Event):
            return self._fold(domain_event, tracking)
        if isinstance(domain_event, ErasureRecord.Erased):
            self.view.drop_plan(domain_event.plan_id, tracking)
            # after the rows, at the erasure's position: also what a page read meanwhile
            self.cache.drop(domain_event.plan_id, tracking.notification_id)
            return domain_event.plan_id
        self.view.skip(tracking)
        return None

    def forget(self) -> None:
        """Drop every kept plan (another writer may have changed the rows meanwhile)."""
        self.cache.clear()

    def plan(self, plan_id: str) -> PlanRecord | None:
        """The plan as the read model's row has it now, or None: shared, never to be changed.

        Decoded from the row only if no plan at the row's version is kept.
        """
        seen = self.cache.get(plan_id)
        kept = seen if isinstance(seen, Kept) else None
        stored = self.view.plan_state(plan_id, kept.plan.version if kept else None)
        if stored is None:
            if kept is not None:
                self.cache.drop(plan_id)
            return None
        version, position, state = stored
        if state is None and kept is not None:
            return kept.plan
        assert state is not None
        plan = self._decode(plan_id, version, state)
        self.cache.put(plan_id, Kept(plan, position, None), unless_changed_from=seen)
        return plan

    def load(self, plan_id: str) -> PlanRecord | None:
        """The plan decoded from its row, whatever is kept, or None: a copy of the caller's own."""
        stored = self._stored(plan_id)
        return stored.plan if stored else None

    def _stored(self, plan_id: str) -> Kept | None:
        stored = self.view.plan_state(plan_id)
        if stored is None:
            return None
        version, position, state = stored
        assert state is not None
        return Kept(self._decode(plan_id, version, state), position, None)

    def _decode(self, plan_id: str, version: int, state: str) -> PlanRecord:
        return decode_record(plan_id, version, state)

    def _fold(self, event: ClientPlan.Event, tracking: Tracking) -> str:
        plan_id = str(event.originator_id)
        if isinstance(event, ClientPlan.Opened):
            return self._write(event, tracking, None)
        kept = self.cache.get(plan_id)
        if isinstance(kept, Kept) and kept.plan.version + 1 == event.originator_version:
            try:
                return self._write(event, tracking, kept)
            except StaleRow:
                logger.info("plan views: the row of %s moved under the kept plan; folding from the row", plan_id)
        base = self._stored(plan_id)
        if base is not None and base.plan.version >= event.originator_version:
            self.view.skip(tracking)
            return plan_id
        return self._write(event, tracking, base)

    def _write(self, event: ClientPlan.Event, tracking: Tracking, base: Kept | None) -> str:
        """Fold ``event`` onto a copy of ``base`` and write it, onto ``base``'s version of the row."""
        plan_id = str(event.originator_id)
        try:
            plan = PlanRecord.fold(event, copy.deepcopy(base.plan) if base else None)
            summary, people = summarise(plan), people_of(plan)
            # Kept before the commit: the commit's notice can wake a page at once (on
            # PostgreSQL), and readers use it only once the row is at its version.
            self.cache.put(plan_id, Kept(plan, tracking.notification_id, (summary, people)))
            self.view.save_plan(
                PlanRow(
                    plan_id=plan_id,
                    version=plan.version,
                    position=tracking.notification_id,
                    search_name=plan.client.name.casefold(),
                    is_closed=plan.is_closed,
                    updated_at=event.timestamp.isoformat(),
                    summary=summary,
                    state=encode_record(plan),
                ),
                people,
                tracking,
                onto=base.plan.version if base else None,
                written=base.written if base else None,
            )
        except BaseException:
            self.cache.drop(plan_id)
            raise
        return plan_id


class PlanViews:
    """The plan read model of one process: store, projection and follower.

    On SQLite (one instance) the follower always runs here and tells the listeners itself.
    On PostgreSQL any number of instances share the read-model schema: exactly one of them
    (the holder of an advisory lock, :class:`~projections.leader.LeaderElection`) runs the
    projection, and every instance, the writer included, learns that the read model moved
    from the writer's NOTIFY (:class:`~projections.leader.NoticeListener`), which is sent
    in the same transaction as the rows. See docs/deployment.md.

    ``dedicated`` (PostgreSQL): this process exists to write the read model (``polku
    project``); the other instances leave the writer's lock to it while it runs.
    """

    def __init__(self, settings: StoreSettings, *, follow: bool = True, dedicated: bool = False):
        self.settings = settings
        self.store = open_view_store(settings)
        self.shared = settings.kind == "postgres"
        self.projection = _NotifyingProjection(self.store, _ignore if self.shared else self._advanced)
        self._position = self.store.max_tracking_id(PlanService.name) or 0
        self._moved = threading.Lock()
        self._waiting: list[tuple[int, int, threading.Event | _LoopEvent]] = []
        """Pages waiting in :meth:`wait_for` and :meth:`reached`: a heap of (position, arrival,
        what to set), lowest position first."""
        self._arrivals = itertools.count()
        self._listeners: list[PositionListener] = []
        self._seen: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._seen_lock = threading.Lock()
        self._runner: BaseProjectionRunner[PlanService] | None = None
        self._runner_error: BaseException | None = None
        self._restart_at = 0.0
        self._restart_delay = RESTART_DELAY
        self._election: LeaderElection | None = None
        self._notices: NoticeListener | None = None
        if not follow:
            return
        if not self.shared:
            self._runner = self._new_runner()
            return
        store: Any = self.store
        self._notices = NoticeListener(
            settings.pg_conninfo, store.channel, on_notice=self._noticed, on_connect=self._catch_up
        ).start()
        self._election = LeaderElection(
            settings.pg_conninfo,
            store.writer_lock_name,
            on_elected=self._elected,
            on_held=self._supervise,
            on_deposed=self._stop_runner,
            dedicated=dedicated,
        ).start()

    @property
    def position(self) -> int:
        return self._position

    @property
    def is_leader(self) -> bool:
        """Whether this instance writes the read model (always, on SQLite, while following)."""
        if self._election is not None:
            return self._election.is_leader
        return self._runner is not None

    @property
    def superseded(self) -> str | None:
        """Why this instance stopped writing the read model for good, or None: the read model
        holds another version than this release's (:class:`~projections.views.ReadModelSuperseded`);
        an instance of another release recreated it. Not ready to serve it either."""
        return self.store.superseded

    @property
    def is_listening(self) -> bool:
        """Whether this instance hears the writer's notices (always, on SQLite, while following)."""
        if self._notices is not None:
            return self._notices.is_listening
        return self._runner is not None

    def add_listener(self, listener: PositionListener) -> None:
        self._listeners.append(listener)

    def wait_for(self, position: int, timeout: float = 5.0) -> bool:
        """Block until the read model has applied `position`; False on timeout.

        A waiter is woken once, when its own position is reached: with a condition that
        every event notified, each waiting page woke at every event before its own
        (with 40 worker threads, 5 % of the process's samples in ``notify_all``).
        """
        event = threading.Event()
        waiter = self._wait_in_line(position, event)
        if waiter is None or event.wait(timeout):
            return True
        return self._gave_up(waiter)

    async def reached(self, position: int, timeout: float = 5.0) -> bool:
        """:meth:`wait_for` on the event loop: waits without holding a worker thread."""
        woken = _LoopEvent(asyncio.get_running_loop())
        waiter = self._wait_in_line(position, woken)
        if waiter is None:
            return True
        try:
            async with asyncio.timeout(timeout):
                await woken.event.wait()
            return True
        except TimeoutError:
            return self._gave_up(waiter)

    def _wait_in_line(
        self, position: int, wake: threading.Event | _LoopEvent
    ) -> tuple[int, int, threading.Event | _LoopEvent] | None:
        """Queue ``wake`` to be set when the read model reaches ``position``; None if it has."""
        with self._moved:
            if self._position >= position:
                return None
            waiter = (position, next(self._arrivals), wake)
            heapq.heappush(self._waiting, waiter)
            return waiter

    def _gave_up(self, waiter: tuple[int, int, threading.Event | _LoopEvent]) -> bool:
        with self._moved:
            if waiter in self._waiting:
                self._waiting.remove(waiter)
                heapq.heapify(self._waiting)
            return self._position >= waiter[0]

    def plan(self, plan_id: str) -> PlanRecord | None:
        """The plan as the read model has it, or None: shared with other pages, never to be changed."""
        return self.projection.plan(plan_id)

    def caseload(self, **query: Any) -> list[CaseloadEntry]:
        return self.store.caseload(**query)

    def mark_seen(self, person_id: str, plan_id: str, version: int) -> None:
        """Remember that the person has seen ``version`` of the plan (for "changed since seen").

        Cheap to call on every page and edit: a version not newer than one this process
        has marked for the person already is not sent to the store at all, and the store
        keeps the newest version it was given (``PlanViewTables.mark_seen``).
        """
        key = (person_id, plan_id)
        with self._seen_lock:
            marked = self._seen.get(key)
            if marked is not None and marked >= version:
                self._seen.move_to_end(key)
                return
        self.store.mark_seen(person_id, plan_id, version, datetime.now(UTC).isoformat())
        with self._seen_lock:
            self._seen[key] = max(version, self._seen.get(key, version))
            self._seen.move_to_end(key)
            while len(self._seen) > MARKS_KEPT:
                self._seen.popitem(last=False)

    def check_running(self) -> None:
        """Raise the follower's error, if it stopped with one.

        On PostgreSQL the leader restarts a failed follower by itself; this raises the last
        failure (once) unless it was only another writer's commit getting there first.
        """
        if self._election is not None:
            error, self._runner_error = self._runner_error, None
            if error is not None:
                raise error
            return
        if self._runner is not None:
            self._runner.run_forever(timeout=0)

    def close(self) -> None:
        if self._election is not None:
            self._election.close()  # stops the runner (if leading) and releases the lock
        if self._notices is not None:
            self._notices.close()
        if self._election is None and self._runner is not None:
            self._runner.__exit__(None, None, None)
        self.store.datastore.close()

    def _advanced(self, plan_id: str | None, position: int) -> None:
        if plan_id is not None:  # written by another instance, or erased: what is kept is behind
            self.projection.cache.drop(plan_id, position)
        with self._moved:
            self._position = max(self._position, position)
            while self._waiting and self._waiting[0][0] <= self._position:
                heapq.heappop(self._waiting)[2].set()
        for listener in self._listeners:
            try:
                listener(plan_id, position)
            except Exception:
                logger.exception("a listener of the plan views failed on %s at %s", plan_id, position)

    # ------------------------------------------------- several instances (PostgreSQL)

    def _new_runner(self) -> BaseProjectionRunner[PlanService]:
        return BaseProjectionRunner(
            projection=self.projection,
            application_class=PlanService,
            tracking_recorder=self.store,
            topics=(),
            env=self.settings.as_environ(),
        ).__enter__()

    def _noticed(self, payload: str) -> None:
        """A notice from the writer (any instance): ``"<plan id>:<position>"``."""
        plan_id, _, position = payload.rpartition(":")
        if int(position) > self._position:
            self._advanced(plan_id or None, int(position))

    def _catch_up(self) -> None:
        """On (re)connecting the listener: tell what was committed while nobody listened.

        The head first: a plan written after it was read is among the changed plans (and
        told), where a plan written after the changed plans were read, if the head came
        second, would be covered by the head and never told.
        """
        head = self.store.max_tracking_id(PlanService.name) or 0
        for plan_id, position in self.store.plans_changed_after(self._position):
            self._advanced(plan_id, position)
        if head > self._position:
            self._advanced(None, head)

    def _elected(self) -> None:
        """This instance now holds the writer lock: follow from the stored position."""
        self._restart_at = 0.0
        self._restart_delay = RESTART_DELAY

    def _supervise(self) -> None:
        """While leading: keep one runner going, restarting it (with back-off) after a failure."""
        runner = self._runner
        if runner is not None:
            if not runner.is_interrupted.is_set():
                return
            self._stop_runner()
            self._restart_at = time.monotonic() + self._restart_delay
            self._restart_delay = min(self._restart_delay * 2, MAX_RESTART_DELAY)
        if self.superseded is not None or time.monotonic() < self._restart_at:
            return
        # Another writer may have moved the rows while this one was not leading: start
        # from the stored tracking position with nothing cached.
        self.projection.forget()
        try:
            self._runner = self._new_runner()
        except Exception as error:
            logger.error("plan views: the follower could not start; trying again", exc_info=error)
            self._runner_error = error
            self._restart_at = time.monotonic() + self._restart_delay
            self._restart_delay = min(self._restart_delay * 2, MAX_RESTART_DELAY)

    def _stop_runner(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        try:
            runner.__exit__(None, None, None)
        except Exception as error:
            if isinstance(error, ReadModelSuperseded):
                self._give_up_writing(error)
            elif _is_fenced(error):
                logger.info("plan views: another writer committed first (%s); following on from there", error)
                self._restart_delay = RESTART_DELAY
            else:
                logger.error("plan views: the follower failed; restarting it", exc_info=error)
                self._runner_error = error

    def _give_up_writing(self, error: ReadModelSuperseded) -> None:
        """Another release's instance recreated the read model: stop writing it, for good, and
        leave the writer lock to the instances of that release (the store logged why, and
        :attr:`superseded` says so)."""
        self._runner_error = error
        if self._election is not None:
            self._election.resign()


class _LoopEvent:
    """An asyncio event that the follower's thread sets (:meth:`PlanViews.reached`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.event = asyncio.Event()

    def set(self) -> None:
        try:
            self.loop.call_soon_threadsafe(self.event.set)
        except RuntimeError:  # the loop has closed: nobody waits any more
            pass


def rebuild(settings: StoreSettings, progress: Callable[[int, int], None] | None = None) -> int:
    """Rebuild the plan read model from the start of the event log.

    Runs while no follower of the same store is running. On PostgreSQL it holds the
    writer lock meanwhile, and refuses to start while an instance holds it (stop the
    instances first). Returns the number of events applied.
    """
    service = PlanService(settings)
    store = open_view_store(settings)
    writer_lock = None
    try:
        if settings.kind == "postgres":
            writer_lock = pg_connect(settings.pg_conninfo, application_name="polku rebuild")
            if not try_advisory_lock(writer_lock, store.writer_lock_name):  # type: ignore[attr-defined]
                raise RuntimeError(
                    "A running instance is writing the plan views;"
                    " stop every `polku serve` and `polku project` before rebuilding."
                )
        store.clear(service.name)
        projection = PlanProjection(store)
        total = service.recorder.max_notification_id() or 0
        applied = 0
        for notification in _notifications(service):
            projection.process_event(
                service.mapper.to_domain_event(notification),
                Tracking(application_name=service.name, notification_id=notification.id),
            )
            applied += 1
            if progress:
                progress(notification.id, total)
        return applied
    finally:
        if writer_lock is not None:
            writer_lock.close()
        store.datastore.close()
        service.close()


def open_view_store(settings: StoreSettings) -> PlanViewTables:
    """The read-model store: a SQLite file of its own, or a PostgreSQL schema of its own.

    The SQLite file commits with ``synchronous=NORMAL`` (``projections.sqlite``: a power
    failure can only take the read model back to an earlier position, which the follower
    applies again from the event store), where the event store's commits are FULL.
    """
    if settings.kind == "sqlite":
        env = {
            "PERSISTENCE_MODULE": "projections.sqlite",
            "SQLITE_DBNAME": settings.view_store_path,
            "SQLITE_LOCK_TIMEOUT": str(max(settings.lock_timeout_s, 1)),
        }
        view_class: type[Any] = SQLitePlanViews
    else:
        env = {
            **settings.event_store_env,
            "POSTGRES_SCHEMA": f"{settings.pg_schema or 'polku'}_views",
            "POSTGRES_APPLICATION_NAME": "polku views",
        }
        view_class = PostgresPlanViews
    factory = InfrastructureFactory.construct(Environment("views", env))
    return factory.tracking_recorder(view_class)


def _ignore(plan_id: str | None, position: int) -> None:
    """On PostgreSQL the writer's NOTIFY, not the projection, tells the listeners."""


def _is_fenced(error: BaseException) -> bool:
    """Another writer got there first: the tracking row refused a position it had already
    recorded, or a plan's row moved under the version this writer had just read from it."""
    if isinstance(error, StaleRow):
        return True
    return isinstance(error, IntegrityError) and str(error).startswith("Failed to record tracking")


class _NotifyingProjection(PlanProjection):
    def __init__(self, view: PlanViewTables, advanced: PositionListener):
        super().__init__(view)
        self._advanced = advanced

    def process_event(self, domain_event: Any, tracking: Tracking) -> str | None:
        plan_id = super().process_event(domain_event, tracking)
        self._advanced(plan_id, tracking.notification_id)
        return plan_id


def _notifications(service: PlanService, page: int = 500) -> Iterator[Any]:
    start = 1
    while True:
        batch = service.recorder.select_notifications(start=start, limit=page)
        yield from batch
        if len(batch) < page:
            return
        start = batch[-1].id + 1

