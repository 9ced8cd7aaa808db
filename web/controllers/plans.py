"""The plan pages: ``/plans/{id}``, editing every item in place, and the plan's history.

Routes (``{kind}`` is ``client``, ``needs``, ``goals``, ``members``, ``consents``,
``handovers``, ``steps``, ``measures`` or ``notes``; ``{item}`` an item's id, ``details``
for the client, or ``new`` for the block that adds one):

=====================================  =============================================
``GET  /plans/{id}``                   the plan page (marks the plan seen)
``GET  /plans/{id}/history?at=``       the plan as it was at a version or a moment
``GET  /plans/{id}/contact``           the client's contact details, as this viewer may see them
``GET  /plans/{id}/{kind}/{item}``     the item as shown (htmx; else back to the page)
``GET  /plans/{id}/{kind}/{item}/{f}``  the item with its form ``f`` open
``POST /plans/{id}/{kind}/{item}/{f}``  the form: runs the command
=====================================  =============================================

**Who may (``domain.access``).** Every route loads the plan from the read model and
computes the signed-in person's relation to it once (``relation_to(..., today=...)``):
someone outside the plan, an administrator, or a plan that does not exist all get 404, so
that plan ids cannot be probed; a relation that may not view the plan (the client, whose
own view is elsewhere) gets 403, and so does a form whose command the relation may not give
(``may_give``), or a form that shows the client's contact details to someone a
non-disclosure order hides them from (``may_see_client_contact``). Someone whose own
command took them out of the plan (their organisation's consent withdrawn) is sent to
their caseload instead of being shown the plan.

A form works with and without JavaScript. htmx gets fragments: the saved item (or its
panel, when the change moves things around in it) and a status message for ``#messages``,
rendered in a worker thread; the other panels the change touched reach the page through the
live hub like every viewer's (``web.live``); a plain POST is redirected (303) back to the page
at the item.

A refused command records nothing and comes back as the same form with the draft kept and
the message next to its field (``aria-invalid``, ``aria-describedby``), translated:
status 422, or 409 for an edit conflict, whose form shows who changed the item, when, and
which fields, with the saved values beside the draft, to save again or discard. The
response always says where it goes (``HX-Retarget``/``HX-Reswap``), and ``polku.js`` lets
htmx swap these two statuses. A plain POST gets the whole page with the form open, with
the same status. "The plan is busy" (``StoreBusy``: other writers held the plan or the
event store past the lock timeout) is such a refusal, 422. A database that cannot be
reached is not: :class:`~domain.errors.StoreUnavailable` (no ``DomainError``) goes on to
``web.errors``, which answers 503 "could not reach its database" with ``Retry-After`` into
``#messages``, and the form keeps the draft to send again.
"""

from __future__ import annotations

import functools
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, NamedTuple

import anyio.to_thread
import msgspec
from litestar import Controller, MediaType, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotAuthorizedException, NotFoundException, PermissionDeniedException
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect
from litestar.status_codes import HTTP_303_SEE_OTHER, HTTP_409_CONFLICT, HTTP_422_UNPROCESSABLE_ENTITY
from litestar.types import ControllerRouterHandler

from domain.access import Action as Permission
from domain.access import Relation, may, may_give, may_see_client_contact
from domain.application import PlanService
from domain.errors import DomainError, EditConflict, InvalidValue, NotFound
from domain.plan import ClientPlan
from projections.plans import PlanViews
from web import forms as f
from web.accounts import AccountStore
from web.conflicts import merge_with_saved
from web.controllers.admin import record_plan_read
from web.domain_messages import ITEM_KINDS, field_label, translate_message, vocabulary_label
from web.errors import is_htmx_request
from web.i18n import N_, language_of, translations
from web.identity import Account, account_of
from web.live.access import may_view, relation_of
from web.plan_page import (
    FINLAND,
    PANEL_TEMPLATES,
    Audience,
    FormState,
    PlanView,
    audience_of,
    conflict_view,
    page_context,
    today_in_finland,
)

__all__ = ("ACTIONS", "KINDS", "PLAN_ROUTE_HANDLERS", "PlanAccess", "PlanController", "may_see", "signed_in_professional")

logger = logging.getLogger(__name__)

SAVED = N_("Saved: %(what)s.")
"""The status message after a save (``what`` is the item's kind)."""
QUICK_WAIT_S = 0.02
"""How long an edit's worker thread waits for the read model to have the edit before it
hands the wait to the event loop (``_once_read``)."""
READ_MODEL_WAIT_S = 5.0
"""How long an edit's answer waits for the read model at most, then shows what it has."""
_BAD_MOMENT = N_("Choose a version or a date and time of the plan's history.")
_BEFORE_OPENING = N_("The plan did not exist yet at the moment you chose: shown is its first version.")
_SET_ORDER = N_("Set a non-disclosure order")
_LIFT_ORDER = N_("Lift the non-disclosure order")


