"""The summary columns and rows that the caseload and the statistics read instead of whole plans.

- they are the same whether followed event by event or rebuilt from the log;
- the statistics counted from them equal the counts over the decoded plans;
- the organisation's caseload lists exactly the plans ``domain.access`` lets a colleague
  view, on days before and after the consents started (a withdrawn consent, one given
  again from a later day, plans opened today and months ago);
- a store written by the previous version of the tables is emptied at start and refilled,
  keeping ``plan_seen``; a current one is left alone.

Every test runs on a SQLite data folder and on a fresh PostgreSQL schema (see conftest.py).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

import pytest

from domain.access import Relation, relation_to
from domain.application import PlanService
from domain.demo import load_demo
from domain.storage import StoreSettings
from domain.values import Actor
from projections.plans import PlanViews, rebuild
from projections.views import COLLEAGUE_ROLES, DERIVED_TABLES, READ_MODEL_VERSION, PlanViewTables
from tests.projections.helpers import ACTORS, ORGANISATIONS, all_plan_ids, catch_up, random_commands, today

SUMMARY_QUERIES = {
    "plan_views": "SELECT plan_id, segment, is_closed, closing_outcome FROM {plan_views} ORDER BY plan_id",
    "plan_needs": "SELECT plan_id, category, needs, open_needs FROM {plan_needs} ORDER BY plan_id, category",
    "plan_consents": "SELECT plan_id, organisation_id, valid_from FROM {plan_consents} ORDER BY plan_id, organisation_id",
    "plan_people": "SELECT plan_id, person_id, organisation_id, role FROM {plan_people} ORDER BY plan_id, person_id",
}
NEWCOMERS = [
    Actor(person_id=f"newcomer-{organisation_id}", name="Uusi Työntekijä", organisation_id=organisation_id,
          organisation_name=name)
    for organisation_id, name in ORGANISATIONS.items()
]
"""A person of each organisation who is in no plan: they see only what a colleague may."""


def summary_rows(store: PlanViewTables) -> dict[str, list[tuple[Any, ...]]]:
    tables = {name: store._qualified(name) for name in SUMMARY_QUERIES}
    found = {}
    with store._cursor(commit=False) as cursor:
        for name, query in SUMMARY_QUERIES.items():
            cursor.execute(query.format(**tables))
            found[name] = [tuple(row[key] for key in row.keys()) for row in cursor.fetchall()]  # noqa: SIM118
    return found


def build_world(service: PlanService) -> list[str]:
    """The demo, random edits, a consent withdrawn, one given again from a later day, closed plans."""
    demo = load_demo(service)
    random_commands(service, random.Random(11), 30, "sum")
    withdrawn, later = demo[0], demo[1]
    for plan_id in (withdrawn, later):
        plan = service.get_plan(plan_id)
        assert plan.counterpart is not None
        organisation_id = plan.counterpart.organisation_id
        consent = plan.valid_consent_for(organisation_id, today())
        assert consent is not None
        expert = ACTORS[plan.expert.person_id]
        service.withdraw_consent(plan_id, by=expert, command_id=f"withdraw-{plan_id}", consent_id=consent.id,
                                 seen_revision=consent.revision)
    plan = service.get_plan(later)
    service.give_consent(later, by=ACTORS[plan.expert.person_id], command_id="later", organisation_id=organisation_id,
                         organisation_name=ORGANISATIONS.get(organisation_id, organisation_id),
                         valid_from=today() + timedelta(days=10))
    for plan_id, outcome in zip(all_plan_ids(service)[-3:], ["work", "studies", "work"], strict=True):
        plan = service.get_plan(plan_id)
        if not plan.is_closed and plan.pending_handover is None:
            service.close_plan(plan_id, by=ACTORS[plan.expert.person_id], command_id=f"close-{plan_id}", outcome=outcome)
    return all_plan_ids(service)


def colleague_plans(views: PlanViews, plan_ids: list[str], actor: Actor, day: date) -> dict[str, str]:
    """Plan id -> role (the organisation's first) of the plans ``domain.access`` calls ``actor`` a colleague in."""
    found = {}
    for plan_id in plan_ids:
        plan = views.plan(plan_id)
        assert plan is not None
        relation = relation_to(plan, kind="professional", person_id=actor.person_id,
                               organisation_id=actor.organisation_id, client_plan_id=None, today=day)
        if relation == Relation.COLLEAGUE:
            roles = [p.role for p in views.store.people_of(plan_id) if p.organisation_id == actor.organisation_id]
            found[plan_id] = min(role for role in roles if role in COLLEAGUE_ROLES)
    return found


def decoded_statistics(views: PlanViews, plan_ids: list[str]) -> dict[str, Counter[Any]]:
    """The counts the admin page made before, from every decoded plan."""
    counts: dict[str, Counter[Any]] = {"plans": Counter(), "needs": Counter(), "open_needs": Counter()}
    for plan_id in plan_ids:
        plan = views.plan(plan_id)
        assert plan is not None
        outcome = (str(plan.closing.outcome) if plan.closing else None) if plan.is_closed else None
        counts["plans"][(str(plan.client.segment), plan.is_closed, outcome)] += 1
        for need in plan.needs.values():
            counts["needs"][str(need.category)] += 1
            counts["open_needs"][str(need.category)] += need.status != "resolved"
    return counts


def summary_statistics(views: PlanViews) -> dict[str, Counter[Any]]:
    counted = views.store.statistics()
    return {
        "plans": Counter({(c.segment, c.is_closed, c.closing_outcome): c.plans for c in counted.plans}),
        "needs": Counter({c.category: c.needs for c in counted.needs}),
        "open_needs": Counter({c.category: c.open_needs for c in counted.needs}),
    }


def test_summary_rows_after_following_equal_a_rebuild_and_the_decoded_plans(
    settings: StoreSettings, service: PlanService, open_views: Callable[..., PlanViews]
) -> None:
    views = open_views()
    plan_ids = build_world(service)
    catch_up(views, service)
    followed = summary_rows(views.store)
    assert {row[2] for row in followed["plan_views"]} == {0, 1}  # open and closed plans
    assert len(followed["plan_needs"]) > 5 and len(followed["plan_consents"]) > 5
    assert summary_statistics(views) == decoded_statistics(views, plan_ids)
    open_views.close(views)

    rebuild(settings)

    rebuilt = open_views(follow=False)
    assert summary_rows(rebuilt.store) == followed
    assert summary_statistics(rebuilt) == decoded_statistics(rebuilt, plan_ids)


@pytest.mark.parametrize("days_from_today", [-1, 0, 10, 400])
def test_the_organisation_caseload_lists_what_domain_access_lets_a_colleague_view(
    service: PlanService, open_views: Callable[..., PlanViews], days_from_today: int
) -> None:
    views = open_views()
    plan_ids = build_world(service)
    catch_up(views, service)
    day = today() + timedelta(days=days_from_today)
    listed_somewhere = 0
    for actor in [*ACTORS.values(), *NEWCOMERS]:
        listed = views.store.organisation_caseload(
            person_id=actor.person_id, organisation_id=actor.organisation_id, today=day
        )
        assert {entry.plan_id: entry.role for entry in listed} == colleague_plans(views, plan_ids, actor, day)
        listed_somewhere += len(listed)
    assert listed_somewhere > 0


# ------------------------------------------------------------------------- migration


def downgrade_to_version_1(store: PlanViewTables) -> None:
    """Turn the store's tables back into what the previous version wrote (no summary columns/rows)."""
    with store._cursor(commit=True) as cursor:
        for table in ("plan_needs", "plan_consents", "read_model_version"):
            cursor.execute(f"DROP TABLE {store._qualified(table)}")
        for column in ("segment", "closing_outcome"):
            cursor.execute(f"ALTER TABLE {store._qualified('plan_views')} DROP COLUMN {column}")


def test_a_store_of_the_previous_version_is_emptied_at_start_and_refilled_keeping_plan_seen(
    service: PlanService, open_views: Callable[..., PlanViews]
) -> None:
    views = open_views()
    plan_ids = build_world(service)
    end = catch_up(views, service)
    expected = summary_rows(views.store)
    person = views.store.people_of(plan_ids[0])[0].person_id
    views.mark_seen(person, plan_ids[0], 3)
    open_views.close(views)
    old = open_views(follow=False)
    downgrade_to_version_1(old.store)
    open_views.close(old)

    migrated = open_views()

    assert migrated.position < end  # the position was forgotten: the follower starts again
    catch_up(migrated, service)
    assert summary_rows(migrated.store) == expected
    assert summary_statistics(migrated) == decoded_statistics(migrated, plan_ids)
    seen = {e.plan_id: e.seen_version for e in migrated.caseload(person_id=person)}
    assert seen.get(plan_ids[0]) == 3  # plan_seen is not derived from events: it survives
    with migrated.store._cursor(commit=False) as cursor:
        assert migrated.store._version_is_current(cursor)


def test_a_store_of_the_current_version_is_left_as_it_is_at_start(
    service: PlanService, open_views: Callable[..., PlanViews]
) -> None:
    views = open_views()
    build_world(service)
    end = catch_up(views, service)
    expected = summary_rows(views.store)
    open_views.close(views)

    again = open_views(follow=False)

    assert again.position == end
    assert summary_rows(again.store) == expected
    assert again.store._reset_if_outdated() is False
    assert READ_MODEL_VERSION >= 2 and "plan_needs" in DERIVED_TABLES
