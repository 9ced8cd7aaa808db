"""The caseload page (``/caseload``): the plans of the signed-in professional.

Two lists: the plans the person is in (as the named expert, the counterpart or a network
member) and the other plans of their organisation that they may see: ``domain.access``'s
rule for a colleague (of the named expert's or the counterpart's organisation, while the
client's consent for that organisation is valid today), asked of the read model's summary
rows (``PlanViewTables.organisation_caseload``) so that no plan is decoded for the list. A
plan whose consent was withdrawn, or starts later, is not listed, not even by the client's
name. Both lists are searchable by the client's name.
Each row tells what changed since the person last opened the plan (the plan page marks
it seen), whether a handover awaits them, and whether the next step is overdue (its planned
end has passed while it is still planned or going on).
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
from web.live.access import today_in_finland

__all__ = ("CASELOAD_ROUTE_HANDLERS", "CaseloadController", "CaseloadRow")

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
        today = today_in_finland()
        mine = await anyio.to_thread.run_sync(
            lambda: views.caseload(person_id=account.person_id, search=search)
        )
        organisation = await anyio.to_thread.run_sync(
            lambda: views.store.organisation_caseload(
                person_id=account.person_id,
                organisation_id=account.organisation_id or "",
                today=today,
                search=search,
            )
        )
        context = {
            "request": request,
            "search": search,
            "today": today,
            "mine": [CaseloadRow(entry, account.person_id) for entry in mine],
            "organisation": [CaseloadRow(entry, account.person_id) for entry in organisation],
            "account": account,
            "vocabularies": VOCABULARIES,
        }
        content = request.app.template_engine.render("caseload.html", lang=language_of(request), **context)
        return Response(content, media_type=MediaType.HTML)


CASELOAD_ROUTE_HANDLERS: tuple[ControllerRouterHandler, ...] = (CaseloadController,)