def signed_in_professional(request: Request[Any, Any, Any]) -> Account:
    """The signed-in professional (``request.user``), or refuse.

    The sign-in wall (``web.identity``) keeps strangers out before routing; this refuses
    clients and administrators, whose pages are elsewhere.
    """
    account = account_of(request)
    if account is None:
        raise NotAuthorizedException()
    if not account.is_professional:
        raise PermissionDeniedException()
    return account


def may_see(plan: ClientPlan, account: Any) -> bool:
    """Whether the account may open the plan page: the live hub's rule (``domain.access``, VIEW_PLAN)."""
    return may_view(account, plan)


#: Relations that are told a plan does not exist rather than that they may not see it.
HIDDEN_FROM = frozenset({Relation.OUTSIDER, Relation.ADMIN})


@dataclass(frozen=True)
class PlanAccess:
    """Who asks, the plan (from the read model) and their relation to it, decided once a request."""

    account: Account
    plan: ClientPlan
    relation: Relation

    @property
    def audience(self) -> Audience:
        return audience_of(self.plan, self.relation)

    def require(self, permission: Permission) -> None:
        """403 unless the relation allows ``permission``."""
        if not may(self.relation, permission):
            raise PermissionDeniedException()

    def require_command(self, action: PlanAction, plan: ClientPlan | None = None) -> None:
        """403 unless the relation may give the form's command (and see what the form shows)."""
        if not may_give(self.relation, action.command):
            raise PermissionDeniedException()
        if action.shows_contact and not may_see_client_contact(plan or self.plan, self.relation):
            raise PermissionDeniedException()


async def plan_access(
    request: Request[Any, Any, Any], views: PlanViews, plan_id: str, permission: Permission = Permission.VIEW_PLAN
) -> PlanAccess:
    """The plan and the signed-in person's relation to it, or refuse (404/403, see the module)."""
    account = account_of(request)
    if account is None:
        raise NotAuthorizedException()
    return await anyio.to_thread.run_sync(_plan_access_now, account, views, plan_id, permission)


def _plan_access_now(
    account: Account, views: PlanViews, plan_id: str, permission: Permission = Permission.VIEW_PLAN
) -> PlanAccess:
    """:func:`plan_access` for a known account, in a worker thread (it reads the read model)."""
    plan = _read_plan(views, plan_id)
    if plan is None:
        raise NotFoundException()
    relation = relation_of(account, plan, today_in_finland())
    if relation in HIDDEN_FROM:
        raise NotFoundException()
    access = PlanAccess(account=account, plan=plan, relation=relation)
    access.require(permission)
    return access


def _read_plan(views: PlanViews, plan_id: str) -> ClientPlan | None:
    """The read model's plan (shared with other readers: never change it), or None; an id that is no plan id is none. Blocks."""
    try:
        plan_id = str(uuid.UUID(plan_id))
    except ValueError:
        return None
    return views.plan(plan_id)


def _answer_saved(
    request: Request[Any, Any, Any],
    lang: str,
    views: PlanViews,
    access: PlanAccess,
    outcome: Any,
    kind: Kind,
    item_id: str,
    item: Any,
    action: Action,
    dom_id: str,
) -> Response[Any]:
    """In a worker thread, after a command on ``item`` (None: a new one): the plan once the
    read model has it, marked seen, and the answer (:func:`_saved`; a redirect without htmx,
    the caseload if it is out of reach)."""
    fresh_access = _fresh_access(views, access)
    if fresh_access is None:
        return _gone(request)
    fresh = fresh_access.plan
    plan_id = str(fresh.id)
    views.mark_seen(access.account.person_id, plan_id, fresh.version)
    focus = _focus_after(kind, item_id, outcome.item_id, fresh)
    if not is_htmx_request(request):
        return Redirect(f"/plans/{plan_id}#{focus}", status_code=HTTP_303_SEE_OTHER)
    in_place = action.target == "item" or _stays(action, kind, item, fresh, item_id)
    _ = translations(lang).gettext
    what = ITEM_KINDS[{"member": "network member"}.get(kind.singular, kind.singular)]
    return _saved(request, lang, fresh_access, kind, in_place, dom_id, focus, _(SAVED) % {"what": _(what)})


def _stays(action: Action, kind: Kind, before: Any, plan: ClientPlan, item_id: str) -> bool:
    """Whether the edited item kept its place in its panel (``Action.stays``)."""
    if action.stays is None or before is None:
        return False
    try:
        after = kind.find(plan, item_id)
    except NotFoundException:
        return False
    return action.stays(before, after)


# ------------------------------------------------------------------------ the actions


@dataclass(frozen=True)
class Kind:
    """One kind of item: its URL segment, its id prefix on the page, where it lives."""

    segment: str
    singular: str
    panel: str
    find: Callable[[ClientPlan, str], Any]


def _find_in(attribute: str) -> Callable[[ClientPlan, str], Any]:
    def find(plan: ClientPlan, item_id: str) -> Any:
        item = getattr(plan, attribute).get(item_id)
        if item is None:
            raise NotFoundException()
        return item

    return find


def _find_handover(plan: ClientPlan, item_id: str) -> Any:
    try:
        return plan.handover(item_id)
    except NotFound:
        raise NotFoundException() from None


