"""The plan read model follows the event log: the same as a rebuild, exactly once, restartable.

Every test runs on a SQLite data folder and on a fresh PostgreSQL schema (see conftest.py).
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import threading
from collections import Counter
from collections.abc import Callable
from time import perf_counter

import pytest
from eventsourcing.persistence import ProgrammingError
from psycopg import sql

from domain.application import PlanService
from domain.demo import load_demo
from domain.errors import PlanErased
from domain.storage import StoreSettings
from domain.values import Actor
from projections import plans as plans_module
from projections.plans import PlanViews, rebuild
from projections.views import PlanViewTables
from tests.projections.conftest import _pg_connect, postgres_store_env
from tests.projections.helpers import (
    ACTORS,
    PROFESSIONS,
    all_plan_ids,
    caseloads,
    catch_up,
    notification_ids,
    random_commands,
    read_side,
    today,
    write_side,
)

DEMO = ("matti", "liisa", "ahmed", "eeva", "johan")


def demo(service: PlanService) -> dict[str, str]:
    return dict(zip(DEMO, load_demo(service), strict=True))


# --------------------------------------------------------------- incremental == rebuild


def test_incremental_follower_equals_the_write_side_and_a_rebuild(
    settings: StoreSettings, service: PlanService, open_views: Callable[..., PlanViews]
) -> None:
    views = open_views()
    demo(service)
    random_commands(service, random.Random(7), 25, "rnd")
    plan_ids = all_plan_ids(service)
    end = catch_up(views, service)

    folded = read_side(views, plan_ids)
    assert folded == write_side(service, plan_ids)
    stored = read_side(open_views(follow=False), plan_ids)  # decoded from the rows, not the cache
    assert stored == folded
    loads = caseloads(views)
    assert sum(map(len, loads.values())) > 20
    open_views.close(views)

    applied = rebuild(settings)

    assert applied == len(notification_ids(service))
    rebuilt = open_views(follow=False)
    assert rebuilt.position == end
    assert read_side(rebuilt, plan_ids) == folded
    assert caseloads(rebuilt) == loads


def test_a_cache_of_one_plan_still_folds_interleaved_plans_correctly(
    service: PlanService, open_views: Callable[..., PlanViews], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plans_module, "CACHED_PLANS", 1)
    views = open_views()
    random_commands(service, random.Random(3), 25, "small-cache")
    assert len(all_plan_ids(service)) > 1
    catch_up(views, service)
    plan_ids = all_plan_ids(service)
    assert read_side(views, plan_ids) == write_side(service, plan_ids)


# ------------------------------------------------------------- exactly once, restarts


def test_a_follower_stopped_mid_stream_applies_every_event_exactly_once(
    service: PlanService, open_views: Callable[..., PlanViews], applied: Counter[int]
) -> None:
    random_commands(service, random.Random(10), 10, "before")
    start = service.recorder.max_notification_id()
    first = open_views()

    failures: list[BaseException] = []

    def produce() -> None:
        try:
            random_commands(service, random.Random(11), 24, "stream")
        except BaseException as error:  # noqa: BLE001 - reported below, in the test's thread
            failures.append(error)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        assert first.wait_for(start + 8, timeout=10)
        open_views.close(first)  # while the producer is (most likely) still recording
        concurrent = producer.is_alive()
    finally:
        producer.join()
    assert not failures, failures
    stopped_at = first.position
    random_commands(service, random.Random(12), 10, "while-stopped")
    assert stopped_at < service.recorder.max_notification_id()

    second = open_views()
    end = catch_up(second, service)

    print(f"\nfirst follower stopped at {stopped_at} of {end} (commands still coming in: {concurrent})")
    assert second.position == end
    assert second.store.max_tracking_id(PlanService.name) == end
    assert set(applied) == set(notification_ids(service))
    assert {position: count for position, count in applied.items() if count != 1} == {}
    plan_ids = all_plan_ids(service)
    assert read_side(second, plan_ids) == write_side(service, plan_ids)


def test_a_new_follower_with_an_empty_cache_folds_on_from_the_stored_state(
    service: PlanService, open_views: Callable[..., PlanViews], monkeypatch: pytest.MonkeyPatch
) -> None:
    random_commands(service, random.Random(5), 15, "setup")
    plan_ids = all_plan_ids(service)
    first = open_views()
    catch_up(first, service)
    before = {plan_id: first.plan(plan_id).version for plan_id in plan_ids}
    open_views.close(first)

    loaded: list[str] = []
    original = PlanViewTables.plan_state

    def spying(self: PlanViewTables, plan_id: str, known: int | None = None) -> tuple[int, int, str | None] | None:
        loaded.append(plan_id)
        return original(self, plan_id, known)

    monkeypatch.setattr(PlanViewTables, "plan_state", spying)
    for plan_id in plan_ids:  # recorded while no follower runs
        expert = ACTORS[service.get_plan(plan_id).expert.person_id]
        service.add_note(plan_id, by=expert, command_id=f"offline-{plan_id}", text="Kirjattu katkon aikana.")

    second = open_views()
    catch_up(second, service)
    assert set(loaded) == set(plan_ids)  # each folded on from its stored row: nothing was cached
    assert {plan_id: second.plan(plan_id).version for plan_id in plan_ids} == {
        plan_id: version + 1 for plan_id, version in before.items()
    }

    # and it keeps folding live edits
    plan_id = plan_ids[0]
    outcome = service.record_measure(
        plan_id,
        by=ACTORS[service.get_plan(plan_id).expert.person_id],
        command_id="live-1",
        kind="self_assessment",
        value=7,
        measured_on=today(),
    )
    assert second.wait_for(outcome.position, timeout=5)
    assert second.plan(plan_id).version == outcome.version
    assert read_side(second, plan_ids) == write_side(service, plan_ids)


# ---------------------------------------------------------------------------- erasure


def _plan_with(service: PlanService, name: str, by: Actor, *members: Actor, closed: bool = False) -> str:
    """A small plan opened by `by`, with `members` in its network (and their consents)."""
    plan_id = service.open_plan(
        by=by,
        command_id=f"open-{name}",
        client_name=name,
        segment="unemployed",
        language="fi",
        referring_party="self_referral",
        expert_profession=PROFESSIONS[by.person_id],
    ).plan_id
    for member in members:
        if member.organisation_id != by.organisation_id:
            service.give_consent(
                plan_id,
                by=by,
                command_id=f"consent-{name}-{member.organisation_id}",
                organisation_id=member.organisation_id,
                organisation_name=member.organisation_name,
                valid_from=today(),
            )
        service.add_member(
            plan_id,
            by=by,
            command_id=f"add-{name}-{member.person_id}",
            person_id=member.person_id,
            name=member.name,
            profession=PROFESSIONS[member.person_id],
            organisation_id=member.organisation_id,
            organisation_name=member.organisation_name,
        )
    if closed:
        service.close_plan(plan_id, by=by, command_id=f"close-{name}", outcome="work", note="Palasi töihin.")
    return plan_id


def test_an_erased_plan_leaves_the_read_model_and_a_rebuild_does_not_bring_it_back(
    settings: StoreSettings, service: PlanService, open_views: Callable[..., PlanViews]
) -> None:
    sanna, kalle, riikka = ACTORS["sanna.koski"], ACTORS["kalle.hakala"], ACTORS["riikka.salo"]
    first = _plan_with(service, "Eino Poistuva", sanna, kalle, riikka, closed=True)
    second = _plan_with(service, "Bertta Poistuva", sanna, closed=True)
    staying = _plan_with(service, "Cecilia Jää", riikka, kalle)
    views = open_views()
    catch_up(views, service)
    views.mark_seen(kalle.person_id, first, views.plan(first).version)
    assert {e.plan_id for e in views.caseload(person_id=kalle.person_id)} == {first, staying}

    erased = service.erase_plan(first, by=sanna, reason="Säilytysaika päättyi")

    assert views.wait_for(erased.position, timeout=5)
    views.check_running()
    assert views.plan(first) is None
    with pytest.raises(PlanErased):
        service.get_plan(first)
    assert [e.plan_id for e in views.caseload(person_id=kalle.person_id)] == [staying]
    assert [e.plan_id for e in views.caseload(person_id=riikka.person_id)] == [staying]
    assert [e.plan_id for e in views.caseload(person_id=kalle.person_id, organisation_id="kuntoutus-oy")] == [staying]
    assert [e.plan_id for e in views.caseload(person_id=sanna.person_id)] == [second]

    # erased while no follower runs: the next one drops its rows on catching up
    open_views.close(views)
    service.erase_plan(second, by=sanna, reason="Säilytysaika päättyi")
    restarted = open_views()
    catch_up(restarted, service)
    assert restarted.plan(second) is None
    assert restarted.caseload(person_id=sanna.person_id) == []
    assert read_side(restarted, [staying]) == write_side(service, [staying])
    loads = caseloads(restarted)
    assert all({first, second}.isdisjoint(e.plan_id for e in entries) for entries in loads.values())
    open_views.close(restarted)

    applied = rebuild(settings)  # reads past the events nobody can decrypt any more

    assert applied == len(notification_ids(service))
    rebuilt = open_views(follow=False)
    assert rebuilt.plan(first) is None and rebuilt.plan(second) is None
    assert read_side(rebuilt, [staying]) == write_side(service, [staying])
    assert caseloads(rebuilt) == loads

    # a follower starting from an empty read model (the subscription's path) reads past them too
    rebuilt.store.clear(PlanService.name)
    fresh = open_views()
    catch_up(fresh, service)
    assert fresh.plan(first) is None and fresh.plan(second) is None
    assert read_side(fresh, [staying]) == write_side(service, [staying])
    assert caseloads(fresh) == loads


# ---------------------------------------------------------------------------- wait_for


def test_wait_for_returns_soon_after_a_local_save_and_false_on_timeout(
    settings: StoreSettings, service: PlanService, open_views: Callable[..., PlanViews]
) -> None:
    plan_id = service.open_plan(
        by=ACTORS["pekka.nieminen"],
        command_id="open-latency",
        client_name="Viive Asiakas",
        segment="employed",
        language="fi",
        referring_party="kela",
        expert_profession="Kelan asiantuntija",
    ).plan_id
    views = open_views()
    end = catch_up(views, service)
    started = perf_counter()
    assert views.wait_for(end, timeout=5)  # reached already: no waiting
    already = perf_counter() - started

    latencies = []
    for n in range(10):
        outcome = service.add_note(plan_id, by=ACTORS["pekka.nieminen"], command_id=f"latency-{n}", text="Kuitattu.")
        started = perf_counter()
        assert views.wait_for(outcome.position, timeout=5)
        latencies.append(perf_counter() - started)
        assert views.plan(plan_id).version == outcome.version

    never = service.recorder.max_notification_id() + 1_000
    started = perf_counter()
    assert views.wait_for(never, timeout=0.2) is False
    timed_out = perf_counter() - started
    assert timed_out < 5
    print(
        f"\n[{settings.kind}] wait_for after a local save: median {statistics.median(latencies) * 1000:.2f} ms,"
        f" max {max(latencies) * 1000:.2f} ms; already reached: {already * 1000:.3f} ms;"
        f" timeout 0.2 s returned after {timed_out:.3f} s"
    )


def test_each_waiting_page_returns_when_its_own_position_is_applied_and_a_timeout_leaves_no_waiter(
    service: PlanService, open_views: Callable[..., PlanViews]
) -> None:
    """Waiters are woken by position (a heap), not all at every event: each returns True as
    soon as the read model reaches its position, not before, and one that timed out is gone."""
    plan_id = service.open_plan(
        by=ACTORS["pekka.nieminen"],
        command_id="open-waiters",
        client_name="Odottava Asiakas",
        segment="employed",
        language="fi",
        referring_party="kela",
        expert_profession="Kelan asiantuntija",
    ).plan_id
    views = open_views()
    start = catch_up(views, service)
    # every notification id after the plan's last one is one of its next notes (one writer here)
    positions = [start + 3, start + 1, start + 2, start + 2]
    results: dict[int, bool] = {}

    def wait(index: int) -> None:
        results[index] = views.wait_for(positions[index], timeout=10)

    waiters = [threading.Thread(target=wait, args=(index,)) for index in range(len(positions))]
    for waiter in waiters:
        waiter.start()
    for n in range(1, 4):
        outcome = service.add_note(plan_id, by=ACTORS["pekka.nieminen"], command_id=f"waiters-{n}", text="Kuitattu.")
        assert outcome.position == start + n
        for index, position in enumerate(positions):
            if position <= outcome.position:
                waiters[index].join(5)
                assert results.get(index) is True
            else:
                assert index not in results and waiters[index].is_alive()
    assert views.wait_for(start + 100, timeout=0.1) is False
    assert views._waiting == []


def test_a_page_waits_on_the_event_loop_for_its_position_and_a_timeout_leaves_no_waiter(
    service: PlanService, open_views: Callable[..., PlanViews]
) -> None:
    """``reached``: ``wait_for`` for an edit's answer that waits without a worker thread, woken
    from the follower's thread; the loop is free meanwhile."""
    plan_id = service.open_plan(
        by=ACTORS["pekka.nieminen"], command_id="open-loop-waiter", client_name="Silmukka Asiakas", segment="employed",
        language="fi", referring_party="kela", expert_profession="Kelan asiantuntija",
    ).plan_id
    views = open_views()
    start = catch_up(views, service)

    async def scenario() -> tuple[bool, int, bool, bool]:
        waiting = asyncio.ensure_future(views.reached(start + 1, timeout=10))
        ticks = 0
        while len(views._waiting) < 1:  # the loop goes on while the page waits
            ticks += 1
            await asyncio.sleep(0.01)
        saved = await asyncio.to_thread(
            service.add_note, plan_id, by=ACTORS["pekka.nieminen"], command_id="loop-waiter", text="Kuitattu."
        )
        assert saved.position == start + 1
        return await waiting, ticks, await views.reached(start + 1), await views.reached(start + 100, timeout=0.1)

    woken, ticks, already, never = asyncio.run(scenario())
    assert (woken, already, never) == (True, True, False)
    assert ticks >= 1
    assert views._waiting == []


