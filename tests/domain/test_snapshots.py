"""Snapshots are taken from the plan a command just saved and written in the background.

Each test runs on SQLite and on PostgreSQL, with a snapshot every five events so that
a few commands cross the interval.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from eventsourcing.domain import Snapshot
from eventsourcing.persistence import StoredEvent

from domain import crypto
from domain.application import PlanService
from domain.errors import PlanErased
from domain.plan import ClientPlan
from domain.snapshots import COMPRESSED_SNAPSHOT_PREFIX, PlanStateV2, is_typed_snapshot, plan_snapshot_json
from domain.storage import StoreSettings
from domain.values import Actor

TYPED_SAMPLE = Path(__file__).parent / "samples" / "snapshots" / "typed" / "ClientPlan.v2.json"
EVERY = 5
NEVER_S = 30
"""A guard against hanging when a snapshot is never handed over: waits give up after this."""


class OftenSnapshottingService(PlanService):
    name = PlanService.name  # the PostgreSQL tables are named after the application
    snapshotting_intervals = {ClientPlan: EVERY}


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> StoreSettings:
    if request.param == "sqlite":
        return StoreSettings(data_dir=str(tmp_path))
    environ = {
        **request.getfixturevalue("postgres_env"),
        "POLKU_PG_SCHEMA": request.getfixturevalue("pg_schema"),
        "POLKU_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
    }
    return StoreSettings.from_environ(environ)


@pytest.fixture
def services(settings: StoreSettings) -> Iterator[Callable[..., PlanService]]:
    """Makes services on the test's store; closes them all at the end."""
    made: list[PlanService] = []

    def make(kind: type[PlanService] = OftenSnapshottingService, **overrides: Any) -> PlanService:
        service = kind(msgspec.structs.replace(settings, **overrides))
        made.append(service)
        return service

    yield make
    for service in made:
        service.close()


ANNA = Actor(person_id="p-anna", name="Anna Aalto", organisation_id="org-hc", organisation_name="Oulu Health Centre")
_command_ids = iter(range(1, 10**9))


def cid() -> str:
    return f"snap-{next(_command_ids)}"


def open_plan(service: PlanService) -> uuid.UUID:
    outcome = service.open_plan(
        by=ANNA,
        command_id=cid(),
        client_name="Maija Mäkinen",
        segment="unemployed",
        language="fi",
        referring_party="employment_services",
        expert_profession="nurse",
    )
    return uuid.UUID(outcome.plan_id)


def add_notes(service: PlanService, plan_id: uuid.UUID, count: int) -> None:
    for n in range(count):
        service.add_note(str(plan_id), by=ANNA, command_id=cid(), text=f"note {n}")


def stored_snapshot_versions(service: PlanService, plan_id: uuid.UUID) -> list[int]:
    """Versions of the plan's snapshot rows, read raw (nothing decrypted)."""
    return [stored.originator_version for stored in service.snapshots.recorder.select_events(plan_id)]


class Gate:
    """Holds the snapshot writer inside its write until released."""

    def __init__(self, service: PlanService):
        self.entered = threading.Event()
        self.released = threading.Event()
        self.erased_when_written: list[bool] = []
        put = service.snapshots.put
        keyring = service.keyring

        def held_put(snapshots: list[Any], **kwargs: Any) -> Any:
            self.entered.set()
            self.released.wait(NEVER_S)
            self.erased_when_written.append(keyring.is_erased(snapshots[0].originator_id))
            return put(snapshots, **kwargs)

        service.snapshots.put = held_put  # type: ignore[method-assign]


def test_a_snapshot_is_of_the_saved_plan_at_the_interval(services: Callable[..., PlanService]) -> None:
    service = services()
    plan_id = open_plan(service)
    add_notes(service, plan_id, 2 * EVERY - 1)
    service.flush_snapshots()

    assert stored_snapshot_versions(service, plan_id) == [EVERY, 2 * EVERY]
    live = service.get_plan(plan_id)
    latest = next(iter(service.snapshots.get(plan_id, desc=True, limit=1)))
    assert latest.originator_version == live.version == 2 * EVERY
    assert vars(latest.mutate(None)) == vars(live)


def test_the_library_does_not_take_the_snapshot_too(services: Callable[..., PlanService]) -> None:
    """The library's own step (re-reading the plan inside the command) is replaced, not added to."""
    service = services()
    taken_by_the_library: list[Any] = []
    service.take_snapshot = lambda *args, **kwargs: taken_by_the_library.append(args)  # type: ignore[method-assign]
    plan_id = open_plan(service)
    add_notes(service, plan_id, EVERY)
    service.flush_snapshots()

    assert taken_by_the_library == []
    assert stored_snapshot_versions(service, plan_id) == [EVERY]