def _find_client(plan: ClientPlan, item_id: str) -> Any:
    if item_id != "details":
        raise NotFoundException()
    return plan.client


KINDS = {
    kind.segment: kind
    for kind in (
        Kind("client", "client", "panel-client", _find_client),
        Kind("needs", "need", "panel-needs", _find_in("needs")),
        Kind("goals", "goal", "panel-goals", _find_in("goals")),
        Kind("members", "member", "panel-network", _find_in("members")),
        Kind("consents", "consent", "panel-network", _find_in("consents")),
        Kind("handovers", "handover", "panel-network", _find_handover),
        Kind("steps", "step", "panel-steps", _find_in("steps")),
        Kind("measures", "measure", "panel-measures", lambda plan, item_id: _no_item()),
        Kind("notes", "note", "panel-notes", lambda plan, item_id: _no_item()),
    )
}

def _no_item() -> Any:
    raise NotFoundException()


@dataclass(frozen=True)
class Action:
    """One form of one kind of item, and the command it gives.

    ``prefill(plan, item)`` gives the form's first values (the item's current ones);
    ``command_fields(plan, form, item_id)`` the command's fields, by default the form's
    own plus ``id_field``; ``target`` is what a save re-renders: the ``item`` or its
    ``panel`` (when the change moves things around in it), unless ``stays(before, after)``
    says the item kept its place (then the item alone). ``shows_contact``: the form
    shows the client's contact details (only to those ``domain.access`` lets see them).
    ``from_accounts(accounts, plan, form)`` gives fields that come from the account store
    (a network member's name), or refuses a person who has no account.
    """

    kind: str
    form: str
    struct: type[f.Form]
    command: str
    target: str = "item"
    id_field: str | None = None
    prefill: Callable[[ClientPlan, Any], dict[str, Any]] = lambda plan, item: {}
    revision: Callable[[ClientPlan, Any], int] | None = None
    command_fields: Callable[[ClientPlan, Any, str], dict[str, Any]] | None = None
    aliases: dict[str, str] = field(default_factory=dict)
    shows_contact: bool = False
    stays: Callable[[Any, Any], bool] | None = None
    from_accounts: Callable[[AccountStore, ClientPlan, Any], dict[str, Any]] | None = None


PlanAction = Action


def _iso(day: date | None) -> str:
    return day.isoformat() if day else ""


def _member_fields(plan: ClientPlan, form: f.MemberForm, item_id: str) -> dict[str, Any]:
    names = {c.organisation_id: c.organisation_name for c in plan.consents.values()}
    return {**form.fields(), "organisation_name": names.get(form.organisation_id, form.organisation_id)}


def _member_from_account(accounts: AccountStore, plan: ClientPlan, form: f.MemberForm) -> dict[str, Any]:
    """A new member is a professional with an account in the chosen organisation, under the
    account's name: a typed name could show the client someone else than the person who gets
    access, and an unknown user id would let whoever is later given it into the plan."""
    account = accounts.professional(form.person_id, form.organisation_id)
    if account is None:
        names = {c.organisation_id: c.organisation_name for c in plan.consents.values()}
        raise InvalidValue("person_id", "No one in %(organisation)s has the user id %(person_id)s.",
                           organisation=names.get(form.organisation_id, form.organisation_id), person_id=form.person_id)
    return {"name": account.name}


def _consent_organisation(accounts: AccountStore, plan: ClientPlan, form: f.ConsentForm) -> dict[str, Any]:
    """A consent is for an organisation of the register, under its registered name: a typed
    name could show the client and the network a made-up "Kela" for any id."""
    organisation = accounts.organisation(form.organisation_id)
    if organisation is None:
        raise InvalidValue("organisation_id", "No organisation has the id %(organisation_id)s.",
                           organisation_id=form.organisation_id)
    return {"organisation_name": organisation.name}


def _counterpart_fields(plan: ClientPlan, form: f.CounterpartForm, item_id: str) -> dict[str, Any]:
    return {"member_id": item_id, "seen_revision": form.seen_revision}


