"""Old stored events stay readable: every event class, at every version it ever had, has a
stored sample (`samples/events/`), and the current code reads each one.

The samples are the JSON states as the application's mapper writes them before encrypting
(see `make_event_samples.py`, which writes them once and never rewrites them). Here each
is turned back into a `StoredEvent` and read through the application's own mapper
(`PlanKeyMapper` passes states without its `PK1` marker through unencrypted):

- there is a sample for every (event class, version) from 1 up to the class's current
  `class_version`, and none for classes or versions that do not exist: a new version
  without a sample fails here;
- every sample decodes to an instance of the current class with exactly its current
  fields, each of the declared type (older versions through their upcasters);
- the current code still writes what the current-version samples hold, byte for byte: a
  changed event without a new `class_version` fails here;
- a `NoteAdded` of version 1 (before notes said who may read them) reads as a note for the
  professionals only;
- a plan replayed from the samples, in order, through a real store and `PlanService`, is a
  sane plan, with either version of the note;
- a snapshot stored before `NoteAdded` v2 (`samples/snapshots/ClientPlan.v1.json`, written
  with the code of commit fe161d9) still loads; it is also a version 1 `ClientPlan`
  snapshot (the whole record in it), which loads as the lean version 2 plan; and the
  version 2 sample (`ClientPlan.v2.json`, the lean plan) loads too.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
import uuid
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.domain import Snapshot
from eventsourcing.persistence import Mapper, StoredEvent
from eventsourcing.utils import get_topic, resolve_topic

from domain.application import PlanService
from domain.erasure import ErasureRecord
from domain.items import CONFLICT_CHANGES
from domain.plan import ClientPlan, PlanRecord
from domain.storage import StoreSettings
from domain.values import NoteVisibility
from tests.domain.make_event_samples import EVENT_SAMPLES, SNAPSHOT_SAMPLES, encode_state, event_classes, sample_name
from tests.domain.test_stateful import check_plan_rules, plan_state, write_side_state

SAMPLE_PLAN_ID = uuid.UUID("2f6a3c55-8f3e-5a0c-9d52-6a1f2b7e9c01")


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def as_stored(sample: dict[str, Any], originator_id: uuid.UUID = SAMPLE_PLAN_ID, version: int | None = None) -> StoredEvent:
    return StoredEvent(
        originator_id=originator_id,
        originator_version=sample["originator_version"] if version is None else version,
        topic=sample["topic"],
        state=encode_state(sample["state"]),
    )


def version_of(path: Path) -> int:
    return int(path.name.removesuffix(".json").rsplit(".v", 1)[1])


def class_of(path: Path) -> type:
    qualname = path.name.removesuffix(".json").rsplit(".v", 1)[0]
    for event_class in event_classes():
        if event_class.__qualname__ == qualname:
            return event_class
    raise LookupError(f"{path.name}: no event class {qualname} any more")


EVENT_FILES = sorted(EVENT_SAMPLES.glob("*.json"))


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlanService]:
    app = PlanService(StoreSettings(data_dir=str(tmp_path_factory.mktemp("event-versions"))))
    yield app
    app.close()


# --- a sample for every version -------------------------------------------------------------


def test_every_event_class_has_a_sample_of_every_version() -> None:
    expected = {
        sample_name(event_class, version)
        for event_class in event_classes()
        for version in range(1, getattr(event_class, "class_version", 1) + 1)
    }
    present = {path.name for path in EVENT_FILES}
    assert not expected - present, (
        f"no stored sample for {sorted(expected - present)}: run tests/domain/make_event_samples.py "
        "(and write the samples of older versions by hand, as that code stored them)"
    )
    assert not present - expected, f"samples of unknown classes or versions: {sorted(present - expected)}"


def test_the_samples_cover_both_aggregates_and_the_note_versions() -> None:
    names = {path.name for path in EVENT_FILES}
    assert {"ClientPlan.Opened.v1.json", "ErasureRecord.Erased.v1.json"} <= names
    assert {"ClientPlan.NoteAdded.v1.json", "ClientPlan.NoteAdded.v2.json"} <= names
    assert len(event_classes()) >= 26


# --- every sample decodes -------------------------------------------------------------------


def _conforms(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if isinstance(hint, typing.TypeVar):  # the originator id
        return isinstance(value, uuid.UUID)
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if origin is list:
        return isinstance(value, list) and all(_conforms(item, args[0]) for item in value)
    if origin is dict:
        return isinstance(value, dict) and all(_conforms(k, args[0]) and _conforms(v, args[1]) for k, v in value.items())
    if hint is float:
        return isinstance(value, float)
    if hint is datetime:
        return isinstance(value, datetime) and value.tzinfo is not None
    if hint is date:
        return type(value) is date
    return isinstance(value, origin or hint)


@pytest.mark.parametrize("path", EVENT_FILES, ids=lambda p: p.name)
def test_a_sample_decodes_to_the_current_class_with_all_its_fields(service: PlanService, path: Path) -> None:
    event_class = class_of(path)
    sample = load(path)
    version = version_of(path)
    assert sample["topic"] == get_topic(event_class)
    assert sample["state"].get("class_version", 1) == version, "the sample's own class_version"

    event = service.mapper.to_domain_event(as_stored(sample))

    assert type(event) is event_class
    fields = {field.name for field in dataclasses.fields(event_class)}
    assert set(vars(event)) == fields, f"missing {fields - set(vars(event))}, extra {set(vars(event)) - fields}"
    hints = typing.get_type_hints(event_class)
    for name in fields:
        assert _conforms(getattr(event, name), hints[name]), f"{name} = {getattr(event, name)!r} is not {hints[name]}"


@pytest.mark.parametrize(
    "path",
    [p for p in EVENT_FILES if version_of(p) == getattr(class_of(p), "class_version", 1)],
    ids=lambda p: p.name,
)
def test_the_code_still_stores_what_the_current_version_sample_holds(service: PlanService, path: Path) -> None:
    sample = load(path)
    event = service.mapper.to_domain_event(as_stored(sample))

    stored = Mapper.to_stored_event(service.mapper, event)  # transcoded, before encryption

    assert stored.topic == sample["topic"]
    assert json.loads(stored.state) == sample["state"], (
        f"{path.name}: the event is stored differently now. Give {class_of(path).__qualname__} a new "
        "class_version with an upcaster, and run make_event_samples.py for the new version's sample"
    )
    assert stored.state == encode_state(sample["state"])


def test_a_version_1_note_is_for_the_professionals_only(service: PlanService) -> None:
    v1 = service.mapper.to_domain_event(as_stored(load(EVENT_SAMPLES / "ClientPlan.NoteAdded.v1.json")))
    v2 = service.mapper.to_domain_event(as_stored(load(EVENT_SAMPLES / "ClientPlan.NoteAdded.v2.json")))

    assert v1.visibility == NoteVisibility.PROFESSIONALS == "professionals"
    assert v2.visibility == NoteVisibility.CLIENT_AND_PROFESSIONALS
    assert {**vars(v1), "visibility": v2.visibility} == vars(v2)


# --- a plan from the samples ------------------------------------------------------------------


def _plan_samples(note_version: int) -> list[dict[str, Any]]:
    """The current-version samples of ClientPlan in the order they were recorded, with the
    note at `note_version`."""
    chosen = []
    for path in EVENT_FILES:
        event_class = class_of(path)
        if not issubclass(event_class, ClientPlan.Event):
            continue
        current = getattr(event_class, "class_version", 1)
        wanted = note_version if event_class is ClientPlan.NoteAdded else current
        if version_of(path) == wanted:
            chosen.append(load(path))
    return sorted(chosen, key=lambda sample: sample["originator_version"])


@pytest.mark.parametrize("note_version", [1, 2])
def test_a_plan_replayed_from_the_samples_is_sane(tmp_path: Path, note_version: int) -> None:
    """The samples, one event of each class, are written as the stored events of one plan
    (versions renumbered 1, 2, ...), and read back through a plan service."""
    samples = _plan_samples(note_version)
    service = PlanService(StoreSettings(data_dir=str(tmp_path)))
    try:
        service.recorder.insert_events(
            [as_stored(sample, version=number) for number, sample in enumerate(samples, start=1)]
        )

        plan = service.plan_record(SAMPLE_PLAN_ID)
        lean = service.get_plan(SAMPLE_PLAN_ID)
        history = service.history(SAMPLE_PLAN_ID)
    finally:
        service.close()

    assert plan.version == len(samples) == len(event_classes()) - 1  # not ErasureRecord.Erased
    check_plan_rules(plan, plan.modified_on.date())
    assert plan_state(lean) == write_side_state(plan)
    assert plan.client.name == "Matti Meikäläinen"
    assert plan.client.non_disclosure is True
    assert not plan.is_closed  # closed, then reopened
    assert [member.name for member in plan.members.values()] == ["Aino Lehto"]
    assert plan.counterpart is None  # Sanna was counterpart, and left
    assert [h.status for h in plan.handovers] == ["declined"]
    (need,) = plan.needs.values()
    (goal,) = plan.goals.values()
    (step,) = plan.steps.values()
    assert (need.status, goal.status, goal.client_stance, step.status) == (
        "being_addressed",
        "achieved",
        "questions",
        "started",
    )
    (note,) = plan.notes
    assert note.visibility == ("professionals" if note_version == 1 else "client_and_professionals")
    assert [entry.version for entry in history] == list(range(1, plan.version + 1))
    assert all(entry.text and "%(" not in entry.text for entry in history)


def test_an_erasure_record_replays_from_its_sample(service: PlanService) -> None:
    sample = load(EVENT_SAMPLES / "ErasureRecord.Erased.v1.json")
    record_id = uuid.UUID(sample["state"]["plan_id"])
    event = service.mapper.to_domain_event(as_stored(sample, originator_id=ErasureRecord.id_for(record_id)))

    record = event.mutate(None)

    assert isinstance(record, ErasureRecord)
    assert record.plan_id == str(record_id) and record.reason
    assert record.erased_by.name == "Aino Lehto"


# --- snapshots ----------------------------------------------------------------------------


def test_the_snapshot_sample_is_a_snapshot_of_a_client_plan() -> None:
    sample = load(SNAPSHOT_SAMPLES / "ClientPlan.v1.json")
    assert resolve_topic(sample["topic"]).__name__ == "Snapshot"
    assert sample["state"]["topic"] == get_topic(ClientPlan)
    notes = sample["state"]["state"]["notes"]
    assert notes and all("visibility" not in note["_data_"] for note in notes), "stored before NoteAdded v2"


def test_a_snapshot_stored_before_note_visibility_still_loads(service: PlanService) -> None:
    """The sample is a version 1 snapshot, with the plan's whole record in it: the write
    side reads it as a lean plan, and a read model row of the same shape reads as a
    `PlanRecord` with its notes (which default to the professionals)."""
    sample = load(SNAPSHOT_SAMPLES / "ClientPlan.v1.json")
    snapshot = service.mapper.to_domain_event(as_stored(sample))

    plan = snapshot.mutate(None)
    record = dataclasses.replace(snapshot, topic=get_topic(PlanRecord)).mutate(None)

    assert type(plan) is ClientPlan and type(record) is PlanRecord
    check_plan_rules(plan, plan.modified_on.date())
    assert not hasattr(plan, "notes") and not hasattr(plan, "measures")
    assert all(len(item.changes) <= CONFLICT_CHANGES for item in plan.needs.values())
    assert [note.visibility for note in record.notes] == ["professionals"]
    assert plan_state(plan) == write_side_state(record)


def test_there_is_a_snapshot_sample_for_every_version_of_the_plan() -> None:
    names = sorted(path.name for path in SNAPSHOT_SAMPLES.glob("*.json"))
    assert names == [f"ClientPlan.v{version}.json" for version in range(1, ClientPlan.class_version + 1)]


def test_a_version_2_snapshot_loads_as_the_lean_plan(service: PlanService) -> None:
    sample = load(SNAPSHOT_SAMPLES / "ClientPlan.v2.json")
    assert sample["state"]["state"]["class_version"] == 2

    plan = service.mapper.to_domain_event(as_stored(sample)).mutate(None)

    check_plan_rules(plan, plan.modified_on.date())
    assert not hasattr(plan, "notes") and not hasattr(plan, "measures")
    assert plan.client.name == "Matti Meikäläinen"
    assert all(len(item.changes) <= CONFLICT_CHANGES for item in plan.steps.values())


def test_a_version_2_snapshot_of_a_plan_opened_at_night_gets_its_finnish_opening_day(service: PlanService) -> None:
    """Version 2 took the opening day in UTC: a plan opened at 01:30 in Helsinki on 2 February
    (23:30 on the 1st in UTC) said 1 February, and so did its opening consent."""
    sample = load(SNAPSHOT_SAMPLES / "ClientPlan.v2.json")
    state = sample["state"]["state"]
    state["opened_at"]["_data_"] = "2026-02-01T23:30:00+00:00"
    state["opened_on"]["_data_"] = "2026-02-01"
    opening_consent, *later_consents = state["consents"].values()
    opening_consent["_data_"]["valid_from"] = "2026-02-01"
    later_consents[0]["_data_"]["valid_from"] = "2026-02-01"

    plan = service.mapper.to_domain_event(as_stored(sample)).mutate(None)

    opening, later, *_ = plan.consents.values()
    assert plan.opened_on == opening.valid_from == date(2026, 2, 2)
    assert later.valid_from == date(2026, 2, 1), "only the opening consent moves with the opening day"


def test_a_snapshot_of_the_lean_plan_round_trips(service: PlanService) -> None:
    sample = load(SNAPSHOT_SAMPLES / "ClientPlan.v1.json")
    plan = service.mapper.to_domain_event(as_stored(sample)).mutate(None)
    service.keyring.create(plan.id)

    stored = service.mapper.to_stored_event(Snapshot.take(plan))
    again = service.mapper.to_domain_event(stored).mutate(None)

    assert stored.state.startswith(b"PK1")  # encrypted like the version 1 snapshot
    assert plan_state(again) == plan_state(plan)