def test_a_plan_opened_from_its_snapshot_equals_the_live_plan(services: Callable[..., PlanService]) -> None:
    service = services()
    plan_id = open_plan(service)
    add_notes(service, plan_id, 3 * EVERY + 2)
    service.flush_snapshots()
    uncached = services(PlanService, aggregate_cache_size=0)

    assert vars(uncached.get_plan(plan_id)) == vars(service.get_plan(plan_id))


def test_a_failing_snapshot_write_fails_no_command_and_is_taken_at_the_next_interval(
    services: Callable[..., PlanService], caplog: pytest.LogCaptureFixture
) -> None:
    service = services()
    plan_id = open_plan(service)
    put = service.snapshots.put

    def broken_put(*args: Any, **kwargs: Any) -> Any:
        raise OSError("disk full")

    service.snapshots.put = broken_put  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="domain.snapshots"):
        add_notes(service, plan_id, EVERY)
        service.flush_snapshots()

    assert service.get_plan(plan_id).version == EVERY + 1
    assert stored_snapshot_versions(service, plan_id) == []
    assert "disk full" in caplog.text
    service.snapshots.put = put  # type: ignore[method-assign]
    add_notes(service, plan_id, EVERY - 1)
    service.flush_snapshots()
    assert stored_snapshot_versions(service, plan_id) == [2 * EVERY]


def test_close_writes_the_snapshots_still_waiting(services: Callable[..., PlanService]) -> None:
    service = services()
    gate = Gate(service)
    plan_id = open_plan(service)
    add_notes(service, plan_id, EVERY - 1)
    assert gate.entered.wait(NEVER_S)
    closing = threading.Thread(target=service.close)
    closing.start()
    gate.released.set()
    closing.join()

    reader = services(PlanService)
    assert stored_snapshot_versions(reader, plan_id) == [EVERY]


def test_a_snapshot_waiting_when_its_plan_is_erased_is_never_written(services: Callable[..., PlanService]) -> None:
    service = services()
    gate = Gate(service)
    busy = open_plan(service)
    add_notes(service, busy, EVERY - 1)  # the writer is held writing this plan's snapshot
    assert gate.entered.wait(NEVER_S)
    erased = open_plan(service)
    add_notes(service, erased, EVERY - 2)
    service.close_plan(str(erased), by=ANNA, command_id=cid(), outcome="work")  # version 5: a snapshot waits
    service.erase_plan(str(erased), by=ANNA, reason="retention period over")
    gate.released.set()
    service.flush_snapshots()

    assert stored_snapshot_versions(service, erased) == []
    assert stored_snapshot_versions(service, busy) == [EVERY]


def test_erasure_waits_for_the_plan_s_snapshot_being_written(services: Callable[..., PlanService]) -> None:
    """The snapshot written while the erasure waits was encrypted with the key before it
    went; once erased, neither it nor the plan can be read."""
    service = services()
    gate = Gate(service)
    plan_id = open_plan(service)
    add_notes(service, plan_id, EVERY - 2)
    service.close_plan(str(plan_id), by=ANNA, command_id=cid(), outcome="work")
    assert gate.entered.wait(NEVER_S)
    writer = service._snapshot_writer
    forget = writer.forget
    waiting_to_erase = threading.Event()

    def forget_signalled(identifier: uuid.UUID) -> None:
        waiting_to_erase.set()
        forget(identifier)

    writer.forget = forget_signalled  # type: ignore[method-assign]
    erasing = threading.Thread(target=service.erase_plan, args=(str(plan_id),), kwargs={"by": ANNA, "reason": "over"})
    erasing.start()
    assert waiting_to_erase.wait(NEVER_S)
    gate.released.set()
    erasing.join()

    assert gate.erased_when_written == [False]
    assert service.keyring.is_erased(plan_id)
    reader = services(PlanService, aggregate_cache_size=0)
    with pytest.raises(PlanErased):
        reader.get_plan(plan_id)


def decrypted_latest_snapshot(service: PlanService, plan_id: uuid.UUID) -> bytes:
    stored = service.snapshots.recorder.select_events(plan_id, desc=True, limit=1)[0]
    assert stored.state.startswith(crypto.ENCRYPTED)
    body = stored.state[len(crypto.ENCRYPTED) :]
    cipher = service.keyring.cipher_for(plan_id)
    return cipher.decrypt(body[:12], body[12:], crypto._associated_data(stored))