ACTIONS = {
    (action.kind, action.form): action
    for action in (
        Action("client", "edit", f.ClientDetailsForm, "change_client_details", target="panel",
               prefill=lambda plan, c: {"client_name": c.name, "segment": c.segment, "language": c.language,
                                        "referring_party": c.referring_party},
               revision=lambda plan, c: c.revision),
        Action("client", "contact", f.ClientContactForm, "record_client_contact", target="panel",
               prefill=lambda plan, c: {"contact": c.contact}, revision=lambda plan, c: c.revision,
               shows_contact=True),
        Action("client", "nondisclosure", f.NonDisclosureForm, "set_non_disclosure", target="panel",
               prefill=lambda plan, c: {"active": "false" if c.non_disclosure else "true"},
               revision=lambda plan, c: c.revision),
        Action("client", "close", f.CloseForm, "close_plan", target="panel"),
        Action("client", "reopen", f.ReopenForm, "reopen_plan", target="panel"),
        Action("needs", "add", f.NeedForm, "record_need", target="panel"),
        Action("needs", "edit", f.NeedUpdateForm, "update_need", target="panel", id_field="need_id",
               prefill=lambda plan, n: {"category": n.category, "description": n.description,
                                        "financial": n.financial, "status": n.status},
               revision=lambda plan, n: n.revision, stays=lambda before, after: before.category == after.category),
        Action("goals", "add", f.GoalForm, "set_goal", target="panel"),
        Action("goals", "revise", f.GoalRevisionForm, "revise_goal", id_field="goal_id",
               prefill=lambda plan, g: {"title": g.title, "need_ids": list(g.need_ids), "target_date": _iso(g.target_date)},
               revision=lambda plan, g: g.revision),
        Action("goals", "settle", f.GoalSettlementForm, "settle_goal", id_field="goal_id",
               revision=lambda plan, g: g.revision),
        Action("members", "add", f.MemberForm, "add_member", target="panel", command_fields=_member_fields,
               from_accounts=_member_from_account,
               aliases={"organisation_name": "organisation_id"}),
        Action("members", "edit", f.MemberUpdateForm, "update_member", id_field="member_id",
               prefill=lambda plan, m: {"profession": m.profession, "contact": m.contact, "part": m.part},
               revision=lambda plan, m: m.revision),
        Action("members", "remove", f.MemberRemovalForm, "remove_member", target="panel", id_field="member_id",
               revision=lambda plan, m: m.revision),
        Action("members", "counterpart", f.CounterpartForm, "name_counterpart", target="panel",
               command_fields=_counterpart_fields, revision=lambda plan, m: plan.responsibility.revision),
        Action("consents", "add", f.ConsentForm, "give_consent", target="panel", from_accounts=_consent_organisation,
               prefill=lambda plan, item: {"valid_from": today_in_finland().isoformat()}),
        Action("consents", "withdraw", f.WithdrawConsentForm, "withdraw_consent", target="panel",
               id_field="consent_id", revision=lambda plan, c: c.revision),
        Action("handovers", "propose", f.HandoverProposalForm, "propose_handover", target="panel"),
        Action("handovers", "accept", f.HandoverDecisionForm, "accept_handover", target="panel", id_field="handover_id"),
        Action("handovers", "decline", f.HandoverDecisionForm, "decline_handover", target="panel", id_field="handover_id"),
        Action("handovers", "withdraw", f.HandoverDecisionForm, "withdraw_handover", target="panel", id_field="handover_id"),
        Action("steps", "add", f.StepForm, "plan_step", target="panel"),
        Action("steps", "edit", f.StepUpdateForm, "update_step", id_field="step_id",
               prefill=lambda plan, s: {"title": s.title, "need_id": s.need_id,
                                        "responsible_member_id": s.responsible_member_id or "", "service": s.service},
               revision=lambda plan, s: s.revision),
        Action("steps", "reschedule", f.StepRescheduleForm, "reschedule_step", target="panel", id_field="step_id",
               prefill=lambda plan, s: {"planned_start": _iso(s.planned_start), "planned_end": _iso(s.planned_end)},
               revision=lambda plan, s: s.revision),
        Action("steps", "progress", f.StepProgressForm, "progress_step", id_field="step_id",
               prefill=lambda plan, s: {"on": today_in_finland().isoformat()},
               revision=lambda plan, s: s.revision),
        Action("steps", "outcome", f.StepOutcomeForm, "record_step_outcome", id_field="step_id",
               prefill=lambda plan, s: {"outcome": s.outcome},
               revision=lambda plan, s: s.revision),
        Action("measures", "add", f.MeasureForm, "record_measure", target="panel",
               prefill=lambda plan, item: {"kind": "work_ability_score", "measured_on": today_in_finland().isoformat()}),
        Action("notes", "add", f.NoteForm, "add_note", target="panel",
               prefill=lambda plan, item: {"visibility": "professionals"}),
    )
}


# ------------------------------------------------------------------------- controller


