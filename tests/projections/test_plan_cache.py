"""The decoded plans kept in memory (`PlanCache`): shared, never changed, checked against the row.

The follower folds each event onto a copy of the plan it kept and keeps the result;
readers get the kept plan while the row is at its version. These tests pin that an edit
decodes its plan at most once, that a kept plan never changes under whoever holds it, that
a kept plan behind the row (another writer, a restart) is noticed and the row folded on
from instead, and that an erased plan leaves the cache at once.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import pytest
from eventsourcing.persistence import Tracking

from domain.application import PlanService
from domain.storage import StoreSettings
from projections.plans import Kept, PlanCache, PlanProjection, PlanViews, open_view_store
from projections.views import PlanRow, StaleRow
from tests.projections.helpers import ACTORS, catch_up, random_commands, state_of

PEKKA = ACTORS["pekka.nieminen"]


def open_plan(service: PlanService, name: str = "Välimuisti Asiakas") -> str:
    return service.open_plan(
        by=PEKKA,
        command_id=f"open-{name}",
        client_name=name,
        segment="employed",
        language="fi",
        referring_party="kela",
        expert_profession="Kelan asiantuntija",
    ).plan_id


def count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    decoded: list[str] = []
    original = PlanProjection._decode

    def counting(self: PlanProjection, plan_id: str, version: int, state: str) -> Any:
        decoded.append(plan_id)
        return original(self, plan_id, version, state)

    monkeypatch.setattr(PlanProjection, "_decode", counting)
    return decoded


def test_an_edit_decodes_its_plan_at_most_once_and_readers_share_it(
    service: PlanService, open_views: Callable[..., PlanViews], monkeypatch: pytest.MonkeyPatch
) -> None:
    plan_id = open_plan(service)
    writer = open_views()
    reader = open_views(follow=False)  # another instance: it does not fold, it reads the rows
    catch_up(writer, service)
    decoded = count_decodes(monkeypatch)

    outcome = service.add_note(plan_id, by=PEKKA, command_id="note-1", text="Yksi muokkaus.")
    assert writer.wait_for(outcome.position, timeout=5)
    # the request's access check, its read-your-write and the live hub
    on_writer = [writer.plan(plan_id) for _ in range(3)]
    on_reader = [reader.plan(plan_id) for _ in range(3)]

    assert decoded == [plan_id]  # once, by the instance that does not fold
    assert all(plan is on_writer[0] and plan.version == outcome.version for plan in on_writer)
    assert all(plan is on_reader[0] and plan.version == outcome.version for plan in on_reader)
    assert state_of(on_reader[0]) == state_of(on_writer[0]) == state_of(service.plan_record(plan_id))


def test_a_kept_plan_never_changes_when_later_events_are_folded(
    service: PlanService, open_views: Callable[..., PlanViews]
) -> None:
    plan_id = open_plan(service)
    views = open_views()
    handed_out: dict[int, tuple[Any, dict[str, Any]]] = {}
    rng = random.Random(21)
    for index in range(60):  # one command at a time (on this plan, or now and then a new one)
        (outcome,) = random_commands(service, rng, 1, f"kept-{index}")
        assert views.wait_for(outcome.position, timeout=5)
        plan = views.plan(plan_id)
        handed_out[plan.version] = (plan, state_of(plan))
    catch_up(views, service)

    assert len(handed_out) > 15
    for version, (plan, state_then) in handed_out.items():
        assert state_of(plan) == state_then, f"the plan handed out at version {version} changed since"
        assert state_then == state_of(service.plan_record(plan_id, version=version))


def events(service: PlanService) -> list[tuple[Any, Tracking]]:
    return [
        (service.mapper.to_domain_event(n), Tracking(application_name=service.name, notification_id=n.id))
        for n in service.recorder.select_notifications(start=1, limit=1000)
    ]


def test_a_follower_whose_kept_plan_is_behind_the_row_folds_on_from_the_row(
    settings: StoreSettings, service: PlanService
) -> None:
    """Two writers in turn (a takeover, or a restart of the other one): each checks the row's version."""
    plan_id = open_plan(service)
    for index in range(5):  # versions 2 to 6
        service.add_note(plan_id, by=PEKKA, command_id=f"note-{index}", text=f"Muistiinpano {index}.")
    log = events(service)
    store = open_view_store(settings)
    try:
        first, second = PlanProjection(store), PlanProjection(store)
        for event, tracking in log[:3]:
            first.process_event(event, tracking)
        for event, tracking in log[3:5]:  # the other writer, from the row
            second.process_event(event, tracking)
        kept = first.cache.get(plan_id)
        assert isinstance(kept, Kept) and kept.plan.version == 3

        # the next event does not follow on from what `first` kept: it folds from the row
        first.process_event(*log[5])
        assert first.plan(plan_id).version == 6

        # `second` kept version 5, the row is at 6: the same event once more (as a writer that
        # raced the other to it) is refused by the row's version and changes nothing
        event, tracking = log[5]
        second.process_event(event, Tracking(application_name=service.name, notification_id=tracking.notification_id + 100))
        assert state_of(second.plan(plan_id)) == state_of(service.plan_record(plan_id, version=6))
        assert state_of(first.plan(plan_id)) == state_of(second.plan(plan_id))
        assert store.plan_state(plan_id)[:2] == (6, log[5][1].notification_id)

        # at the store: a write onto another version than the row's writes nothing
        row = PlanRow(plan_id=plan_id, version=7, position=999, search_name="x", is_closed=False, updated_at="",
                      summary={"segment": "employed"}, state="{}")
        with pytest.raises(StaleRow):
            store.save_plan(row, [], Tracking(application_name=service.name, notification_id=999), onto=4)
        assert store.plan_state(plan_id)[:2] == (6, log[5][1].notification_id)
        assert store.max_tracking_id(service.name) == tracking.notification_id + 100
    finally:
        store.datastore.close()