# -------------------------------------------------------------------------------- CLI


def test_cli_projections_rebuild_rebuilds_and_prints_the_count(
    store_env: dict[str, str],
    service: PlanService,
    open_views: Callable[..., PlanViews],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from web.cli import main

    for name in list(os.environ):
        if name.startswith("POLKU_"):
            monkeypatch.delenv(name)
    for name, value in store_env.items():
        monkeypatch.setenv(name, value)
    random_commands(service, random.Random(21), 12, "cli")
    plan_ids = all_plan_ids(service)
    count = len(notification_ids(service))

    assert main(["projections", "rebuild"]) == 0

    assert f"Rebuilt the plan views from {count} events." in capsys.readouterr().out
    views = open_views(follow=False)
    assert views.position == service.recorder.max_notification_id()
    assert read_side(views, plan_ids) == write_side(service, plan_ids)


# ------------------------------------------------------------------------- known bugs


@pytest.mark.postgres
def test_postgres_view_schema_is_created_by_polku(postgres_env: dict[str, str], pg_schema: str) -> None:
    settings = StoreSettings.from_environ(postgres_store_env(postgres_env, pg_schema))
    try:
        views = PlanViews(settings, follow=False)
        views.close()
    finally:
        with _pg_connect(postgres_env) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(f"{pg_schema}_views")))