class PlanController(Controller):
    path = "/plans"

    @get("/{plan_id:str}", name="plan:show")
    async def show(
        self, request: Request[Any, Any, Any], plan_id: FromPath[str], views: NamedDependency[PlanViews]
    ) -> Response[str]:
        access = await plan_access(request, views, plan_id)
        plan = access.plan
        await record_plan_read(request, str(plan.id), "page", version=plan.version)  # before anything is sent
        await anyio.to_thread.run_sync(views.mark_seen, access.account.person_id, str(plan.id), plan.version)
        return await _off_loop(_page, request, access)

    @get("/{plan_id:str}/history", name="plan:history")
    async def history(
        self,
        request: Request[Any, Any, Any],
        plan_id: FromPath[str],
        plans: NamedDependency[PlanService],
        views: NamedDependency[PlanViews],
        at: FromQuery[str] = "",
    ) -> Response[str]:
        access = await plan_access(request, views, plan_id, Permission.VIEW_HISTORY)
        latest = access.plan
        plan_id = str(latest.id)
        lang = language_of(request)
        _ = translations(lang).gettext
        entries = await anyio.to_thread.run_sync(plans.history, plan_id)
        last_version = max(latest.version, entries[-1].version if entries else 1)
        version, message = _chosen_version(at, entries, last_version)
        await record_plan_read(request, str(latest.id), "history", version=version, moment=at)
        then = await anyio.to_thread.run_sync(lambda: plans.get_plan(plan_id, version=version))
        chosen = next((e for e in entries if e.version == version), None)
        moment = chosen.at if chosen else None
        today = moment.astimezone(FINLAND).date() if moment else today_in_finland()
        audience = audience_of(latest, access.relation, shown=then)
        context = await anyio.to_thread.run_sync(
            functools.partial(page_context, then, lang, today=today, readonly=True, audience=audience,
                              past=moment is not None)
        )
        view = context["view"]
        context.update(
            request=request,
            version=version,
            last_version=last_version,
            moment=moment,
            moment_by=chosen.by_name if chosen else "",
            moment_value=moment.astimezone(FINLAND).strftime("%Y-%m-%dT%H:%M") if moment else "",
            message=_(message) if message else "",
            entries=[
                {
                    "version": e.version,
                    "at": e.at,
                    "when": view.moment(e.at),
                    "by_name": e.by_name,
                    "by_organisation": e.by_organisation,
                    "text": translate_message(e.template, e.values, _, lang),
                }
                for e in reversed(entries)
            ],
        )
        return await _off_loop(_html, request, "plans/history.html", context)

    @get("/{plan_id:str}/contact", name="plan:contact")
    async def contact(
        self, request: Request[Any, Any, Any], plan_id: FromPath[str], views: NamedDependency[PlanViews]
    ) -> Response[Any]:
        """The client's contact details as this viewer may see them, with their controls.

        The live fragments hold a placeholder that fetches this (htmx); without htmx: back
        to the page, at the client's details.
        """
        access = await plan_access(request, views, plan_id)
        if not is_htmx_request(request):
            return Redirect(f"/plans/{access.plan.id}#client-details", status_code=HTTP_303_SEE_OTHER)
        await record_plan_read(request, str(access.plan.id), "page", version=access.plan.version)
        return _html(request, "plans/_contact.html", _context(request, access))

    @get("/{plan_id:str}/{kind:str}/{item_id:str}", name="plan:item")
    async def item(
        self,
        request: Request[Any, Any, Any],
        plan_id: FromPath[str],
        kind: FromPath[str],
        item_id: FromPath[str],
        views: NamedDependency[PlanViews],
    ) -> Response[Any]:
        """The item as shown (a form's Cancel). Without htmx: back to the page, at the item."""
        access = await plan_access(request, views, plan_id)
        plan = access.plan
        item_kind = _kind(kind)
        item = None if item_id == "new" and _has_new_block(kind) else item_kind.find(plan, item_id)
        dom_id = _dom_id(item_kind, item_id)
        if not is_htmx_request(request):
            return Redirect(f"/plans/{plan.id}#{dom_id}", status_code=HTTP_303_SEE_OTHER)
        await record_plan_read(request, str(plan.id), "page", version=plan.version)
        return await _off_loop(_fragment, request, access, item_kind, item, dom_id, None)

    @get("/{plan_id:str}/{kind:str}/{item_id:str}/{form:str}", name="plan:form")
    async def open_form(
        self,
        request: Request[Any, Any, Any],
        plan_id: FromPath[str],
        kind: FromPath[str],
        item_id: FromPath[str],
        form: FromPath[str],
        views: NamedDependency[PlanViews],
    ) -> Response[str]:
        """The item with the form open: a fragment for htmx, else the whole page."""
        access = await plan_access(request, views, plan_id)
        plan = access.plan
        action = _action(kind, item_id, form)
        access.require_command(action)
        item_kind = KINDS[kind]
        item = None if item_id == "new" else item_kind.find(plan, item_id)
        state = FormState(
            form=form,
            values=action.prefill(plan, item),
            seen_revision=action.revision(plan, item) if action.revision else None,
        )
        dom_id = _dom_id(item_kind, item_id)
        # A fragment is a read too: a member could read the plan item by item and never open the page.
        await record_plan_read(request, str(plan.id), "page", version=plan.version)
        if is_htmx_request(request):
            return await _off_loop(_fragment, request, access, item_kind, item, dom_id, state)
        return await _off_loop(_page, request, access, editing={dom_id: state})

    @post("/{plan_id:str}/{kind:str}/{item_id:str}/{form:str}", name="plan:submit", status_code=200)
    async def submit(
        self,
        request: Request[Any, Any, Any],
        plan_id: FromPath[str],
        kind: FromPath[str],
        item_id: FromPath[str],
        form: FromPath[str],
        views: NamedDependency[PlanViews],
    ) -> Response[Any]:
        """Run the form's command and answer (:func:`_submit`, in one trip to a worker thread).

        The plan service comes from the app's state (where ``web.wiring`` keeps it), not as a
        second dependency: Litestar resolves two or more dependencies of a handler in a task
        group, two tasks on every edit.
        """
        account = account_of(request)
        if account is None:
            raise NotAuthorizedException()
        plans: PlanService = request.app.state.plans
        posted = await request.form()
        answer = await anyio.to_thread.run_sync(
            functools.partial(_submit, request, account, plans, views, plan_id, kind, item_id, form, posted)
        )
        if isinstance(answer, _ReadModelBehind):  # recorded; the answer waits here, not in a worker thread
            if not await views.reached(answer.position, timeout=READ_MODEL_WAIT_S):
                logger.warning("the plan views did not reach position %s in time; showing what they have",
                               answer.position)
            answer = await anyio.to_thread.run_sync(answer.answer)
        return answer