def test_the_follower_keeps_its_plan_before_the_row_commits_and_readers_use_it_only_after(
    settings: StoreSettings, service: PlanService
) -> None:
    """On PostgreSQL the commit's notice can wake a page before the follower's next line:
    the plan it folded must be kept by then, and a reader during the write still gets the
    row's (earlier) version and does not replace what the follower kept."""
    plan_id = open_plan(service)
    service.add_note(plan_id, by=PEKKA, command_id="note", text="Ennen tallennusta.")
    (opened, opened_at), (noted, noted_at) = events(service)
    store = open_view_store(settings)
    try:
        projection = PlanProjection(store)
        projection.process_event(opened, opened_at)
        save_plan = store.save_plan
        during: list[int] = []
        after: list[Any] = []

        def saving(*args: Any, **kwargs: Any) -> None:
            during.append(projection.plan(plan_id).version)
            save_plan(*args, **kwargs)
            after.append(projection.cache.get(plan_id))  # what a page woken by the commit gets

        store.save_plan = saving  # type: ignore[method-assign]
        projection.process_event(noted, noted_at)

        assert during == [1]
        assert isinstance(after[0], Kept) and after[0].plan.version == 2, "the folded plan was not kept at the commit"
        assert projection.cache.get(plan_id) is after[0]
    finally:
        store.datastore.close()


def test_an_erased_plan_leaves_the_cache_at_once(service: PlanService, open_views: Callable[..., PlanViews]) -> None:
    plan_id = open_plan(service)
    service.close_plan(plan_id, by=PEKKA, command_id="close", outcome="work")
    views = open_views()
    catch_up(views, service)
    assert views.plan(plan_id) is not None
    assert isinstance(views.projection.cache.get(plan_id), Kept)

    erased = service.erase_plan(plan_id, by=PEKKA, reason="Säilytysaika päättyi")
    assert views.wait_for(erased.position, timeout=5)

    assert not isinstance(views.projection.cache.get(plan_id), Kept)
    assert views.plan(plan_id) is None
    assert not isinstance(views.projection.cache.get(plan_id), Kept)


@pytest.mark.postgres
@pytest.mark.parametrize("store_env", ["postgres"], indirect=True)
def test_another_instance_drops_what_it_kept_when_the_writer_changes_or_erases_the_plan(
    settings: StoreSettings, service: PlanService, open_views: Callable[..., PlanViews]
) -> None:
    plan_id = open_plan(service)
    service.close_plan(plan_id, by=PEKKA, command_id="close", outcome="work")
    writer = open_views()
    deadline = time.monotonic() + 5
    while not writer.is_leader and time.monotonic() < deadline:
        time.sleep(0.01)
    other = open_views()
    catch_up(other, service)
    assert other.plan(plan_id) is not None and not other.is_leader

    erased = service.erase_plan(plan_id, by=PEKKA, reason="Säilytysaika päättyi")
    assert other.wait_for(erased.position, timeout=5)

    assert not isinstance(other.projection.cache.get(plan_id), Kept)  # on the writer's notice
    assert other.plan(plan_id) is None


