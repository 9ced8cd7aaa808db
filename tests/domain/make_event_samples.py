"""Write a stored sample of every event class of `ClientPlan` (and `ErasureRecord`) at its
current version, and of a `ClientPlan` snapshot, into `tests/domain/samples/`.

    .venv/bin/python tests/domain/make_event_samples.py

The samples are the record of what stores hold. An event recorded today is read back in
ten years, by code that has changed in between, from a store that never rewrites it; a
sample is one such record, kept in the repository, that `test_event_versions.py` decodes
with the current code. So:

- A sample is written once, when its (class, version) has none, and never regenerated:
  this script skips every file that exists. Regenerating a sample for an existing version
  would replace the record of what old stores hold with what the current code writes, and
  the test would then prove nothing about old stores.
- Changing the fields of an event class means a new `class_version` with an
  `upcast_vN_vN+1` method; then run this script, which adds the sample of the new version
  only. The test fails until every version from 1 up to the current one has a sample.
- A sample of a version older than the code that first recorded samples is written by
  hand, as the code of that time stored it: `ClientPlan.NoteAdded.v1.json` is the v2
  sample without `visibility` and without `class_version`, which is exactly what
  `NoteAdded` stored before commit 87035e3 (checked against that code). Likewise
  `snapshots/ClientPlan.v1.json` is a snapshot of this plan's story as the code of commit
  fe161d9 stored it (notes without `visibility`, no client contact, no client's view of a
  goal; the story's later commands left out), with its timestamp set to the plan's last
  change. `snapshots/ClientPlan.v2.json` (the lean plan, without notes, measures, earlier
  schedules and old changes) was written by this script when `ClientPlan` became version 2,
  and `snapshots/ClientPlan.v3.json` (the opening day taken in Finland) when it became 3.

Each file is `{"topic": ..., "originator_version": ..., "state": ...}`, where `state` is the
transcoded JSON state exactly as the application's mapper writes it before encrypting it
(the mapper passes states that do not start with its `PK1` marker through unencrypted, so
the test can decode the samples without keys).

The samples come from one realistic plan, driven through `PlanService` with a fixed clock:
for each class, its first event in the plan. The story is arranged so that these first
events, replayed alone and in order, still make a sane plan (see `test_event_versions.py`).
"""

from __future__ import annotations

import json
import sys
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parents[1]))

from eventsourcing.persistence import Mapper  # noqa: E402

from domain.application import PlanService  # noqa: E402
from domain.erasure import ErasureRecord  # noqa: E402
from domain.plan import ClientPlan  # noqa: E402
from domain.storage import StoreSettings  # noqa: E402
from domain.values import Actor  # noqa: E402

SAMPLES = HERE / "samples"
EVENT_SAMPLES = SAMPLES / "events"
SNAPSHOT_SAMPLES = SAMPLES / "snapshots"

START = datetime(2026, 2, 2, 8, 30, tzinfo=UTC)

AINO = Actor(
    person_id="p-aino-lehto",
    name="Aino Lehto",
    organisation_id="org-oulu-hc",
    organisation_name="Oulun terveysasema",
)
SANNA = Actor(
    person_id="p-sanna-koski",
    name="Sanna Koski",
    organisation_id="org-oulu-so",
    organisation_name="Oulun sosiaalipalvelut",
)
MATTI = Actor(person_id="client-matti", name="Matti Meikäläinen", organisation_id="", organisation_name="")
"""The client himself: a person of no organisation."""
KAISA = Actor(
    person_id="p-kaisa-rinne",
    name="Kaisa Rinne",
    organisation_id="org-kela-oulu",
    organisation_name="Kela, Oulun toimisto",
)


def sample_name(event_class: type, version: int) -> str:
    """`ClientPlan.NoteAdded.v2.json`: the class as its aggregate names it, and the version."""
    return f"{event_class.__qualname__}.v{version}.json"


def stored_sample(mapper: Mapper, event: Any) -> dict[str, Any]:
    """The event as the mapper stores it, before encryption, as a sample."""
    stored = Mapper.to_stored_event(mapper, event)  # the base mapper: transcoded, not encrypted
    state = json.loads(stored.state)
    assert encode_state(state) == stored.state, "the sample would not give back the stored bytes"
    return {"topic": stored.topic, "originator_version": stored.originator_version, "state": state}


def encode_state(state: Any) -> bytes:
    """A sample's state as the stored bytes (the library's JSON transcoder writes it so)."""
    return json.dumps(state, separators=(",", ":"), ensure_ascii=False).encode()