PLAN_ROUTE_HANDLERS: tuple[ControllerRouterHandler, ...] = (PlanController,)


def _submit(
    request: Request[Any, Any, Any],
    account: Account,
    plans: PlanService,
    views: PlanViews,
    plan_id: str,
    kind: str,
    item_id: str,
    form: str,
    posted: Any,
) -> Response[Any] | _ReadModelBehind:
    """In a worker thread: who may, the command, and the answer (saved, refused or a conflict).

    Everything the edit needs off the event loop happens here, in one trip: the access
    decision on the read model's plan, the command, waiting for the read model and rendering.
    A read model that does not have the command's event within ``QUICK_WAIT_S`` is waited
    for on the event loop instead (:class:`_ReadModelBehind`): two edits waiting for a
    lagging read model would otherwise hold both worker threads, and every page with them.
    """
    access = _plan_access_now(account, views, plan_id)
    plan = access.plan
    plan_id = str(plan.id)
    action = _action(kind, item_id, form)
    access.require_command(action)
    item_kind = KINDS[kind]
    item = None if item_id == "new" else item_kind.find(plan, item_id)
    dom_id = _dom_id(item_kind, item_id)
    lang = language_of(request)
    _ = translations(lang).gettext
    try:
        data = f.decode_form(posted, action.struct)
        fields = (action.command_fields or _default_fields(action))(plan, data, item_id)
        if action.from_accounts is not None:
            fields.update(action.from_accounts(request.app.state.accounts, plan, data))
        outcome = getattr(plans, action.command)(plan_id, by=account.actor, command_id=data.command_id, **fields)
        return _once_read(views, outcome.position, functools.partial(
            _answer_saved, request, lang, views, access, outcome, item_kind, item_id, item, action, dom_id))
    except f.FormInvalid as invalid:
        state = _draft_state(action, _draft(posted, action.struct))
        for name, (template, params) in invalid.errors.items():
            _place_error(state, action, name, translate_message(template, params, _, lang))
        return _refused(request, access, item_kind, item, dom_id, state, HTTP_422_UNPROCESSABLE_ENTITY)
    except EditConflict as conflict:
        return _once_read(views, plans.recorder.max_notification_id() or 0, functools.partial(
            _answer_conflict, request, lang, views, access, plans, action, (kind, form, item_id), conflict, posted))
    except DomainError as error:
        state = _draft_state(action, _draft(posted, action.struct))
        if error.field == "command_id":  # used by another command: a new id lets the form be sent again
            state.command_id = str(uuid.uuid4())
        _place_error(state, action, error.field, translate_message(error.template, error.params, _, lang))
        return _refused(request, access, item_kind, item, dom_id, state, HTTP_422_UNPROCESSABLE_ENTITY)


def _answer_conflict(
    request: Request[Any, Any, Any],
    lang: str,
    views: PlanViews,
    access: PlanAccess,
    plans: PlanService,
    action: Action,
    edited: tuple[str, str, str],
    conflict: EditConflict,
    posted: Any,
) -> Response[Any]:
    """In a worker thread, after a stale edit (``edited``: kind, form, item id): the form again
    with the saved values merged into the draft, and what the other person changed."""
    kind, form, item_id = edited
    item_kind = KINDS[kind]
    dom_id = _dom_id(item_kind, item_id)
    _ = translations(lang).gettext
    draft = _draft(posted, action.struct)
    fresh_access = _fresh_access(views, access)
    if fresh_access is None:
        return _gone(request)
    fresh = fresh_access.plan
    # The change may have taken away what the form shows (a non-disclosure order).
    fresh_access.require_command(action)
    fresh_item = item_kind.find(fresh, item_id)
    # Fields the editor left as they were take the saved values, so that saving the draft
    # undoes no one's change unseen; the revision is that of the values the form now holds.
    merged = merge_with_saved(plans, plan_id=str(fresh.id), conflict=conflict, form=(kind, form), saved=fresh_item,
                              values_of=functools.partial(action.prefill, fresh), draft=draft)
    rows = _compare(action, fresh, fresh_item, merged.values, PlanView(fresh, _, lang), merged.clashes)
    state = FormState(form=form, values=merged.values, seen_revision=action.revision(fresh, fresh_item),
                      conflict=conflict_view(conflict, rows, _))
    return _refused(request, fresh_access, item_kind, fresh_item, dom_id, state, HTTP_409_CONFLICT)


# ---------------------------------------------------------------------------- helpers


class _ReadModelBehind(NamedTuple):
    """A recorded command whose answer waits for the read model to reach ``position``."""

    position: int
    answer: Callable[[], Response[Any]]
    """Makes the answer (in a worker thread), once the read model is there or the wait is over."""


