"""The plan service on a real SQLite store: repeats, conflicts, concurrency, time travel,
history, erasure and encryption at rest.

Each test gets its own data folder (`tmp_path`) and a `PlanService` whose clock advances by
one minute at every reading, so every recorded event has its own moment. The people are
the fixtures of `conftest.py` (Anna the named expert, Bert of Kela the counterpart, Carla of
the employment services).
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from eventsourcing.domain import Snapshot
from eventsourcing.persistence import InterfaceError, OperationalError, RecordConflictError
from psycopg_pool import PoolTimeout

from domain.application import Outcome, PlanService
from domain.crypto import ENCRYPTED, ErasedPlanEvent
from domain.errors import (
    EditConflict,
    InvalidValue,
    PlanErased,
    PlanNotFound,
    RuleViolation,
    StoreBusy,
    StoreUnavailable,
)
from domain.items import Receipt
from domain.postgres import InsertConnectionBusy
from domain.storage import StoreSettings
from domain.values import Actor

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
TODAY = START.date()


class FakeClock:
    """Reads `START`, then one `step` later at every further reading (thread-safe)."""

    def __init__(self, start: datetime = START, step: timedelta = timedelta(minutes=1)):
        self.now = start
        self.step = step
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            now = self.now
            self.now += self.step
            return now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def service(tmp_path: Path, clock: FakeClock) -> Iterator[PlanService]:
    app = PlanService(StoreSettings(data_dir=str(tmp_path)), clock=clock)
    try:
        yield app
    finally:
        app.close()


_command_ids = iter(range(1, 10**9))


def cid() -> str:
    return f"cmd-{next(_command_ids)}"


def open_plan(service: PlanService, by: Actor, *, command_id: str | None = None, **overrides: Any) -> Outcome:
    fields: dict[str, Any] = {
        "client_name": "Maija Mäkinen",
        "segment": "unemployed",
        "language": "fi",
        "referring_party": "employment_services",
        "expert_profession": "nurse",
    }
    fields.update(overrides)
    return service.open_plan(by=by, command_id=command_id or cid(), **fields)


def event_count(service: PlanService, plan_id: str) -> int:
    return len(list(service.events.get(uuid.UUID(plan_id))))


def add_to_network(service: PlanService, plan_id: str, by: Actor, person: Actor, **fields: Any) -> str:
    fields.setdefault("profession", "adviser")
    return service.add_member(
        plan_id,
        by=by,
        command_id=cid(),
        person_id=person.person_id,
        name=person.name,
        organisation_id=person.organisation_id,
        organisation_name=person.organisation_name,
        **fields,
    ).item_id


def record_need(
    service: PlanService, plan_id: str, by: Actor, description: str = "Back pain", **fields: Any
) -> Outcome:
    fields.setdefault("category", "health")
    return service.record_need(
        plan_id, by=by, command_id=fields.pop("command_id", cid()), description=description, **fields
    )


def update_need(
    service: PlanService, plan_id: str, by: Actor, need_id: str, seen_revision: int, description: str
) -> Outcome:
    return service.update_need(
        plan_id,
        by=by,
        command_id=cid(),
        need_id=need_id,
        seen_revision=seen_revision,
        category="health",
        description=description,
        financial="",
        status="being_addressed",
    )


@dataclass
class TeamPlan:
    """A plan Anna opened, with Bert (Kela) as counterpart, Carla in the network and two needs."""

    plan_id: str
    bert_id: str
    carla_id: str
    health_need: str
    work_need: str


@pytest.fixture
def team(service: PlanService, anna: Actor, bert: Actor, carla: Actor) -> TeamPlan:
    plan_id = open_plan(service, anna).plan_id
    for person in (bert, carla):
        service.give_consent(
            plan_id,
            by=anna,
            command_id=cid(),
            organisation_id=person.organisation_id,
            organisation_name=person.organisation_name,
            valid_from=TODAY,
        )
    bert_id = add_to_network(service, plan_id, anna, bert, profession="benefits officer")
    carla_id = add_to_network(service, plan_id, anna, carla, profession="employment adviser")
    service.name_counterpart(plan_id, by=anna, command_id=cid(), member_id=bert_id, seen_revision=0)
    health_need = record_need(service, plan_id, anna, "Back pain").item_id
    work_need = record_need(service, plan_id, anna, "No work for a year", category="work_and_employment").item_id
    return TeamPlan(plan_id, bert_id, carla_id, health_need, work_need)


# --- opening and repeats -----------------------------------------------------------------


def test_opening_a_plan_returns_its_id_at_version_one(service: PlanService, anna: Actor) -> None:
    outcome = open_plan(service, anna)

    assert outcome.item_id == outcome.plan_id
    assert (outcome.version, outcome.repeated) == (1, False)
    assert outcome.position >= 1
    plan = service.get_plan(outcome.plan_id)
    assert (plan.client.name, plan.expert.name, plan.version) == ("Maija Mäkinen", anna.name, 1)


def test_repeating_the_opening_returns_the_same_plan_and_records_nothing(service: PlanService, anna: Actor) -> None:
    first = open_plan(service, anna, command_id="open-once")

    again = open_plan(service, anna, command_id="open-once")

    assert again.repeated
    assert (again.plan_id, again.item_id, again.version) == (first.plan_id, first.item_id, 1)
    assert again.position >= first.position
    assert event_count(service, first.plan_id) == 1
    assert list(service.plan_ids()) == [uuid.UUID(first.plan_id)]


@pytest.mark.parametrize("differs", ["client_name", "person"])
def test_an_opening_id_sent_again_for_another_plan_is_refused(
    service: PlanService, anna: Actor, bert: Actor, differs: str
) -> None:
    """Another client's name (a form sent again from the browser's history after an edit),
    or another person, under the id of an opening: answering it with the first plan would
    say "opened" for a plan that was never opened."""
    first = open_plan(service, anna, command_id="open-once")

    with pytest.raises(RuleViolation, match="already used") as refusal:
        if differs == "client_name":
            open_plan(service, anna, command_id="open-once", client_name="Someone Else")
        else:
            open_plan(service, bert, command_id="open-once")

    assert refusal.value.field == "command_id"
    assert event_count(service, first.plan_id) == 1
    assert service.get_plan(first.plan_id).client.name == "Maija Mäkinen"


def test_a_repeated_command_returns_the_first_answer_and_records_nothing(
    service: PlanService, team: TeamPlan, bert: Actor
) -> None:
    first = record_need(service, team.plan_id, bert, "Debts", category="everyday_life", command_id="need-once")
    events = event_count(service, team.plan_id)

    again = record_need(service, team.plan_id, bert, "Debts", category="everyday_life", command_id="need-once")

    assert again.repeated and not first.repeated
    assert (again.plan_id, again.item_id, again.version) == (first.plan_id, first.item_id, first.version)
    assert again.position >= first.position
    assert event_count(service, team.plan_id) == events


def test_a_command_repeated_after_other_commands_still_returns_the_first_answer(
    service: PlanService, team: TeamPlan, bert: Actor, carla: Actor
) -> None:
    first = record_need(service, team.plan_id, bert, "Debts", category="everyday_life", command_id="need-early")
    for _ in range(3):
        service.add_note(team.plan_id, by=carla, command_id=cid(), text="Called the client")
    events = event_count(service, team.plan_id)

    again = record_need(service, team.plan_id, bert, "Debts", category="everyday_life", command_id="need-early")

    assert again.repeated
    assert (again.item_id, again.version) == (first.item_id, first.version)
    assert event_count(service, team.plan_id) == events
    assert [n.description for n in service.get_plan(team.plan_id).needs.values()].count("Debts") == 1


def test_a_command_sent_again_with_other_content_is_refused_and_records_nothing(
    service: PlanService, team: TeamPlan, bert: Actor, carla: Actor
) -> None:
    """A retry after a lost answer, edited in between (or a form sent again from the
    browser's history): answering it "saved" would drop what was typed the second time."""
    first = record_need(service, team.plan_id, bert, "Debts", category="everyday_life", command_id="need-once")
    service.add_note(team.plan_id, by=carla, command_id=cid(), text="Called the client")
    events = event_count(service, team.plan_id)

    with pytest.raises(RuleViolation, match="already used") as refusal:
        record_need(service, team.plan_id, bert, "Debts and rent arrears", category="everyday_life",
                    command_id="need-once")

    assert refusal.value.field == "command_id"
    assert event_count(service, team.plan_id) == events
    assert service.get_plan(team.plan_id).needs[first.item_id].description == "Debts"


def test_an_edit_sent_again_with_other_content_is_refused_though_the_same_edit_is_a_repeat(
    service: PlanService, team: TeamPlan, bert: Actor
) -> None:
    fields = dict(need_id=team.health_need, seen_revision=1, category="health", description="Back pain",
                  financial="", status="resolved")
    first = service.update_need(team.plan_id, by=bert, command_id="edit-once", **fields)
    events = event_count(service, team.plan_id)

    again = service.update_need(team.plan_id, by=bert, command_id="edit-once", **fields)
    with pytest.raises(RuleViolation, match="already used"):
        service.update_need(team.plan_id, by=bert, command_id="edit-once", **{**fields, "description": "Knees"})

    assert again.repeated and (again.item_id, again.version) == (first.item_id, first.version)
    assert event_count(service, team.plan_id) == events
    assert service.get_plan(team.plan_id).needs[team.health_need].description == "Back pain"


def test_a_receipt_kept_before_receipts_named_their_kind_still_tells_a_repeat_from_another_change(
    service: PlanService, anna: Actor
) -> None:
    """Such a receipt (in a snapshot of an older release) counts any command with its id as
    its repeat: the content decides, and the opening's id is refused, not run into the void."""
    opened = open_plan(service, anna, command_id="open-old")
    service.add_note(opened.plan_id, by=anna, command_id="note-old", text="Called the client")
    plan = service.get_plan(opened.plan_id)
    for command_id, receipt in list(plan.receipts.items()):
        plan.receipts[command_id] = Receipt(item_id=receipt.item_id, version=receipt.version)
    service.snapshots.put([Snapshot.take(plan)])
    service._forget_cached(plan.id)
    events = event_count(service, opened.plan_id)

    again = service.add_note(opened.plan_id, by=anna, command_id="note-old", text="Called the client")
    with pytest.raises(RuleViolation, match="already used"):
        service.add_note(opened.plan_id, by=anna, command_id="note-old", text="Called the client twice")
    with pytest.raises(RuleViolation, match="already used"):
        service.add_note(opened.plan_id, by=anna, command_id="open-old", text="Called the client")

    assert again.repeated
    assert event_count(service, opened.plan_id) == events


@pytest.mark.parametrize("second", ["another kind of command", "the same command by someone else"])
def test_a_command_id_used_already_by_another_command_is_refused_and_records_nothing(
    service: PlanService, team: TeamPlan, bert: Actor, carla: Actor, second: str
) -> None:
    """A client that reuses ids (a bug, or on purpose) is told, never answered "saved" for a
    change that was not made."""
    service.add_note(team.plan_id, by=bert, command_id="used-once", text="Called the client")
    events = event_count(service, team.plan_id)

    with pytest.raises(RuleViolation, match="already used") as refusal:
        if second == "another kind of command":
            record_need(service, team.plan_id, bert, "Debts", category="everyday_life", command_id="used-once")
        else:
            service.add_note(team.plan_id, by=carla, command_id="used-once", text="Called the client")

    assert refusal.value.field == "command_id"
    assert event_count(service, team.plan_id) == events
    assert "Debts" not in [n.description for n in service.get_plan(team.plan_id).needs.values()]


def test_a_repeated_edit_returns_the_first_answer_even_though_its_revision_is_stale_now(
    service: PlanService, team: TeamPlan, bert: Actor
) -> None:
    fields = dict(
        need_id=team.health_need,
        seen_revision=1,
        category="health",
        description="Back pain",
        financial="",
        status="resolved",
    )
    first = service.update_need(team.plan_id, by=bert, command_id="edit-once", **fields)

    again = service.update_need(team.plan_id, by=bert, command_id="edit-once", **fields)

    assert again.repeated
    assert (again.item_id, again.version) == (first.item_id, first.version)


def test_a_repeated_change_of_client_details_returns_the_same_item(service: PlanService, anna: Actor) -> None:
    plan_id = open_plan(service, anna).plan_id
    fields = dict(seen_revision=0, client_name="Maija M.", segment="employed", language="fi", referring_party="kela")

    first = service.change_client_details(plan_id, by=anna, command_id="details-once", **fields)
    again = service.change_client_details(plan_id, by=anna, command_id="details-once", **fields)

    assert again.repeated
    assert (again.item_id, again.version) == (first.item_id, first.version)


def test_a_refused_command_records_nothing_and_the_plan_stays_usable(
    service: PlanService, team: TeamPlan, anna: Actor, bert: Actor
) -> None:
    expert_id = service.get_plan(team.plan_id).expert.id
    events = event_count(service, team.plan_id)

    with pytest.raises(RuleViolation, match="named expert"):
        service.remove_member(team.plan_id, by=bert, command_id="refused-remove", member_id=expert_id, seen_revision=0)

    assert event_count(service, team.plan_id) == events
    assert expert_id in service.get_plan(team.plan_id).members
    outcome = service.add_note(team.plan_id, by=bert, command_id=cid(), text="Still here")
    assert outcome.version == events + 1


def test_a_command_id_with_surrounding_spaces_is_refused_and_records_nothing(
    service: PlanService, team: TeamPlan, bert: Actor
) -> None:
    """A repeat is recognised by its exact command id, so an id that could be read two ways is refused."""
    events = event_count(service, team.plan_id)

    with pytest.raises(InvalidValue) as caught:
        record_need(service, team.plan_id, bert, "Debts", command_id=" need-1 ")

    assert caught.value.field == "command_id"
    assert event_count(service, team.plan_id) == events


def test_positions_grow_with_every_recorded_command(service: PlanService, team: TeamPlan, carla: Actor) -> None:
    positions = [service.add_note(team.plan_id, by=carla, command_id=cid(), text="x").position for _ in range(3)]
    assert positions == sorted(set(positions))


# --- conflicts ---------------------------------------------------------------------------


def test_editors_of_different_items_never_conflict(
    service: PlanService, team: TeamPlan, bert: Actor, carla: Actor
) -> None:
    seen = service.get_plan(team.plan_id)
    health_revision, work_revision = seen.needs[team.health_need].revision, seen.needs[team.work_need].revision

    update_need(service, team.plan_id, bert, team.health_need, health_revision, "Back pain, easing")
    update_need(service, team.plan_id, carla, team.work_need, work_revision, "Looking for a work trial")

    plan = service.get_plan(team.plan_id)
    assert plan.needs[team.health_need].description == "Back pain, easing"
    assert plan.needs[team.work_need].description == "Looking for a work trial"


def test_threads_editing_one_plan_never_read_it_from_the_cache_at_the_same_time(
    service: PlanService, team: TeamPlan, anna: Actor, bert: Actor, carla: Actor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The library copies a cached plan outside the lock under which another thread brings
    the same cached plan up to date; PlanService lets one command at a time read a plan."""
    inside: list[int] = [0]
    most: list[int] = [0]
    count_lock = threading.Lock()
    get = service.repository.get

    def counting_get(*args: Any, **kwargs: Any) -> Any:
        with count_lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        try:
            time.sleep(0.001)  # widen the window a race would need
            return get(*args, **kwargs)
        finally:
            with count_lock:
                inside[0] -= 1

    monkeypatch.setattr(service.repository, "get", counting_get)
    before = event_count(service, team.plan_id)
    editors, rounds = [anna, bert, carla, anna, bert, carla], 15
    start = threading.Barrier(len(editors))
    failures: list[BaseException] = []

    def edit(by: Actor) -> None:
        try:
            start.wait()
            for n in range(rounds):
                service.add_note(team.plan_id, by=by, command_id=cid(), text=f"{by.name} {n}")
                service.get_plan(team.plan_id)
        except BaseException as error:  # reported below
            failures.append(error)

    threads = [threading.Thread(target=edit, args=(by,)) for by in editors]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert not failures, failures
    assert most[0] == 1
    assert event_count(service, team.plan_id) == before + len(editors) * rounds
    assert len(service.plan_record(team.plan_id).notes) == len(editors) * rounds


def test_a_command_waiting_too_long_for_its_plan_is_refused_as_busy(
    tmp_path: Path, anna: Actor, carla: Actor
) -> None:
    service = PlanService(StoreSettings(data_dir=str(tmp_path), lock_timeout_s=1))
    try:
        plan_id = open_plan(service, anna).plan_id
        held, release = threading.Event(), threading.Event()

        def hold_the_plan() -> None:
            with service._plan_locks.holding(uuid.UUID(plan_id)):
                held.set()
                release.wait(10)

        holder = threading.Thread(target=hold_the_plan)
        holder.start()
        held.wait(5)
        try:
            with pytest.raises(StoreBusy):
                service.add_note(plan_id, by=carla, command_id=cid(), text="late")
        finally:
            release.set()
            holder.join()
        assert service.add_note(plan_id, by=carla, command_id=cid(), text="in time").version == 2
    finally:
        service.close()


def test_a_stale_revision_is_an_edit_conflict_naming_the_other_editor(
    service: PlanService, team: TeamPlan, bert: Actor, carla: Actor
) -> None:
    update_need(service, team.plan_id, bert, team.health_need, 1, "Back pain, easing")
    events = event_count(service, team.plan_id)

    with pytest.raises(EditConflict) as caught:
        update_need(service, team.plan_id, carla, team.health_need, 1, "Back pain, worse")

    assert bert.name in str(caught.value)
    (change,) = caught.value.changes
    assert (change["by_name"], change["by_organisation"], change["fields"]) == (
        bert.name,
        bert.organisation_name,
        ["description", "status"],
    )
    assert event_count(service, team.plan_id) == events
    assert service.get_plan(team.plan_id).needs[team.health_need].description == "Back pain, easing"


def test_an_editor_several_changes_behind_is_told_every_change_since(
    service: PlanService, team: TeamPlan, anna: Actor, bert: Actor, carla: Actor
) -> None:
    """The plan itself keeps only each item's latest change; the rest come from its events."""
    for revision, (by, words) in enumerate([(bert, "easing"), (anna, "better"), (bert, "gone")], start=1):
        update_need(service, team.plan_id, by, team.health_need, revision, f"Back pain, {words}")

    with pytest.raises(EditConflict) as caught:
        update_need(service, team.plan_id, carla, team.health_need, 1, "Back pain, worse")

    conflict = caught.value
    assert (conflict.seen_revision, conflict.current_revision) == (1, 4)
    assert [(c["revision"], c["by_name"]) for c in conflict.changes] == [(2, bert.name), (3, anna.name), (4, bert.name)]
    assert bert.name in str(conflict) and anna.name in str(conflict)


def test_a_command_on_a_plan_another_instance_changed_runs_on_the_fresh_plan(
    service: PlanService, team: TeamPlan, bert: Actor, carla: Actor
) -> None:
    """Commands run on the cached plan without asking the store for newer events; a plan
    changed by another instance is caught by the store (a version clash) or, for a
    refusal, by judging the command again on the fresh plan."""
    service.get_plan(team.plan_id)  # cached here at its current version
    other = PlanService(service.settings)
    try:
        update_need(other, team.plan_id, bert, team.health_need, 1, "Back pain, easing")
    finally:
        other.close()

    seen_elsewhere = update_need(service, team.plan_id, carla, team.health_need, 2, "Back pain, gone")
    note = service.add_note(team.plan_id, by=carla, command_id=cid(), text="After both")

    assert (seen_elsewhere.version, note.version) == (event_count(service, team.plan_id) - 1, event_count(service, team.plan_id))
    need = service.get_plan(team.plan_id).needs[team.health_need]
    assert (need.revision, need.description) == (3, "Back pain, gone")
    with pytest.raises(EditConflict) as caught:
        update_need(service, team.plan_id, carla, team.health_need, 1, "Too late")
    assert [change["revision"] for change in caught.value.changes] == [2, 3]


def test_a_command_asks_the_store_nothing_before_its_save(
    service: PlanService, team: TeamPlan, carla: Actor, monkeypatch: pytest.MonkeyPatch
) -> None:
    service.add_note(team.plan_id, by=carla, command_id=cid(), text="warm up")
    reads: list[Any] = []
    select = service.recorder.select_events
    monkeypatch.setattr(service.recorder, "select_events", lambda *a, **k: reads.append(a) or select(*a, **k))

    service.add_note(team.plan_id, by=carla, command_id=cid(), text="no read first")

    assert reads == []


def _interloping(service: PlanService, monkeypatch: pytest.MonkeyPatch, interloper: Any) -> list[str]:
    """Make the next save lose a race: `interloper()` saves another command just before it."""
    original_save = service.save
    calls: list[str] = []

    def save(*aggregates: Any, **kwargs: Any) -> Any:
        if not calls:
            calls.append("interloper")
            interloper()
        else:
            calls.append("save")
        return original_save(*aggregates, **kwargs)

    monkeypatch.setattr(service, "save", save)
    return calls


def test_a_version_clash_in_the_store_is_retried_on_the_fresh_plan(
    service: PlanService, team: TeamPlan, bert: Actor, carla: Actor, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = event_count(service, team.plan_id)
    calls = _interloping(
        service,
        monkeypatch,
        lambda: service.add_note(team.plan_id, by=carla, command_id="interloper", text="Meanwhile"),
    )

    outcome = update_need(service, team.plan_id, bert, team.health_need, 1, "Back pain, easing")

    assert calls == ["interloper", "save", "save"]  # the interloper's save, our clash, our retry
    assert outcome.version == before + 2
    assert event_count(service, team.plan_id) == before + 2
    plan = service.plan_record(team.plan_id)
    assert plan.notes[-1].text == "Meanwhile"
    assert plan.needs[team.health_need].description == "Back pain, easing"


def test_a_version_clash_over_the_same_item_becomes_an_edit_conflict(
    service: PlanService, team: TeamPlan, bert: Actor, carla: Actor, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = event_count(service, team.plan_id)
    _interloping(
        service, monkeypatch, lambda: update_need(service, team.plan_id, carla, team.health_need, 1, "Carla's words")
    )

    with pytest.raises(EditConflict, match=carla.name):
        update_need(service, team.plan_id, bert, team.health_need, 1, "Bert's words")

    assert event_count(service, team.plan_id) == before + 1
    assert service.get_plan(team.plan_id).needs[team.health_need].description == "Carla's words"


def test_a_store_that_keeps_clashing_answers_store_busy(
    service: PlanService, team: TeamPlan, carla: Actor, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = event_count(service, team.plan_id)

    def always_clash(*aggregates: Any, **kwargs: Any) -> Any:
        raise RecordConflictError("version clash")

    monkeypatch.setattr(service, "save", always_clash)

    with pytest.raises(StoreBusy, match="try again"):
        service.add_note(team.plan_id, by=carla, command_id=cid(), text="Hello")
    monkeypatch.undo()
    assert event_count(service, team.plan_id) == before


def _locked_sqlite() -> sqlite3.OperationalError:
    error = sqlite3.OperationalError("database is locked")
    error.sqlite_errorcode = sqlite3.SQLITE_BUSY  # type: ignore[attr-defined]  # as SQLite sets it
    return error


def _raised_from(error: Exception, cause: BaseException | None) -> Exception:
    error.__cause__ = cause
    return error


#: What a save can fail with, and the refusal it must become: other writers holding the plan
#: or its table are StoreBusy ("the plan is busy"); a database out of reach is StoreUnavailable.
STORE_FAILURES = [
    pytest.param(_raised_from(OperationalError("lock timeout"), psycopg.errors.LockNotAvailable("lock timeout")),
                 StoreBusy, id="lock-timeout"),
    pytest.param(_raised_from(OperationalError("deadlock"), psycopg.errors.DeadlockDetected("deadlock")),
                 StoreBusy, id="deadlock"),
    pytest.param(_raised_from(OperationalError("database is locked"), _locked_sqlite()), StoreBusy, id="sqlite-locked"),
    pytest.param(psycopg.errors.LockNotAvailable("key store locked"), StoreBusy, id="key-store-locked"),
    pytest.param(_locked_sqlite(), StoreBusy, id="sqlite-key-store-locked"),
    pytest.param(InsertConnectionBusy("No connection to insert with after 30 s"), StoreBusy, id="inserting-threads"),
    pytest.param(_raised_from(OperationalError("connection refused"), psycopg.OperationalError("connection refused")),
                 StoreUnavailable, id="connection-refused"),
    pytest.param(_raised_from(OperationalError("too many clients"), psycopg.errors.TooManyConnections("too many")),
                 StoreUnavailable, id="too-many-clients"),
    pytest.param(_raised_from(OperationalError("no connection"), PoolTimeout("couldn't get a connection")),
                 StoreUnavailable, id="no-free-connection"),
    pytest.param(_raised_from(OperationalError("terminated"), psycopg.errors.AdminShutdown("terminating connection")),
                 StoreUnavailable, id="connection-dropped"),
    pytest.param(InterfaceError("the connection is closed"), StoreUnavailable, id="connection-closed"),
    pytest.param(psycopg.OperationalError("key store unreachable"), StoreUnavailable, id="key-store-unreachable"),
    pytest.param(sqlite3.OperationalError("unable to open database file"), StoreUnavailable,
                 id="sqlite-key-store-unreachable"),
]


@pytest.mark.parametrize(("failure", "refusal"), STORE_FAILURES)
def test_a_store_failure_is_busy_when_others_hold_the_store_and_unavailable_when_out_of_reach(
    service: PlanService, team: TeamPlan, carla: Actor, monkeypatch: pytest.MonkeyPatch,
    failure: Exception, refusal: type[Exception],
) -> None:
    before = event_count(service, team.plan_id)

    def fail(*aggregates: Any, **kwargs: Any) -> Any:
        raise failure

    monkeypatch.setattr(service, "save", fail)

    with pytest.raises(refusal) as refused:
        service.add_note(team.plan_id, by=carla, command_id=cid(), text="Hello")
    assert refused.value.__cause__ is failure  # the database's error stays in the log
    with pytest.raises(refusal):
        open_plan(service, carla)
    monkeypatch.undo()
    assert event_count(service, team.plan_id) == before
    assert service.add_note(team.plan_id, by=carla, command_id=cid(), text="Hello").version == before + 1


def test_a_key_store_another_process_holds_is_busy_not_a_crash(
    service: PlanService, carla: Actor, tmp_path: Path
) -> None:
    """A `polku` command holding `keys.sqlite3` past the busy timeout: opening a plan (which
    writes its key) is refused StoreBusy, and succeeds once the other process lets go."""
    service.keyring._db.execute("PRAGMA busy_timeout = 50")  # type: ignore[attr-defined]  # not 5 s
    other = sqlite3.connect(tmp_path / "keys.sqlite3", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreBusy) as refused:
            open_plan(service, carla)
        assert isinstance(refused.value.__cause__, sqlite3.OperationalError)
    finally:
        other.close()
    assert open_plan(service, carla).version == 1


def test_concurrent_editors_of_one_plan_lose_no_command(
    service: PlanService, team: TeamPlan, bert: Actor, carla: Actor
) -> None:
    """Two threads each edit their own need 50 times, as fast as they can."""
    rounds = 50
    before = event_count(service, team.plan_id)
    start = threading.Barrier(2)
    outcomes: dict[str, list[Outcome]] = {"bert": [], "carla": []}
    failures: list[BaseException] = []

    def edit(name: str, by: Actor, need_id: str) -> None:
        try:
            start.wait()
            for n in range(rounds):
                outcomes[name].append(update_need(service, team.plan_id, by, need_id, 1 + n, f"{name} {n}"))
        except BaseException as error:  # reported below, with the thread's name
            failures.append(error)

    threads = [
        threading.Thread(target=edit, args=("bert", bert, team.health_need)),
        threading.Thread(target=edit, args=("carla", carla, team.work_need)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert not failures, failures
    assert all(not thread.is_alive() for thread in threads)
    assert [len(o) for o in outcomes.values()] == [rounds, rounds]
    versions = [o.version for o in outcomes["bert"] + outcomes["carla"]]
    assert sorted(versions) == list(range(before + 1, before + 2 * rounds + 1))
    assert not any(o.repeated for o in outcomes["bert"] + outcomes["carla"])
    assert event_count(service, team.plan_id) == before + 2 * rounds
    plan = service.get_plan(team.plan_id)
    assert plan.version == before + 2 * rounds
    assert (plan.needs[team.health_need].revision, plan.needs[team.health_need].description) == (
        rounds + 1,
        f"bert {rounds - 1}",
    )
    assert (plan.needs[team.work_need].revision, plan.needs[team.work_need].description) == (
        rounds + 1,
        f"carla {rounds - 1}",
    )


# --- reading the past --------------------------------------------------------------------


def test_plan_at_a_moment_returns_the_plan_as_it_was(service: PlanService, anna: Actor, bert: Actor) -> None:
    plan_id = open_plan(service, anna).plan_id
    need_id = record_need(service, plan_id, anna, "Back pain").item_id
    update_need(service, plan_id, bert, need_id, 1, "Back pain, easing")
    moments = [event.timestamp for event in service.events.get(uuid.UUID(plan_id))]
    assert moments == sorted(moments) and len(set(moments)) == 3

    at_opening = service.plan_at(plan_id, moments[0])
    between = service.plan_at(plan_id, moments[1] + timedelta(seconds=30))
    now = service.plan_at(plan_id, moments[2] + timedelta(days=365))

    assert (at_opening.version, at_opening.needs) == (1, {})
    assert between.version == 2
    assert between.needs[need_id].description == "Back pain"
    assert now.version == 3
    assert now.needs[need_id].description == "Back pain, easing"


def test_plan_at_a_moment_before_the_opening_is_not_found(service: PlanService, anna: Actor) -> None:
    plan_id = open_plan(service, anna).plan_id
    with pytest.raises(PlanNotFound):
        service.plan_at(plan_id, START - timedelta(seconds=1))


def test_get_plan_at_a_version(service: PlanService, team: TeamPlan, bert: Actor) -> None:
    need_version = service.get_plan(team.plan_id).version
    update_need(service, team.plan_id, bert, team.health_need, 1, "Back pain, easing")

    old = service.get_plan(team.plan_id, version=need_version)
    opened = service.get_plan(team.plan_id, version=1)

    assert old.version == need_version
    assert old.needs[team.health_need].description == "Back pain"
    assert (opened.version, opened.needs, len(opened.members)) == (1, {}, 1)
    assert service.get_plan(team.plan_id).needs[team.health_need].description == "Back pain, easing"


def test_get_plan_at_a_version_past_a_snapshot(service: PlanService, anna: Actor, carla: Actor) -> None:
    plan_id = open_plan(service, anna).plan_id
    for n in range(105):
        service.add_note(plan_id, by=anna, command_id=cid(), text=f"note {n}")
    service.flush_snapshots()

    assert len(list(service.snapshots.get(uuid.UUID(plan_id)))) >= 1
    assert service.get_plan(plan_id).version == 106
    assert len(service.plan_record(plan_id).notes) == 105
    assert len(service.get_plan(plan_id, version=50).notes) == 49
    assert len(service.get_plan(plan_id, version=103).notes) == 102


def snapshot_versions(service: PlanService, plan_id: str) -> list[int]:
    return [snapshot.originator_version for snapshot in service.snapshots.get(uuid.UUID(plan_id))]


def test_only_the_latest_two_snapshots_of_a_plan_are_kept(service: PlanService, anna: Actor) -> None:
    plan_id = open_plan(service, anna).plan_id
    for n in range(349):
        service.add_note(plan_id, by=anna, command_id=cid(), text=f"note {n}")
    service.flush_snapshots()

    assert snapshot_versions(service, plan_id) == [200, 300]
    uncached = PlanService(StoreSettings(data_dir=service.settings.data_dir, aggregate_cache_size=0))
    try:
        assert vars(uncached.get_plan(plan_id)) == vars(service.get_plan(plan_id))
    finally:
        uncached.close()


def test_a_data_folder_with_the_old_snapshot_table_keeps_working(tmp_path: Path, anna: Actor) -> None:
    """Stores made before snapshots moved to a rowid table had the library's WITHOUT ROWID
    table, with every snapshot ever taken: opening the service converts it."""
    settings = StoreSettings(data_dir=str(tmp_path))
    service = PlanService(settings)
    plan_id = open_plan(service, anna).plan_id
    for n in range(250):
        service.add_note(plan_id, by=anna, command_id=cid(), text=f"note {n}")
    before = vars(service.get_plan(plan_id))
    service.close()
    _as_the_library_made_it(tmp_path / "events.sqlite3", older_version=50)

    reopened = PlanService(settings)
    try:
        assert snapshot_versions(reopened, plan_id) == [100, 200]
        assert vars(reopened.get_plan(plan_id)) == before
        reopened.add_note(plan_id, by=anna, command_id=cid(), text="after the conversion")
        assert reopened.plan_record(plan_id).notes[-1].text == "after the conversion"
    finally:
        reopened.close()


def _as_the_library_made_it(path: Path, older_version: int) -> None:
    """Turn the snapshots table back into the library's WITHOUT ROWID table, with an
    older snapshot in it that pruning would have removed."""
    with sqlite3.connect(path) as db:
        db.execute("ALTER TABLE stored_snapshots RENAME TO kept")
        db.execute(
            "CREATE TABLE stored_snapshots (originator_id TEXT, originator_version INTEGER, topic TEXT, "
            "state BLOB, PRIMARY KEY (originator_id, originator_version)) WITHOUT ROWID"
        )
        db.execute("INSERT INTO stored_snapshots SELECT * FROM kept")
        oldest = db.execute("SELECT * FROM kept ORDER BY originator_version LIMIT 1").fetchone()
        db.execute("INSERT INTO stored_snapshots VALUES (?, ?, ?, ?)", (oldest[0], older_version, oldest[2], oldest[3]))
        db.execute("DROP TABLE kept")


def test_history_says_who_from_which_organisation_did_what_and_when(
    service: PlanService, team: TeamPlan, anna: Actor, bert: Actor, carla: Actor
) -> None:
    update_need(service, team.plan_id, bert, team.health_need, 1, "Back pain, easing")
    service.add_note(team.plan_id, by=carla, command_id=cid(), text="Called the client")

    history = service.history(team.plan_id)
    events = list(service.events.get(uuid.UUID(team.plan_id)))

    assert len(history) == len(events) == service.get_plan(team.plan_id).version
    assert [entry.version for entry in history] == list(range(1, len(events) + 1))
    assert [entry.at for entry in history] == [event.timestamp for event in events]
    assert [entry.at for entry in history] == sorted(entry.at for entry in history)
    assert history[0].text == "Opened the plan for Maija Mäkinen (unemployed), referred by employment_services."
    assert (history[0].by_name, history[0].by_organisation) == (anna.name, anna.organisation_name)
    assert history[3].text == f"Added {bert.name} (benefits officer, {bert.organisation_name}) to the network."
    assert history[5].text == f"Named {bert.name} as the counterpart."
    assert (history[-2].by_name, history[-2].by_organisation) == (bert.name, bert.organisation_name)
    assert history[-2].text == "Updated the need Back pain, easing: description, status."
    assert (history[-1].by_name, history[-1].by_organisation, history[-1].text) == (
        carla.name,
        carla.organisation_name,
        "Wrote a note.",
    )
    assert history[-1].template == "Wrote a note."


def test_history_names_the_member_who_was_removed(
    service: PlanService, team: TeamPlan, anna: Actor, carla: Actor
) -> None:
    service.remove_member(team.plan_id, by=anna, command_id=cid(), member_id=team.carla_id, seen_revision=1)

    assert service.history(team.plan_id)[-1].text == f"Removed {carla.name} from the network."


@pytest.mark.parametrize("plan_id", [str(uuid.uuid4()), "not-a-plan-id", ""])
def test_an_unknown_or_malformed_plan_id_is_plan_not_found(service: PlanService, anna: Actor, plan_id: str) -> None:
    with pytest.raises(PlanNotFound):
        service.get_plan(plan_id)
    with pytest.raises(PlanNotFound):
        service.history(plan_id)
    with pytest.raises(PlanNotFound):
        service.plan_at(plan_id, START)
    with pytest.raises(PlanNotFound):
        service.add_note(plan_id, by=anna, command_id=cid(), text="Hello")


# --- listing -----------------------------------------------------------------------------


def test_plan_ids_and_summaries_list_the_plans_oldest_first(
    service: PlanService, team: TeamPlan, anna: Actor, bert: Actor, carla: Actor
) -> None:
    second = open_plan(service, carla, client_name="Pekka Peltonen", segment="entrepreneur").plan_id
    service.close_plan(second, by=carla, command_id=cid(), outcome="studies")

    assert list(service.plan_ids()) == [uuid.UUID(team.plan_id), uuid.UUID(second)]
    first_summary, second_summary = service.summaries()
    assert (first_summary.plan_id, first_summary.client_name, first_summary.segment) == (
        team.plan_id,
        "Maija Mäkinen",
        "unemployed",
    )
    assert (first_summary.expert, first_summary.expert_organisation, first_summary.counterpart) == (
        anna.name,
        anna.organisation_name,
        bert.name,
    )
    assert (first_summary.is_closed, first_summary.version, first_summary.opened_on) == (
        False,
        service.get_plan(team.plan_id).version,
        TODAY.isoformat(),
    )
    assert (second_summary.plan_id, second_summary.client_name, second_summary.expert) == (
        second,
        "Pekka Peltonen",
        carla.name,
    )
    assert (second_summary.counterpart, second_summary.is_closed, second_summary.version) == (None, True, 2)


# --- erasure and encryption at rest --------------------------------------------------------


def _stored_rows(data_dir: Path, plan_id: str) -> list[tuple[str, bytes]]:
    """(table, state) of every stored event and snapshot of the plan, read from the file."""
    connection = sqlite3.connect(f"file:{data_dir / 'events.sqlite3'}?mode=ro", uri=True)
    try:
        rows = []
        for table in ("stored_events", "stored_snapshots"):
            for originator_id, state in connection.execute(f"SELECT originator_id, state FROM {table}"):
                if uuid.UUID(str(originator_id)) == uuid.UUID(plan_id):
                    rows.append((table, bytes(state)))
        return rows
    finally:
        connection.close()


def _event_store_bytes(data_dir: Path) -> bytes:
    """The raw bytes of the event store: the database file and its write-ahead log."""
    return b"".join(path.read_bytes() for path in sorted(data_dir.glob("events.sqlite3*")))


def test_only_a_closed_plan_can_be_erased(service: PlanService, team: TeamPlan, anna: Actor) -> None:
    with pytest.raises(RuleViolation, match="Only a closed plan"):
        service.erase_plan(team.plan_id, by=anna, reason="Retention period over")

    assert not service.keyring.is_erased(uuid.UUID(team.plan_id))
    assert service.get_plan(team.plan_id).client.name == "Maija Mäkinen"


def test_an_erased_plan_is_unreadable_and_the_others_read_fine(
    service: PlanService, team: TeamPlan, tmp_path: Path, anna: Actor, carla: Actor
) -> None:
    other = open_plan(service, carla, client_name="Pekka Peltonen").plan_id
    service.close_plan(team.plan_id, by=anna, command_id=cid(), outcome="work")
    events = event_count(service, team.plan_id)

    outcome = service.erase_plan(team.plan_id, by=anna, reason="Retention period over")

    assert (outcome.plan_id, outcome.item_id, outcome.version) == (team.plan_id, None, events)
    with pytest.raises(PlanErased, match="erased"):
        service.get_plan(team.plan_id)
    with pytest.raises(PlanErased):
        service.history(team.plan_id)
    with pytest.raises(PlanErased):
        service.reopen_plan(team.plan_id, by=anna, command_id=cid(), reason="Oops")
    stored = list(service.events.get(uuid.UUID(team.plan_id)))
    assert len(stored) == events
    assert all(isinstance(event, ErasedPlanEvent) for event in stored)
    rows = _stored_rows(tmp_path, team.plan_id)
    assert len(rows) == events
    assert all(state.startswith(ENCRYPTED) for _, state in rows)
    with pytest.raises(PlanErased):
        service.keyring.cipher_for(uuid.UUID(team.plan_id))
    keys = sqlite3.connect(tmp_path / "keys.sqlite3")
    try:
        ((wrapped, erased_at),) = keys.execute(
            "SELECT wrapped_key, erased_at FROM plan_keys WHERE plan_id = ?", (team.plan_id,)
        )
    finally:
        keys.close()
    assert wrapped is None and erased_at

    assert service.get_plan(other).client.name == "Pekka Peltonen"
    assert list(service.plan_ids()) == [uuid.UUID(other)]
    assert [summary.plan_id for summary in service.summaries()] == [other]


def test_commands_on_a_plan_ask_the_key_store_nothing_while_its_key_is_cached(
    service: PlanService, team: TeamPlan, carla: Actor, monkeypatch: pytest.MonkeyPatch
) -> None:
    service.get_plan(team.plan_id)
    lookups: list[str] = []
    select = service.keyring._select
    monkeypatch.setattr(service.keyring, "_select", lambda plan_id: lookups.append(plan_id) or select(plan_id))

    for n in range(3):
        service.add_note(team.plan_id, by=carla, command_id=cid(), text=f"note {n}")

    assert lookups == []


def test_a_plan_erased_through_another_instance_is_refused_once_the_cached_key_expires(
    service: PlanService, team: TeamPlan, anna: Actor, monkeypatch: pytest.MonkeyPatch
) -> None:
    service.close_plan(team.plan_id, by=anna, command_id=cid(), outcome="work")
    other = PlanService(service.settings)
    try:
        other.erase_plan(team.plan_id, by=anna, reason="Retention period over")
    finally:
        other.close()
    monkeypatch.setattr("domain.keys.KEY_CACHE_SECONDS", 0.0)

    with pytest.raises(PlanErased):
        service.get_plan(team.plan_id)
    with pytest.raises(PlanErased):
        service.reopen_plan(team.plan_id, by=anna, command_id=cid(), reason="Oops")


@pytest.mark.parametrize(("size", "cached"), [(0, False), (2, True)])
def test_an_aggregate_cache_size_of_zero_means_no_cache(tmp_path: Path, size: int, cached: bool) -> None:
    service = PlanService(StoreSettings(data_dir=str(tmp_path), aggregate_cache_size=size))
    try:
        assert (service.repository.cache is not None) is cached
        if cached:
            assert service.repository.cache.maxsize == size
    finally:
        service.close()


def test_an_erased_plans_key_is_gone_from_the_key_files(service: PlanService, tmp_path: Path, anna: Actor) -> None:
    plan_id = open_plan(service, anna).plan_id
    keys = sqlite3.connect(tmp_path / "keys.sqlite3")
    try:
        ((wrapped,),) = keys.execute("SELECT wrapped_key FROM plan_keys WHERE plan_id = ?", (plan_id,))
    finally:
        keys.close()
    service.close_plan(plan_id, by=anna, command_id=cid(), outcome="work")

    service.erase_plan(plan_id, by=anna, reason="Retention period over")

    for path in tmp_path.glob("keys.sqlite3*"):
        assert bytes(wrapped) not in path.read_bytes(), f"the erased key is still in {path.name}"


def test_an_erasure_the_key_store_failed_to_record_leaves_the_plan_readable(
    service: PlanService, anna: Actor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key is still in the store, so this process must not keep refusing the plan."""
    plan_id = open_plan(service, anna).plan_id
    service.close_plan(plan_id, by=anna, command_id=cid(), outcome="work")

    def store_locked(*_: Any) -> None:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(service.keyring, "_tombstone", store_locked)
    with pytest.raises((StoreBusy, StoreUnavailable)):
        service.erase_plan(plan_id, by=anna, reason="Retention period over")

    assert not service.keyring.is_erased(uuid.UUID(plan_id))
    assert service.get_plan(plan_id).is_closed


def test_the_event_store_holds_no_personal_data_in_plain_bytes(
    service: PlanService, tmp_path: Path, anna: Actor, carla: Actor
) -> None:
    secrets = {
        "client name": "Zyxqvon",
        "need description": "Lumbagoqwx",
        "financial side": "Ulosottokvj",
        "contact detail": "carla.yqpw@te.example",
        "expert contact": "anna.wqpx@hc.example",
        "note": "Hushnoteqz",
    }
    plan_id = open_plan(
        service, anna, client_name=f"Maija {secrets['client name']}", expert_contact=secrets["expert contact"]
    ).plan_id
    service.give_consent(
        plan_id,
        by=anna,
        command_id=cid(),
        organisation_id=carla.organisation_id,
        organisation_name=carla.organisation_name,
        valid_from=TODAY,
    )
    add_to_network(service, plan_id, anna, carla, contact=secrets["contact detail"])
    record_need(service, plan_id, anna, f"Chronic {secrets['need description']}", financial=secrets["financial side"])
    for n in range(100):  # enough to store a snapshot of the whole plan too
        service.add_note(plan_id, by=carla, command_id=cid(), text=f"{secrets['note']} {n}")
    service.flush_snapshots()
    assert len(list(service.snapshots.get(uuid.UUID(plan_id)))) >= 1
    # Control: an erasure record is stored in the clear, so the scan can see plain text.
    control = open_plan(service, anna).plan_id
    service.close_plan(control, by=anna, command_id=cid(), outcome="work")
    service.erase_plan(control, by=anna, reason="Plaincontrolmarker")

    raw = _event_store_bytes(tmp_path)

    assert b"Plaincontrolmarker" in raw
    for what, text in secrets.items():
        for encoded in {text.encode(), text.encode("utf-16-le")}:
            assert encoded not in raw, f"the {what} is readable in the event store"
    assert all(state.startswith(ENCRYPTED) for _, state in _stored_rows(tmp_path, plan_id))
    assert service.get_plan(plan_id).client.name == f"Maija {secrets['client name']}"


def test_the_plan_keys_live_in_their_own_file(service: PlanService, tmp_path: Path, anna: Actor) -> None:
    plan_id = open_plan(service, anna).plan_id

    events = sqlite3.connect(f"file:{tmp_path / 'events.sqlite3'}?mode=ro", uri=True)
    keys = sqlite3.connect(f"file:{tmp_path / 'keys.sqlite3'}?mode=ro", uri=True)
    try:
        event_tables = {name for (name,) in events.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        key_tables = {name for (name,) in keys.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        (key_rows,) = keys.execute(
            "SELECT count(*) FROM plan_keys WHERE plan_id = ? AND wrapped_key IS NOT NULL", (plan_id,)
        ).fetchone()
    finally:
        events.close()
        keys.close()

    assert "plan_keys" not in event_tables
    assert "stored_events" in event_tables
    assert key_tables == {"plan_keys"}
    assert key_rows == 1


def test_saving_several_plans_at_once_records_each_plan_s_events_in_order(service: PlanService, anna: Actor) -> None:
    """`save` collects aggregates' events itself (not through the library's protocol
    checks); several plans in one save are one transaction, in the order given."""
    first, second = (service.get_plan(open_plan(service, anna).plan_id) for _ in range(2))
    first.add_note(by=anna, command_id=cid(), at=first.modified_on, text="one")
    second.add_note(by=anna, command_id=cid(), at=second.modified_on, text="two")
    second.add_note(by=anna, command_id=cid(), at=second.modified_on, text="three")

    recordings = service.save(first, second)

    assert [(r.domain_event.originator_id, r.domain_event.originator_version) for r in recordings] == [
        (first.id, 2),
        (second.id, 2),
        (second.id, 3),
    ]
    ids = [r.notification.id for r in recordings]
    assert ids == list(range(ids[0], ids[0] + 3))
    assert not first._pending_events and not second._pending_events
    assert service.plan_record(second.id).version == 3