def realistic_plan(service: PlanService) -> tuple[uuid.UUID, list[Any]]:
    """Drive a client's plan through a year of work and return its id and events.

    Aino (health centre) opens it and is the named expert; Matti, the client, records his
    own view of his goal. Sanna (social services) joins,
    is named counterpart, declines a handover and later leaves the network, after Kaisa
    (Kela) has become the counterpart. One step, one goal, a measure and a note; the plan
    is closed, reopened, and closed again.
    """
    plan_id = uuid.UUID(
        service.open_plan(
            by=AINO,
            command_id="sample-open",
            client_name="Matti Meikäläinen",
            segment="unemployed",
            language="fi",
            referring_party="employment_services",
            expert_profession="TOIKE-asiantuntija",
            expert_contact="aino.lehto@example.fi",
        ).plan_id
    )
    p = str(plan_id)

    def cmd(name: str) -> str:
        return f"sample-{name}"

    service.change_client_details(
        p, by=AINO, command_id=cmd("details"), seen_revision=0, client_name="Matti Meikäläinen",
        segment="unemployed", language="fi", referring_party="joint_employment_service",
    )
    service.record_client_contact(
        p, by=AINO, command_id=cmd("client-contact"), seen_revision=1, contact="040 111 2233, Isokatu 1 A 2, Oulu"
    )
    service.set_non_disclosure(p, by=AINO, command_id=cmd("non-disclosure"), seen_revision=2, active=True)
    so_consent = service.give_consent(
        p, by=AINO, command_id=cmd("consent-so"), organisation_id=SANNA.organisation_id,
        organisation_name=SANNA.organisation_name, valid_from=START.date(),
    ).item_id
    need = service.record_need(
        p, by=AINO, command_id=cmd("need"), category="health",
        description="Selkäkipu haittaa pitkää istumista", financial="Sairauspäivärahan enimmäisaika täyttyy",
    ).item_id
    service.update_need(
        p, by=AINO, command_id=cmd("need-update"), need_id=need, seen_revision=1, category="health",
        description="Selkäkipu haittaa pitkää istumista ja seisomista",
        financial="Sairauspäivärahan enimmäisaika täyttyy", status="being_addressed",
    )
    goal = service.set_goal(
        p, by=AINO, command_id=cmd("goal"), title="Osa-aikatyö syksyyn mennessä", need_ids=[need],
        target_date=date(2026, 9, 30),
    ).item_id
    service.revise_goal(
        p, by=AINO, command_id=cmd("goal-revise"), goal_id=goal, seen_revision=1,
        title="Osa-aikatyö tai työkokeilu syksyyn mennessä", need_ids=[need], target_date=date(2026, 10, 31),
    )
    service.record_client_view_on_goal(
        p, by=MATTI, command_id=cmd("goal-client-view"), goal_id=goal, seen_revision=2, stance="questions",
        comment="Neljä tuntia päivässä on vielä liikaa",
    )
    sanna = service.add_member(
        p, by=AINO, command_id=cmd("member-sanna"), person_id=SANNA.person_id, name=SANNA.name,
        profession="sosiaalityöntekijä", organisation_id=SANNA.organisation_id,
        organisation_name=SANNA.organisation_name, contact="040 123 4567", part="Toimeentulo ja arjen tuki",
    ).item_id
    service.update_member(
        p, by=SANNA, command_id=cmd("member-sanna-update"), member_id=sanna, seen_revision=1,
        profession="sosiaalityöntekijä", contact="040 123 4567", part="Toimeentulo, asuminen ja arjen tuki",
    )
    service.name_counterpart(p, by=AINO, command_id=cmd("counterpart-sanna"), member_id=sanna, seen_revision=0)
    handover = service.propose_handover(
        p, by=AINO, command_id=cmd("handover"), note="Sosiaalipalvelut vastaavat jatkossa?"
    ).item_id
    service.decline_handover(
        p, by=SANNA, command_id=cmd("handover-decline"), handover_id=handover, note="Terveys on vielä pääasia"
    )
    expert_member = service.get_plan(p).expert.id
    step = service.plan_step(
        p, by=AINO, command_id=cmd("step"), title="Työfysioterapeutin arvio", need_id=need,
        responsible_member_id=expert_member, planned_start=date(2026, 2, 16), planned_end=date(2026, 3, 16),
        service="Työfysioterapia",
    ).item_id
    service.update_step(
        p, by=AINO, command_id=cmd("step-update"), step_id=step, seen_revision=1,
        title="Työfysioterapeutin arvio ja kotiohjelma", need_id=need, responsible_member_id=expert_member,
        service="Työfysioterapia",
    )
    service.reschedule_step(
        p, by=AINO, command_id=cmd("step-reschedule"), step_id=step, seen_revision=2,
        planned_start=date(2026, 2, 23), planned_end=date(2026, 3, 23), reason="Asiakas sairastui",
    )
    service.progress_step(
        p, by=AINO, command_id=cmd("step-start"), step_id=step, seen_revision=3, status="started",
        on=date(2026, 2, 24),
    )
    service.record_step_outcome(
        p, by=AINO, command_id=cmd("step-outcome"), step_id=step, seen_revision=4,
        outcome="Kotiohjelma aloitettu; istumista voi lisätä asteittain",
    )
    service.record_measure(
        p, by=AINO, command_id=cmd("measure"), kind="work_ability_score", value=4, measured_on=date(2026, 3, 20),
    )
    service.add_note(
        p, by=SANNA, command_id=cmd("note"), text="Asiakas toivoo yhteydenottoja tekstiviestillä.",
        visibility="client_and_professionals",
    )
    service.settle_goal(
        p, by=AINO, command_id=cmd("goal-settle"), goal_id=goal, seen_revision=3, status="achieved",
        note="Kotiohjelma sujuu, istuminen ei enää rajoita",
    )
    # Kaisa of Kela becomes the counterpart, so that Sanna can leave the network.
    service.give_consent(
        p, by=AINO, command_id=cmd("consent-kela"), organisation_id=KAISA.organisation_id,
        organisation_name=KAISA.organisation_name, valid_from=START.date(),
    )
    kaisa = service.add_member(
        p, by=AINO, command_id=cmd("member-kaisa"), person_id=KAISA.person_id, name=KAISA.name,
        profession="etuuskäsittelijä", organisation_id=KAISA.organisation_id,
        organisation_name=KAISA.organisation_name,
    ).item_id
    service.name_counterpart(
        p, by=AINO, command_id=cmd("counterpart-kaisa"), member_id=kaisa,
        seen_revision=service.get_plan(p).responsibility.revision,
    )
    service.remove_member(p, by=AINO, command_id=cmd("member-sanna-leaves"), member_id=sanna, seen_revision=2)
    service.withdraw_consent(p, by=AINO, command_id=cmd("consent-so-withdrawn"), consent_id=so_consent, seen_revision=1)
    service.progress_step(  # a plan closes once its steps are done or cancelled
        p, by=AINO, command_id=cmd("step-done"), step_id=step, seen_revision=5, status="done", on=date(2026, 3, 23),
    )
    service.close_plan(p, by=AINO, command_id=cmd("close"), outcome="work", note="Työkokeilu jatkuu työsuhteena")
    service.reopen_plan(p, by=AINO, command_id=cmd("reopen"), reason="Työsuhde päättyi koeajalla")
    service.close_plan(p, by=AINO, command_id=cmd("close-again"), outcome="continuation_typ")
    return plan_id, list(service.events.get(plan_id))