def _once_read(views: PlanViews, position: int, answer: Callable[[], Response[Any]]) -> Response[Any] | _ReadModelBehind:
    """``answer()`` now when the read model reaches ``position`` within ``QUICK_WAIT_S`` (as
    nearly always: the follower runs in this process), else the wait for the event loop."""
    if views.wait_for(position, timeout=QUICK_WAIT_S):
        return answer()
    return _ReadModelBehind(position, answer)


def _kind(segment: str) -> Kind:
    kind = KINDS.get(segment)
    if kind is None:
        raise NotFoundException()
    return kind


def _has_new_block(segment: str) -> bool:
    """Whether the page has a block for a new item of this kind (``<kind>/new``: its "add")."""
    return any(kind == segment and form in ("add", "propose") for kind, form in ACTIONS)


def _action(segment: str, item_id: str, form: str) -> Action:
    action = ACTIONS.get((segment, form))
    if action is None:
        raise NotFoundException()
    if (item_id == "new") != (form in ("add", "propose")):
        raise NotFoundException()
    return action


def _dom_id(kind: Kind, item_id: str) -> str:
    if kind.segment == "client":
        return "client-details"
    return f"{kind.singular}-{item_id}"


def _default_fields(action: Action) -> Callable[[ClientPlan, Any, str], dict[str, Any]]:
    def fields(plan: ClientPlan, form: Any, item_id: str) -> dict[str, Any]:
        values = form.fields()
        if action.id_field:
            values[action.id_field] = item_id
        return values

    return fields


def _fresh_access(views: PlanViews, access: PlanAccess) -> PlanAccess | None:
    """The plan as the read model has it now (after our own write), with the relation to it
    asked again: None when the asker may no longer see it."""
    plan = views.plan(str(access.plan.id))
    if plan is None:
        return None
    relation = relation_of(access.account, plan, today_in_finland())
    if not may(relation, Permission.VIEW_PLAN):
        return None
    return PlanAccess(account=access.account, plan=plan, relation=relation)


def _gone(request: Request[Any, Any, Any]) -> Response[Any]:
    """The asker's own change took the plan out of their reach: off to their caseload."""
    if is_htmx_request(request):
        return Response("", media_type=MediaType.HTML, headers={"HX-Redirect": "/caseload"})
    return Redirect("/caseload", status_code=HTTP_303_SEE_OTHER)


def _draft(posted: Any, struct: type[msgspec.Struct]) -> dict[str, Any]:
    """What the editor typed, as typed (to put back into the form)."""
    return {
        shape.name: posted.getall(shape.name, []) if shape.is_list else posted.get(shape.name, "")
        for shape in f.form_fields(struct)
    }


def _draft_state(action: Action, draft: dict[str, Any]) -> FormState:
    """The form open again with the draft, for a refused command's message."""
    return FormState(form=action.form, values=draft, command_id=str(draft.get("command_id") or ""),
                     seen_revision=f.whole_number(str(draft.get("seen_revision", ""))))


def _place_error(state: FormState, action: Action, field_name: str | None, message: str) -> None:
    """Put the message next to its field, or above the form when no field of it is at fault."""
    name = action.aliases.get(field_name or "", field_name)
    shown = {n for n in action.struct.__struct_fields__ if n not in ("command_id", "seen_revision")}
    if name in shown:
        state.errors[name] = message
    else:
        state.message = message


def _compare(
    action: Action, plan: ClientPlan, item: Any, draft: dict[str, Any], view: PlanView, clashes: frozenset[str]
) -> list[tuple[str, str, str, bool]]:
    """(label, saved value, drafted value, whether both changed it) for each field of the form, as words."""
    current = action.prefill(plan, item) if item is not None else {}
    rows = []
    for name in action.struct.__struct_fields__:
        if name in ("command_id", "seen_revision"):
            continue
        rows.append((field_label(name, view.gettext), _shown(name, current.get(name, ""), view),
                     _shown(name, draft.get(name, ""), view), name in clashes))
    return rows


def _shown(name: str, value: Any, view: PlanView) -> str:
    gettext = view.gettext
    if name == "need_ids":
        return "; ".join(view.need_title(v) for v in value or [])
    if name == "active":
        setting = str(value).lower() in ("true", "1")
        return gettext(_SET_ORDER) if setting else gettext(_LIFT_ORDER)
    if name == "need_id":
        return view.need_title(value) if value else ""
    if name == "responsible_member_id":
        return view.member_name(value)
    vocabulary = {"category": "category", "segment": "segment", "language": "language",
                  "referring_party": "referring_party"}.get(name)
    if vocabulary:
        return vocabulary_label(vocabulary, str(value), gettext)
    if name == "status":
        for vocabulary in ("need_status", "goal_status", "step_status"):
            label = vocabulary_label(vocabulary, str(value), gettext)
            if label != value:
                return label
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return view.day(date.fromisoformat(value))
    return "" if value is None else str(value)


