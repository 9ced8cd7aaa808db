"""Helpers of the projection tests: actors, random commands, comparable states."""

from __future__ import annotations

import copy
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from domain.application import Outcome, PlanService
from domain.demo import PEOPLE
from domain.errors import DomainError
from domain.plan import ClientPlan
from domain.values import Actor, NeedCategory
from projections.plans import PlanViews

ACTORS: dict[str, Actor] = {actor.person_id: actor for actor, _ in PEOPLE.values()}
PROFESSIONS: dict[str, str] = {actor.person_id: profession for actor, profession in PEOPLE.values()}
ORGANISATIONS: dict[str, str] = {actor.organisation_id: actor.organisation_name for actor in ACTORS.values()}
CLIENT_NAMES = ["Äijälä Väinö", "Öhman Sini", "Kärkkäinen Pää", "Lindström Åsa", "Niemi Ulla", "Suominen Eero"]


def today() -> Any:
    return datetime.now(UTC).date()


def state_of(plan: ClientPlan) -> dict[str, Any]:
    """A plan's whole state as a comparable (deep-copied) dict, without pending events."""
    state = copy.deepcopy(dict(vars(plan)))
    state.pop("_pending_events", None)
    return state


def read_side(views: PlanViews, plan_ids: list[str]) -> dict[str, dict[str, Any] | None]:
    return {plan_id: (None if (plan := views.plan(plan_id)) is None else state_of(plan)) for plan_id in plan_ids}