def samples() -> Iterator[tuple[Path, dict[str, Any]]]:
    """(file, sample) for every event class met in the realistic plan, at its current
    version, and for a snapshot of the plan."""
    with tempfile.TemporaryDirectory() as folder:
        clock = (START + timedelta(days=3 * n, minutes=n) for n in range(100_000))
        service = PlanService(StoreSettings(data_dir=folder), clock=lambda: next(clock))
        try:
            plan_id, events = realistic_plan(service)
            service.take_snapshot(plan_id)
            snapshot = next(iter(service.snapshots.get(plan_id, desc=True, limit=1)))
            record = service.erase_plan(str(plan_id), by=AINO, reason="Säilytysaika päättyi")
            erasure = list(service.events.get(ErasureRecord.id_for(plan_id)))
            assert record.item_id is None and len(erasure) == 1
            seen: set[type] = set()
            for event in [*events, *erasure]:
                if type(event) in seen:
                    continue
                seen.add(type(event))
                version = getattr(type(event), "class_version", 1)
                yield EVENT_SAMPLES / sample_name(type(event), version), stored_sample(service.mapper, event)
            plan_version = getattr(ClientPlan, "class_version", 1)
            yield SNAPSHOT_SAMPLES / f"ClientPlan.v{plan_version}.json", stored_sample(service.mapper, snapshot)
        finally:
            service.close()


def event_classes() -> list[type]:
    """Every event class a store may hold: the aggregates' own event classes (not the
    library's base `Event` nor the `Created` class it generates, which are never stored)."""
    return [
        value
        for aggregate in (ClientPlan, ErasureRecord)
        for name, value in vars(aggregate).items()
        if isinstance(value, type) and issubclass(value, aggregate.Event) and name not in ("Event", "Created")
    ]


def main() -> int:
    written = 0
    made = []
    for path, sample in samples():
        made.append(path.name)
        if path.exists():
            print(f"kept     {path.relative_to(HERE)}")
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(sample, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"written  {path.relative_to(HERE)}")
        written += 1
    print(f"{written} new sample(s); existing samples are never rewritten.")
    missing = [c.__qualname__ for c in event_classes() if sample_name(c, getattr(c, "class_version", 1)) not in made]
    if missing:
        print(f"The plan never records {', '.join(missing)}: extend realistic_plan() so it does.")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