def _focus_after(kind: Kind, item_id: str, new_item_id: str | None, plan: ClientPlan) -> str:
    if kind.segment == "client":
        return "client-details"
    if item_id == "new" and new_item_id:
        return f"{kind.singular}-{new_item_id}"
    if item_id == "new":
        return kind.panel
    exists = {
        "need": plan.needs, "goal": plan.goals, "member": plan.members, "consent": plan.consents,
        "step": plan.steps,
    }.get(kind.singular)
    if exists is not None and item_id not in exists:
        return kind.panel
    return f"{kind.singular}-{item_id}"


def _item_template(kind: Kind, item_id_is_new: bool) -> str:
    return f"plans/items/{kind.singular}{'_new' if item_id_is_new else ''}.html"


def _context(
    request: Request[Any, Any, Any], access: PlanAccess, lang: str | None = None, **options: Any
) -> dict[str, Any]:
    context = page_context(access.plan, lang or language_of(request), audience=access.audience, **options)
    context["request"] = request
    return context


def _page(
    request: Request[Any, Any, Any],
    access: PlanAccess,
    *,
    editing: dict[str, FormState] | None = None,
    status_code: int = 200,
) -> Response[str]:
    """The whole plan page, with the region's service catalogue that its step forms offer
    (the forms opened later in the page name the page's list)."""
    context = _context(request, access, editing=editing)
    context["service_catalogue"] = request.app.state.accounts.services()
    return _html(request, "plans/show.html", context, status_code)


def _fragment(
    request: Request[Any, Any, Any],
    access: PlanAccess,
    kind: Kind,
    item: Any,
    dom_id: str,
    state: FormState | None,
    *,
    status_code: int = 200,
    after: str = "",
) -> Response[str]:
    """The item (or its add block) with ``state``'s form open, or shown; ``after`` out-of-band parts."""
    context = _context(request, access, editing={dom_id: state} if state else None, with_timeline=False)
    context.update(item=item, state=state)
    template = _item_template(kind, item is None and kind.segment != "client")
    content = request.app.template_engine.render(template, **context)
    return Response(f"{content}\n{after}" if after else content, media_type=MediaType.HTML, status_code=status_code,
                    headers={"HX-Retarget": f"#{dom_id}", "HX-Reswap": "outerHTML"})


def _refused(
    request: Request[Any, Any, Any],
    access: PlanAccess,
    kind: Kind,
    item: Any,
    dom_id: str,
    state: FormState,
    status_code: int,
) -> Response[str]:
    if is_htmx_request(request):
        # An earlier save's "Saved: ..." must not stand beside this refusal in the status region.
        cleared = request.app.template_engine.render("plans/_status.html", message="")
        return _fragment(request, access, kind, item, dom_id, state, status_code=status_code, after=cleared)
    return _page(request, access, editing={dom_id: state}, status_code=status_code)


def _saved(
    request: Request[Any, Any, Any],
    lang: str,
    access: PlanAccess,
    kind: Kind,
    in_place: bool,
    dom_id: str,
    focus: str,
    message: str,
) -> Response[str]:
    """The saved item or panel, and the status message.

    Only that: the other panels the change touched (the timeline, the history...) reach
    this page as they reach every other viewer's, through the live hub, which sends each
    browser what changed since the version it shows. This answer leaves the page's version
    marker alone, so that the hub still sends it that update.
    """
    engine = request.app.template_engine
    plan = access.plan
    target_is_item = in_place and focus == dom_id
    main_id = dom_id if target_is_item else kind.panel
    context = _context(request, access, lang, focus=focus, with_timeline=False)
    if target_is_item:
        context.update(item=kind.find(plan, dom_id.split("-", 1)[1]) if kind.segment != "client" else plan.client,
                       state=None)
        main = engine.render(_item_template(kind, False), **context)
    else:
        main = engine.render(PANEL_TEMPLATES[main_id], **context)
    status = engine.render("plans/_status.html", lang=lang, message=message)
    return Response(
        f"{main}\n{status}",
        media_type=MediaType.HTML,
        headers={"HX-Retarget": f"#{main_id}", "HX-Reswap": "outerHTML"},
    )


def _chosen_version(at: str, entries: list[Any], last_version: int) -> tuple[int, str]:
    """The version that ``at`` names (a version number or a moment), else the latest."""
    text = at.strip()
    if not text:
        return last_version, ""
    version = f.whole_number(text)
    if version is not None:
        return min(max(version, 1), last_version), ""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return last_version, _BAD_MOMENT
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=FINLAND)
    earlier = [entry.version for entry in entries if entry.at <= moment]
    if not earlier:
        return 1, _BEFORE_OPENING
    return earlier[-1], ""


async def _off_loop(render: Callable[..., Response[str]], *args: Any, **options: Any) -> Response[str]:
    """``render(*args, **options)`` in a worker thread: a render takes milliseconds of CPU
    that the event loop (every other request, every live socket) should not wait for."""
    return await anyio.to_thread.run_sync(functools.partial(render, *args, **options))


def _html(
    request: Request[Any, Any, Any],
    template: str,
    context: dict[str, Any],
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> Response[str]:
    content = request.app.template_engine.render(template, **context)
    return Response(content, media_type=MediaType.HTML, status_code=status_code, headers=headers or {})