def write_side(service: PlanService, plan_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Each plan's whole record replayed from the event store, as the read model should hold it."""
    return {plan_id: state_of(service.plan_record(plan_id)) for plan_id in plan_ids}


def caseloads(views: PlanViews) -> dict[tuple[str, str | None], list[Any]]:
    """Every person's own caseload and every organisation's, sorted by plan id."""
    found: dict[tuple[str, str | None], list[Any]] = {}
    for person_id, actor in ACTORS.items():
        found[(person_id, None)] = sorted(views.caseload(person_id=person_id), key=lambda e: e.plan_id)
        found[(person_id, actor.organisation_id)] = sorted(
            views.caseload(person_id=person_id, organisation_id=actor.organisation_id), key=lambda e: e.plan_id
        )
    return found


def all_plan_ids(service: PlanService) -> list[str]:
    return [str(plan_id) for plan_id in service.plan_ids()]


def random_commands(service: PlanService, rng: random.Random, count: int, tag: str) -> list[Outcome]:
    """Run `count` successful random commands over every open plan (and open a few new ones).

    Commands the plan refuses (a `DomainError`) are skipped; the rest are recorded.
    """
    outcomes: list[Outcome] = []
    plan_ids = all_plan_ids(service)
    attempt = 0
    while len(outcomes) < count:
        attempt += 1
        assert attempt < count * 20, "too many refused random commands"
        command_id = f"{tag}-{attempt}"
        if not plan_ids or rng.random() < 0.08:
            opener = rng.choice(list(ACTORS.values()))
            outcome = service.open_plan(
                by=opener,
                command_id=command_id,
                client_name=f"{rng.choice(CLIENT_NAMES)} {tag} {attempt}",
                segment=rng.choice(["unemployed", "employed", "entrepreneur"]),
                language=rng.choice(["fi", "sv", "en"]),
                referring_party="self_referral",
                expert_profession=PROFESSIONS[opener.person_id],
            )
            plan_ids.append(outcome.plan_id)
            outcomes.append(outcome)
            continue
        plan = service.get_plan(rng.choice(plan_ids))
        if plan.is_closed:
            continue
        action = rng.choice(_ACTIONS)
        try:
            outcome = action(service, plan, ACTORS[plan.expert.person_id], command_id, rng)
        except DomainError:
            continue
        if outcome is not None:
            outcomes.append(outcome)
    return outcomes


def _note(service: PlanService, plan: ClientPlan, by: Actor, command_id: str, rng: random.Random) -> Outcome:
    return service.add_note(str(plan.id), by=by, command_id=command_id, text=f"Muistiinpano {rng.randint(1, 999)}: jäi kesken.")


def _measure(service: PlanService, plan: ClientPlan, by: Actor, command_id: str, rng: random.Random) -> Outcome:
    return service.record_measure(
        str(plan.id), by=by, command_id=command_id, kind="work_ability_score", value=rng.randint(0, 10), measured_on=today()
    )


def _need(service: PlanService, plan: ClientPlan, by: Actor, command_id: str, rng: random.Random) -> Outcome:
    return service.record_need(
        str(plan.id),
        by=by,
        command_id=command_id,
        category=rng.choice([c.value for c in NeedCategory]),
        description=f"Tarve {rng.randint(1, 999)}",
        financial=rng.choice(["", "Toimeentulotuki"]),
    )


def _update_need(service: PlanService, plan: ClientPlan, by: Actor, command_id: str, rng: random.Random) -> Outcome | None:
    if not plan.needs:
        return None
    need = rng.choice(list(plan.needs.values()))
    return service.update_need(
        str(plan.id),
        by=by,
        command_id=command_id,
        need_id=need.id,
        seen_revision=need.revision,
        category=need.category,
        description=need.description + " (päivitetty)",
        financial=need.financial,
        status=rng.choice(["open", "being_addressed", "resolved"]),
    )


def _step(service: PlanService, plan: ClientPlan, by: Actor, command_id: str, rng: random.Random) -> Outcome | None:
    if not plan.needs:
        return None
    start = today() + timedelta(days=rng.randint(-30, 60))
    return service.plan_step(
        str(plan.id),
        by=by,
        command_id=command_id,
        title=f"Vaihe {rng.randint(1, 999)}",
        need_id=rng.choice(list(plan.needs)),
        responsible_member_id=rng.choice(list(plan.members)),
        planned_start=start,
        planned_end=start + timedelta(days=rng.randint(0, 40)),
    )


def _progress(service: PlanService, plan: ClientPlan, by: Actor, command_id: str, rng: random.Random) -> Outcome | None:
    open_steps = [s for s in plan.steps.values() if s.status in ("planned", "started")]
    if not open_steps:
        return None
    step = rng.choice(open_steps)
    status = "started" if step.status == "planned" and rng.random() < 0.6 else rng.choice(["done", "done", "cancelled"])
    return service.progress_step(
        str(plan.id), by=by, command_id=command_id, step_id=step.id, seen_revision=step.revision, status=status, on=today()
    )


def _member(service: PlanService, plan: ClientPlan, by: Actor, command_id: str, rng: random.Random) -> Outcome | None:
    present = {m.person_id for m in plan.members.values()}
    candidates = [a for a in ACTORS.values() if a.person_id not in present]
    if not candidates:
        return None
    person = rng.choice(candidates)
    if not plan.valid_consent_for(person.organisation_id, today()):
        return service.give_consent(
            str(plan.id),
            by=by,
            command_id=command_id,
            organisation_id=person.organisation_id,
            organisation_name=person.organisation_name,
            valid_from=today(),
        )
    return service.add_member(
        str(plan.id),
        by=by,
        command_id=command_id,
        person_id=person.person_id,
        name=person.name,
        profession=PROFESSIONS[person.person_id],
        organisation_id=person.organisation_id,
        organisation_name=person.organisation_name,
    )


def _rename(service: PlanService, plan: ClientPlan, by: Actor, command_id: str, rng: random.Random) -> Outcome:
    client = plan.client
    return service.change_client_details(
        str(plan.id),
        by=by,
        command_id=command_id,
        seen_revision=client.revision,
        client_name=f"{rng.choice(CLIENT_NAMES)} {command_id}",
        segment=client.segment,
        language=client.language,
        referring_party=client.referring_party,
    )


_ACTIONS = [_note, _measure, _need, _need, _update_need, _step, _step, _progress, _progress, _member, _member, _rename]


def notification_ids(service: PlanService) -> list[int]:
    ids: list[int] = []
    start = 1
    while True:
        page = service.recorder.select_notifications(start=start, limit=500)
        ids += [n.id for n in page]
        if len(page) < 500:
            return ids
        start = page[-1].id + 1


def catch_up(views: PlanViews, service: PlanService, timeout: float = 10.0) -> int:
    """Wait until `views` has applied everything recorded so far; returns that position."""
    end = service.recorder.max_notification_id() or 0
    assert views.wait_for(end, timeout=timeout), f"follower stuck at {views.position}, log at {end}"
    views.check_running()
    return end