def test_a_plan_s_snapshot_is_typed_json_under_the_plan_s_key(services: Callable[..., PlanService]) -> None:
    service = services()
    plan_id = open_plan(service)
    add_notes(service, plan_id, EVERY - 1)
    service.flush_snapshots()

    stored = service.snapshots.recorder.select_events(plan_id)[0]
    assert "Maija".encode() not in stored.state
    plain = decrypted_latest_snapshot(service, plan_id)
    assert is_typed_snapshot(plain)
    assert json.loads(plan_snapshot_json(plain))["state"]["client"]["name"] == "Maija Mäkinen"


def test_a_plan_s_snapshot_is_compressed_before_it_is_encrypted(services: Callable[..., PlanService]) -> None:
    service = services()
    plan_id = open_plan(service)
    add_notes(service, plan_id, EVERY - 1)
    service.flush_snapshots()

    plain = decrypted_latest_snapshot(service, plan_id)
    assert plain.startswith(COMPRESSED_SNAPSHOT_PREFIX)
    assert len(plain) < len(plan_snapshot_json(plain)) / 2


def test_a_typed_snapshot_stored_uncompressed_still_opens_the_plan(
    services: Callable[..., PlanService], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Typed snapshots written before they were compressed are plain typed JSON, encrypted."""
    service = services()
    compressed = crypto.encode_plan_snapshot
    monkeypatch.setattr(crypto, "encode_plan_snapshot", lambda snapshot: plan_snapshot_json(compressed(snapshot)))
    plan_id = open_plan(service)
    add_notes(service, plan_id, EVERY + 1)
    service.flush_snapshots()
    plain = decrypted_latest_snapshot(service, plan_id)
    assert is_typed_snapshot(plain) and not plain.startswith(COMPRESSED_SNAPSHOT_PREFIX)
    monkeypatch.undo()
    uncached = services(PlanService, aggregate_cache_size=0)

    assert vars(uncached.get_plan(plan_id)) == vars(service.get_plan(plan_id))


def test_the_typed_snapshot_holds_every_attribute_of_the_plan(services: Callable[..., PlanService]) -> None:
    service = services()
    plan_id = open_plan(service)

    assert set(Snapshot.take(service.get_plan(plan_id)).state) == set(PlanStateV2.__struct_fields__)


def test_a_snapshot_stored_as_library_json_still_opens_the_plan(
    services: Callable[..., PlanService], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Snapshots written before the typed codec are the library's JSON, encrypted."""
    service = services()
    library_json = service.mapper.transcoder.encode
    monkeypatch.setattr(
        crypto,
        "encode_plan_snapshot",
        lambda snapshot: library_json({"timestamp": snapshot.timestamp, "topic": snapshot.topic, "state": snapshot.state}),
    )
    plan_id = open_plan(service)
    add_notes(service, plan_id, EVERY + 1)
    service.flush_snapshots()
    assert not is_typed_snapshot(decrypted_latest_snapshot(service, plan_id))
    monkeypatch.undo()
    uncached = services(PlanService, aggregate_cache_size=0)

    assert vars(uncached.get_plan(plan_id)) == vars(service.get_plan(plan_id))


def test_the_stored_typed_snapshot_sample_still_loads(services: Callable[..., PlanService]) -> None:
    """A typed snapshot as stored by this version: a change of the codec must still read it."""
    service = services()
    sample = json.loads(TYPED_SAMPLE.read_text())
    plan_id = uuid.UUID(sample["originator_id"])
    service.keyring.create(plan_id)
    clear = StoredEvent(
        originator_id=plan_id,
        originator_version=sample["originator_version"],
        topic=sample["topic"],
        state=json.dumps(sample["state"], ensure_ascii=False, separators=(",", ":")).encode(),
    )
    nonce = os.urandom(12)
    sealed = service.keyring.cipher_for(plan_id).encrypt(nonce, clear.state, crypto._associated_data(clear))
    stored = StoredEvent(clear.originator_id, clear.originator_version, clear.topic, crypto.ENCRYPTED + nonce + sealed)

    plan = service.mapper.to_domain_event(stored).mutate(None)

    assert type(plan) is ClientPlan and plan.id == plan_id and plan.version == sample["originator_version"]
    assert plan.client.name == "Matti Meikäläinen"
    assert service.mapper.to_stored_event(Snapshot.take(plan)).state.startswith(crypto.ENCRYPTED)
