"""The caseload page (``/caseload``): the plans of the signed-in professional.

Two lists: the plans the person is in (as the named expert, the counterpart or a network
member) and the other plans of their organisation; both searchable by the client's name.
Each row tells what changed since the person last opened the plan (the plan page marks
it seen) and whether a handover awaits them.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import anyio.to_thread
from litestar import Controller, MediaType, Request, Response, get
from litestar.di import NamedDependency
from litestar.params import FromQuery
from litestar.types import ControllerRouterHandler

from projections.plans import PlanViews
from projections.views import CaseloadEntry
from web.controllers.plans import signed_in_professional
from web.domain_messages import VOCABULARIES
from web.i18n import language_of

__all__ = ("CASELOAD_ROUTE_HANDLERS", "CaseloadController", "CaseloadRow")

#: The organisation's plans are those where one of its people is the named expert or the
#: counterpart (the plan page's and the live hub's rule, ``web.live.access.may_view``);
#: the caseload query gives each plan the first role of the organisation's people in it.
ORGANISATION_ROLES = ("expert", "counterpart")
#: Longest search text taken from the query.
MAX_SEARCH = 100


class CaseloadRow:
    """One plan in a caseload list, as the template shows it."""

    def __init__(self, entry: CaseloadEntry, person_id: str) -> None:
        summary = entry.summary
        self.plan_id = entry.plan_id
        self.role = entry.role
        self.client_name = summary["client_name"]
        self.segment = summary["segment"]
        self.is_closed = bool(summary.get("is_closed"))
        self.expert = summary.get("expert") or {}
        self.counterpart = summary.get("counterpart")
        step = summary.get("next_step")
        self.next_step = (
            {**step, "start": date.fromisoformat(step["start"]), "end": date.fromisoformat(step["end"])} if step else None
        )
        self.handover = summary.get("pending_handover")
        self.awaits_me = bool(self.handover and self.handover.get("to_person_id") == person_id)
        self.changed = entry.changed_since_seen
        self.never_seen = entry.seen_version is None
        self.open_needs = summary.get("open_needs", 0)


class CaseloadController(Controller):
    path = "/caseload"

    @get(name="caseload")
    async def show(
        self, request: Request[Any, Any, Any], views: NamedDependency[PlanViews], q: FromQuery[str] = ""
    ) -> Response[str]:
        account = signed_in_professional(request)
        search = q.strip()[:MAX_SEARCH]
        mine = await anyio.to_thread.run_sync(
            lambda: views.caseload(person_id=account.person_id, search=search)
        )
        organisation = await anyio.to_thread.run_sync(
            lambda: views.caseload(person_id=account.person_id, organisation_id=account.organisation_id, search=search)
        )
        my_ids = {entry.plan_id for entry in mine}
        context = {
            "request": request,
            "search": search,
            "mine": [CaseloadRow(entry, account.person_id) for entry in mine],
            "organisation": [
                CaseloadRow(entry, account.person_id)
                for entry in organisation
                if entry.plan_id not in my_ids and entry.role in ORGANISATION_ROLES
            ],
            "account": account,
            "vocabularies": VOCABULARIES,
        }
        content = request.app.template_engine.render("caseload.html", lang=language_of(request), **context)
        return Response(content, media_type=MediaType.HTML)


CASELOAD_ROUTE_HANDLERS: tuple[ControllerRouterHandler, ...] = (CaseloadController,)
