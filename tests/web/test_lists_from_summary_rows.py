"""The caseload and the administrator's statistics are made from summary rows: no plan is decoded.

With 1,000s of plans in a county, decoding each plan's whole state for every request was
what made these pages slow (benchmarks/caseload_statistics.py). Here decoding a plan fails
the request, and the pages still show what they showed before.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from projections.plans import PlanProjection
from tests.web.identity_fixtures import add_account
from tests.web.plan_fixtures import PlanSite, plan_site, signed_in  # noqa: F401


@pytest.fixture
def no_plan_decoded(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every attempt to decode a plan from the read model is recorded and refused."""
    attempts: list[str] = []

    def refuse(self: PlanProjection, plan_id: str) -> None:
        attempts.append(plan_id)
        raise AssertionError("a list page decoded a whole plan")

    monkeypatch.setattr(PlanProjection, "load", refuse)
    yield attempts


def test_the_caseload_lists_both_lists_without_decoding_a_plan(
    plan_site: PlanSite, no_plan_decoded: list[str]
) -> None:
    with signed_in(plan_site, "aino.virtanen") as aino:
        response = aino.get("/caseload")

    assert response.status_code == 200
    assert no_plan_decoded == []
    html = response.text
    mine = html[html.index('id="mine-title"'):html.index('id="organisation-title"')]
    organisation = html[html.index('id="organisation-title"'):]
    assert len(re.findall(r'<tr class="caseload-row', mine)) >= 2
    assert len(re.findall(r'<tr class="caseload-row', organisation)) >= 1


def test_the_statistics_count_without_decoding_a_plan(plan_site: PlanSite, no_plan_decoded: list[str]) -> None:
    accounts = plan_site.app.state.accounts
    if accounts.account_by_username("tilda.tilasto") is None:
        add_account(accounts, "tilda.tilasto", name="Tilda Tilasto", kind="admin")
    with signed_in(plan_site, "tilda.tilasto", language="en") as admin:
        response = admin.get("/admin")

    assert response.status_code == 200
    assert no_plan_decoded == []
    assert "Plans in all: 5." in response.text