def test_the_cache_keeps_the_most_recently_used_and_a_reader_does_not_undo_a_drop() -> None:
    cache = PlanCache(size=2)
    kept = [Kept(plan=object(), position=n, written=None) for n in range(3)]  # type: ignore[arg-type]
    cache.put("a", kept[0])
    cache.put("b", kept[1])
    assert cache.get("a") is kept[0]  # now the most recently used
    cache.put("c", kept[2])
    assert cache.get("b") is None and cache.get("a") is kept[0]

    seen = cache.get("a")
    cache.drop("a")  # erased while a reader decoded its row
    cache.put("a", kept[1], unless_changed_from=seen)
    assert not isinstance(cache.get("a"), Kept)

    cache.put("c", kept[2])
    cache.drop("c", position=1)  # a notice of an earlier position than kept: nothing to drop
    assert cache.get("c") is kept[2]
    cache.drop("c", position=3)
    assert not isinstance(cache.get("c"), Kept)


class _RowDuringRead:
    """``plan_state`` of a read model whose row is ``row``; ``during`` runs once, after the
    row is read (what another thread does while the reader decodes it)."""

    def __init__(self, row: tuple[int, int, str] | None) -> None:
        self.row = row
        self.during: Callable[[], None] | None = None

    def plan_state(self, plan_id: str, known: int | None = None) -> tuple[int, int, str | None] | None:
        row = self.row
        if self.during is not None:
            during, self.during = self.during, None
            during()
        if row is None:
            return None
        version, position, state = row
        return version, position, None if known == version else state


def _reading(view: _RowDuringRead) -> PlanProjection:
    projection = PlanProjection(view, PlanCache(10))  # type: ignore[arg-type]
    projection._decode = lambda plan_id, version, state: {"version": version}  # type: ignore[method-assign,assignment,return-value]
    return projection


PLAN = "00000000-0000-0000-0000-000000000001"


def test_an_erasure_while_a_reader_decodes_keeps_nothing_even_after_an_earlier_drop() -> None:
    """The instance that writes the read model: the erasure drops the plan while a reader
    that saw an earlier drop decodes the row read just before; the reader's copy (the
    plan's personal data) is not put back."""
    view = _RowDuringRead((5, 100, "state"))
    projection = _reading(view)
    projection.cache.drop(PLAN)  # an earlier drop: a failed write, a reader that found no row

    def erase() -> None:  # process_event(ErasureRecord.Erased): the rows, then the cache
        view.row = None
        projection.cache.drop(PLAN, 101)

    view.during = erase
    assert projection.plan(PLAN) == {"version": 5}
    assert not isinstance(projection.cache.get(PLAN), Kept), "the erased plan is kept after its erasure"


@pytest.mark.parametrize("before", ["nothing", "a drop"])
def test_an_erasure_notice_while_a_reader_decodes_keeps_nothing(before: str) -> None:
    """Another instance: the erasure arrives as the writer's notice ``<plan id>:<position>``
    while a reader decodes the row read just before it."""
    view = _RowDuringRead((5, 100, "state"))
    projection = _reading(view)
    if before == "a drop":
        projection.cache.drop(PLAN, 90)

    def erased_elsewhere() -> None:
        view.row = None
        projection.cache.drop(PLAN, 101)

    view.during = erased_elsewhere
    projection.plan(PLAN)
    assert not isinstance(projection.cache.get(PLAN), Kept), "the erased plan is kept after its erasure"


def test_a_plan_kept_at_an_earlier_position_than_a_drop_is_refused_whoever_puts_it() -> None:
    cache = PlanCache(size=4)
    cache.drop("a", 10)
    cache.put("a", Kept(plan=object(), position=9, written=None))  # type: ignore[arg-type]
    assert not isinstance(cache.get("a"), Kept)
    cache.drop("a", 8)  # an older notice does not move the drop back
    cache.put("a", Kept(plan=object(), position=9, written=None))  # type: ignore[arg-type]
    assert not isinstance(cache.get("a"), Kept)
    at_drop = Kept(plan=object(), position=10, written=None)  # type: ignore[arg-type]
    cache.put("a", at_drop)  # the write the notice was about
    assert cache.get("a") is at_drop
