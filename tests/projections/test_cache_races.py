"""The follower's in-memory plan cache, shared with the threads that read plans for pages.

`PlanViews.plan()` is called from request threads while the projection runner's thread
folds events into the same cache (`PlanCache`). These tests hold a reader
thread between reading a plan's stored row and caching it (`ReaderGate`), which is the
window a busy server hits by chance, and pin what goes wrong there.

The cache does not depend on the store, so they run on SQLite only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from domain.application import PlanService
from projections.plans import PlanViews
from tests.projections.helpers import ACTORS, catch_up

PEKKA = ACTORS["pekka.nieminen"]


@pytest.fixture
def store_env(data_dir: Path) -> dict[str, str]:
    return {"POLKU_STORE": "sqlite", "POLKU_DATA_DIR": str(data_dir)}


class ReaderGate:
    """Holds the thread named "page" between reading a plan's row and caching it."""

    def __init__(self, views: PlanViews):
        self.views = views
        self.has_read = threading.Event()
        self.release = threading.Event()
        self.result: list[Any] = []
        real = views.store.plan_state

        def gated(plan_id: str, known: int | None = None) -> Any:
            row = real(plan_id, known)
            if threading.current_thread().name == "page":
                self.has_read.set()
                self.release.wait(5)
            return row

        views.store.plan_state = gated  # type: ignore[method-assign]

    def start(self, plan_id: str) -> None:
        self.thread = threading.Thread(target=lambda: self.result.append(self.views.plan(plan_id)), name="page")
        self.thread.start()
        assert self.has_read.wait(5), "the page thread never read the plan's row"

    def finish(self) -> Any:
        self.release.set()
        self.thread.join(5)
        return self.result[0]


def open_plan(service: PlanService, *, closed: bool = False) -> str:
    plan_id = service.open_plan(
        by=PEKKA,
        command_id="open",
        client_name="Kilpa Asiakas",
        segment="employed",
        language="fi",
        referring_party="kela",
        expert_profession="Kelan asiantuntija",
    ).plan_id
    service.add_note(plan_id, by=PEKKA, command_id="note-0", text="Alku.")
    if closed:
        service.close_plan(plan_id, by=PEKKA, command_id="close", outcome="work")
    return plan_id


def follower_with_an_empty_cache(service: PlanService, open_views: Callable[..., PlanViews]) -> PlanViews:
    """A follower that is up to date but has not cached any plan yet (as after a restart)."""
    first = open_views()
    catch_up(first, service)
    open_views.close(first)  # type: ignore[attr-defined]
    views = open_views()
    catch_up(views, service)
    return views


def test_the_gate_itself_lets_a_quiet_read_through(service: PlanService, open_views: Callable[..., PlanViews]) -> None:
    plan_id = open_plan(service)
    views = follower_with_an_empty_cache(service, open_views)
    gate = ReaderGate(views)
    gate.start(plan_id)
    assert gate.finish().version == service.get_plan(plan_id).version
    assert views.plan(plan_id).version == service.get_plan(plan_id).version


def test_a_page_reading_a_plan_while_the_follower_folds_it_leaves_no_stale_plan_behind(
    service: PlanService, open_views: Callable[..., PlanViews]
) -> None:
    plan_id = open_plan(service)
    views = follower_with_an_empty_cache(service, open_views)
    gate = ReaderGate(views)
    gate.start(plan_id)

    outcome = service.add_note(plan_id, by=PEKKA, command_id="note-1", text="Samaan aikaan.")
    assert views.wait_for(outcome.position, timeout=5)
    gate.finish()

    assert views.plan(plan_id).version == outcome.version


def test_a_page_reading_a_plan_while_it_is_erased_does_not_bring_it_back(
    service: PlanService, open_views: Callable[..., PlanViews]
) -> None:
    plan_id = open_plan(service, closed=True)
    views = follower_with_an_empty_cache(service, open_views)
    gate = ReaderGate(views)
    gate.start(plan_id)

    erased = service.erase_plan(plan_id, by=PEKKA, reason="Säilytysaika päättyi")
    assert views.wait_for(erased.position, timeout=5)
    gate.finish()

    assert views.plan(plan_id) is None


def test_a_plan_handed_to_a_page_does_not_change_under_it(
    service: PlanService, open_views: Callable[..., PlanViews]
) -> None:
    plan_id = open_plan(service)
    views = open_views()
    catch_up(views, service)
    plan = views.plan(plan_id)
    version, notes = plan.version, len(plan.notes)

    outcome = service.add_note(plan_id, by=PEKKA, command_id="note-1", text="Sivun piirron aikana.")
    assert views.wait_for(outcome.position, timeout=5)

    assert views.plan(plan_id).version == outcome.version
    assert (plan.version, len(plan.notes)) == (version, notes)
