"""The client's own view: ``/my-plan``, for client accounts only.

The plan always comes from the signed-in account (``account.plan_id``), never from the
URL; ``domain.access`` decides on every request that the account is that plan's client
(relation CLIENT), and which commands the client may give (``CLIENT_COMMANDS``). Item ids
in the URLs (a goal, a consent) are only looked up in the client's own plan.

=========================================  ============================================
``GET  /my-plan``                          the page (``web.client_page``)
``WS   /my-plan/live?version=N``           live updates for the client's audience
``POST /my-plan/comments``                 a comment (a note the client and the
                                           professionals read)
``POST /my-plan/goals/{goal}/view``        "I agree" / "I would change this" + words
``GET  /my-plan/consents/{consent}``       the consent as shown (htmx; else the page)
``GET  /my-plan/consents/{consent}/withdraw``  what withdrawing means, to confirm
``POST /my-plan/consents/{consent}/withdraw``  withdraw the consent
``POST /my-plan/consents/new``             give a consent for an organisation
=========================================  ============================================

Forms work with and without JavaScript, like the plan page's: htmx gets the changed
section with every other section out of band and a status message; a plain POST is
redirected (303) back to the page. A refused command records nothing and comes back as the
same form with the draft kept and the message next to its field, in the client's language
(status 422; ``HX-Retarget`` says where it goes).

Live: :func:`client_live` accepts the handshake only from this site, for a signed-in
client whose plan it is; the hub (``web.live.hub``) then sends this socket the client
audience's fragments (:func:`web.client_page.render_client_fragments`), rendered once per
language, and asks :func:`web.client_page.client_may_view` again before every update and
on every message. :func:`lifespan_hook` registers that audience with the hub.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from litestar import Controller, Litestar, MediaType, Request, Response, WebSocket, get, post, websocket
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import Redirect
from litestar.status_codes import HTTP_303_SEE_OTHER, HTTP_422_UNPROCESSABLE_ENTITY
from litestar.types import ControllerRouterHandler

from domain.access import Relation, may_give
from domain.application import PlanService
from domain.errors import DomainError, EditConflict
from domain.plan import ClientPlan
from domain.values import NoteVisibility, today_in_finland
from projections.plans import PlanViews
from web import forms as f
from web.accesslog import AccessLog, LoggedEntry
from web.client_page import (
    ACCESS_LOG_LIMIT,
    AUDIENCE,
    FRAGMENT_IDS,
    FRAGMENT_TEMPLATES,
    AccessLine,
    client_language,
    client_may_view,
    page_context,
    render_client_fragments,
)
from web.domain_messages import translate_message
from web.errors import UNAVAILABLE, is_htmx_request, refuse_websocket_unavailable
from web.i18n import N_, translations
from web.identity import Account, account_of, require_kind
from web.live.access import same_origin
from web.live.messages import POLICY, TRY_AGAIN
from web.live.routes import refuse_handshake, shown_version
from web.plan_page import FormState

__all__ = ("CLIENT_ROUTE_HANDLERS", "ClientController", "client_live", "lifespan_hook", "load_extras")

logger = logging.getLogger(__name__)

SENT_COMMENT = N_("Thank you. Your comment was sent.")
SAVED_VIEW = N_("Thank you. Your view of the goal was saved.")
WITHDRAWN = N_("Your consent was withdrawn.")
GIVEN = N_("Your consent was given.")
GOAL_CHANGED = N_("The goal was changed while you were writing. Read the goal again; what you wrote is kept.")
CONSENT_CHANGED = N_("The consent was changed while you were reading. Check it and try again.")
CHOOSE_ORGANISATION = N_("Choose an organisation.")


# ---------------------------------------------------------------------- the client's plan


def _client(request: Request[Any, Any, Any]) -> Account:
    account = account_of(request)
    assert account is not None and account.is_client  # the controller's guard
    return account


async def _own_plan(views: PlanViews, account: Account) -> ClientPlan:
    """The account's own plan from the read model; 404 unless the account is its client."""
    if not account.plan_id:
        raise NotFoundException()
    plan = await anyio.to_thread.run_sync(views.plan, account.plan_id)
    if not client_may_view(account, plan):
        raise NotFoundException()
    assert plan is not None
    return plan


SAME_VISIT = timedelta(minutes=2)
ACCESS_LOG_PAGE = 500
"""Entries of the access log read at a time for the client's list."""
ACCESS_LOG_MOST_READ = 10_000
"""The most entries read for the client's list (a bound on one page load's work)."""
"""A live socket's first load this soon after the page read is the same visit."""


def load_extras(state: Any, plan_id: str) -> tuple[list[AccessLine], list[tuple[str, str]]]:
    """What the client's page shows besides the plan (blocking: call it in a worker thread):
    the latest reads of the plan from the access log, and the region's organisations (the
    consent form's choices)."""
    return _access_log(state, plan_id), _organisations(state)


def _organisations(state: Any) -> list[tuple[str, str]]:
    accounts = state.get("accounts") if hasattr(state, "get") else getattr(state, "accounts", None)
    if accounts is None:
        return []
    try:
        return [(o.organisation_id, o.name) for o in accounts.organisations()]
    except Exception:  # the consent form then offers the plan's own organisations only
        logger.warning("could not list the organisations", exc_info=True)
        return []


def _access_log(state: Any, plan_id: str) -> list[AccessLine]:
    """The latest reads of the plan, newest first, one line per visit.

    A plan page read over HTTP is followed by its live socket's first load, and while a
    professional works on the plan each form and fragment they open is logged as a read of
    its own; the client sees each visit as one line, its first read. The log is read a page
    at a time until there are enough visits (or ``ACCESS_LOG_MOST_READ`` entries): one
    reader's many reads must not push the others' out of the list.
    """
    log: AccessLog = state.access_log
    entries: list[LoggedEntry] = []
    while True:
        page = log.entries_for_plan(plan_id, ACCESS_LOG_PAGE, before=entries[-1].seq if entries else None)
        entries += page
        visits = _visits(entries)
        if len(visits) > ACCESS_LOG_LIMIT or len(page) < ACCESS_LOG_PAGE or len(entries) >= ACCESS_LOG_MOST_READ:
            break
    return [
        AccessLine(who=entry.person_name, organisation=entry.organisation_name, at=entry.at, what=entry.what)
        for entry in visits[:ACCESS_LOG_LIMIT]
    ]


def _visits(entries: list[LoggedEntry]) -> list[LoggedEntry]:
    """Of ``entries`` (newest first), the first read of each visit, newest first: a page read
    within ``SAME_VISIT`` of the same person's previous page read belongs to that visit (a
    history read is a line of its own)."""
    previous_page_read: dict[str, datetime] = {}
    firsts = []
    for entry in reversed(entries):
        if entry.what == "page":
            previous = previous_page_read.get(entry.person_id)
            previous_page_read[entry.person_id] = entry.at
            if previous is not None and timedelta(0) <= entry.at - previous <= SAME_VISIT:
                continue
        firsts.append(entry)
    firsts.reverse()
    return firsts


# ------------------------------------------------------------------------- rendering


async def _context(request: Request[Any, Any, Any], plan: ClientPlan, lang: str, **options: Any) -> dict[str, Any]:
    access_log, organisations = await anyio.to_thread.run_sync(load_extras, request.app.state, str(plan.id))
    context = page_context(plan, lang, access_log=access_log, organisations=organisations, **options)
    context["request"] = request
    return context


def _html(request: Request[Any, Any, Any], template: str, context: dict[str, Any], status_code: int = 200,
          headers: dict[str, str] | None = None) -> Response[str]:
    content = request.app.template_engine.render(template, **context)
    return Response(content, media_type=MediaType.HTML, status_code=status_code, headers=headers or {})


async def _page(request: Request[Any, Any, Any], plan: ClientPlan, lang: str, *, status_code: int = 200,
                **options: Any) -> Response[str]:
    return _html(request, "client/show.html", await _context(request, plan, lang, **options), status_code)


async def _sections(
    request: Request[Any, Any, Any],
    plan: ClientPlan,
    lang: str,
    main: str,
    *,
    status_code: int = 200,
    message: str = "",
    **options: Any,
) -> Response[str]:
    """``main`` in place (``HX-Retarget``), every other section out of band, and the message."""
    engine = request.app.template_engine
    context = await _context(request, plan, lang, **options)
    parts = [engine.render(FRAGMENT_TEMPLATES[main], **context)]
    if status_code < 400:
        oob = dict(context, oob=True, focus="", forms={})
        parts += [engine.render(FRAGMENT_TEMPLATES[i], **oob) for i in FRAGMENT_IDS if i != main]
    parts.append(engine.render("client/_status.html", **dict(context, message=message)))  # a refusal clears it
    return Response("\n".join(parts), media_type=MediaType.HTML, status_code=status_code,
                    headers={"HX-Retarget": f"#{main}", "HX-Reswap": "outerHTML"})


# ------------------------------------------------------------------------- controller


class ClientController(Controller):
    path = "/my-plan"
    guards = [require_kind("client")]

    @get("/", name="client:plan")
    async def show(self, request: Request[Any, Any, Any], views: NamedDependency[PlanViews]) -> Response[str]:
        plan = await _own_plan(views, _client(request))
        return await _page(request, plan, client_language(request, plan))

    @post("/comments", name="client:comment", status_code=200)
    async def comment(
        self, request: Request[Any, Any, Any], plans: NamedDependency[PlanService], views: NamedDependency[PlanViews]
    ) -> Response[Any]:
        return await _submit(
            request, plans, views, "add_note", f.ClientCommentForm, section="my-notes", dom_id="comment-new",
            fields=lambda plan, form: {"text": form.text, "visibility": NoteVisibility.CLIENT_AND_PROFESSIONALS.value},
            focus=lambda item_id: f"note-{item_id}", message=SENT_COMMENT,
        )

    @post("/goals/{goal_id:str}/view", name="client:goal-view", status_code=200)
    async def goal_view(
        self,
        request: Request[Any, Any, Any],
        goal_id: FromPath[str],
        plans: NamedDependency[PlanService],
        views: NamedDependency[PlanViews],
    ) -> Response[Any]:
        return await _submit(
            request, plans, views, "record_client_view_on_goal", f.ClientGoalViewForm, section="my-goals",
            dom_id=f"goal-{goal_id}", item=lambda plan: plan.goals.get(goal_id),
            fields=lambda plan, form: {"goal_id": goal_id, **form.fields()},
            focus=lambda item_id: f"goal-{goal_id}", message=SAVED_VIEW, conflict=GOAL_CHANGED,
        )

    @get("/consents/{consent_id:str}", name="client:consent")
    async def consent(
        self, request: Request[Any, Any, Any], consent_id: FromPath[str], views: NamedDependency[PlanViews]
    ) -> Response[Any]:
        """The consent as shown (the confirmation's Cancel). Without htmx: the page, at the consent."""
        plan = await _own_plan(views, _client(request))
        if consent_id not in plan.consents:
            raise NotFoundException()
        if not is_htmx_request(request):
            return Redirect(f"/my-plan#consent-{consent_id}", status_code=HTTP_303_SEE_OTHER)
        return await _consent_item(request, plan, consent_id, None)

    @get("/consents/{consent_id:str}/withdraw", name="client:consent-confirm")
    async def confirm_withdrawal(
        self, request: Request[Any, Any, Any], consent_id: FromPath[str], views: NamedDependency[PlanViews]
    ) -> Response[Any]:
        """What withdrawing the consent means, with the button that does it."""
        plan = await _own_plan(views, _client(request))
        consent = plan.consents.get(consent_id)
        if consent is None:
            raise NotFoundException()
        dom_id = f"consent-{consent_id}"
        if consent.withdrawn_on is not None:
            return Redirect(f"/my-plan#{dom_id}", status_code=HTTP_303_SEE_OTHER)
        state = FormState(form="withdraw", seen_revision=consent.revision)
        if is_htmx_request(request):
            return await _consent_item(request, plan, consent_id, state)
        return await _page(request, plan, client_language(request, plan), forms={dom_id: state})

    @post("/consents/{consent_id:str}/withdraw", name="client:consent-withdraw", status_code=200)
    async def withdraw(
        self,
        request: Request[Any, Any, Any],
        consent_id: FromPath[str],
        plans: NamedDependency[PlanService],
        views: NamedDependency[PlanViews],
    ) -> Response[Any]:
        return await _submit(
            request, plans, views, "withdraw_consent", f.ClientWithdrawConsentForm, section="my-consents",
            dom_id=f"consent-{consent_id}", item=lambda plan: plan.consents.get(consent_id),
            fields=lambda plan, form: {"consent_id": consent_id, "seen_revision": form.seen_revision},
            focus=lambda item_id: f"consent-{consent_id}", message=WITHDRAWN, conflict=CONSENT_CHANGED,
        )

    @post("/consents/new", name="client:consent-give", status_code=200)
    async def give(
        self, request: Request[Any, Any, Any], plans: NamedDependency[PlanService], views: NamedDependency[PlanViews]
    ) -> Response[Any]:
        organisations = await anyio.to_thread.run_sync(_organisations, request.app.state)
        return await _submit(
            request, plans, views, "give_consent", f.ClientConsentForm, section="my-consents", dom_id="consent-new",
            fields=lambda plan, form: _consent_fields(plan, form, organisations),
            focus=lambda item_id: f"consent-{item_id}", message=GIVEN,
        )


class _ChooseOrganisation(DomainError):
    def __init__(self) -> None:
        super().__init__(CHOOSE_ORGANISATION, field="organisation_id")


def _consent_fields(plan: ClientPlan, form: Any, organisations: list[tuple[str, str]]) -> dict[str, Any]:
    """The organisation's name comes from the region's list (or the plan), never from the form."""
    choices = dict(organisations)
    for consent in plan.consents.values():
        choices.setdefault(consent.organisation_id, consent.organisation_name)
    name = choices.get(form.organisation_id)
    if not form.organisation_id or name is None:
        raise _ChooseOrganisation()
    return {"organisation_id": form.organisation_id, "organisation_name": name,
            "valid_from": today_in_finland().isoformat()}


async def _consent_item(request: Request[Any, Any, Any], plan: ClientPlan, consent_id: str,
                        state: FormState | None) -> Response[str]:
    dom_id = f"consent-{consent_id}"
    lang = client_language(request, plan)
    context = await _context(request, plan, lang, forms={dom_id: state} if state else {})
    context["consent"] = context["me"].consent(consent_id)
    return _html(request, "client/items/consent.html", context,
                 headers={"HX-Retarget": f"#{dom_id}", "HX-Reswap": "outerHTML"})


async def _submit(
    request: Request[Any, Any, Any],
    plans: PlanService,
    views: PlanViews,
    command: str,
    struct: type[f.Form],
    *,
    section: str,
    dom_id: str,
    fields: Callable[[ClientPlan, Any], dict[str, Any]],
    focus: Callable[[str | None], str],
    message: str,
    item: Callable[[ClientPlan], Any] | None = None,
    conflict: str = "",
) -> Response[Any]:
    """Run one of the client's commands for the signed-in client's own plan."""
    account = _client(request)
    plan = await _own_plan(views, account)
    if item is not None and item(plan) is None:
        raise NotFoundException()
    if not may_give(Relation.CLIENT, command):  # the one table of domain.access
        raise NotFoundException()
    plan_id = str(plan.id)
    lang = client_language(request, plan)
    _ = translations(lang).gettext
    posted = await request.form()
    draft = {name: posted.get(name, "") for name in struct.__struct_fields__}
    shown = {n for n in struct.__struct_fields__ if n not in ("command_id", "seen_revision")}

    def refused(field: str | None, text: str, seen_revision: int | None = None) -> FormState:
        # An id that another command used already is replaced, so that the form can be sent again.
        used = field == "command_id"
        if seen_revision is None:
            seen_revision = f.whole_number(str(draft.get("seen_revision", "")))
        state = FormState(form="refused", values=draft,
                          command_id=str(uuid.uuid4() if used else draft.get("command_id") or uuid.uuid4()),
                          seen_revision=seen_revision)
        if field in shown:
            state.errors[field] = text
        else:
            state.message = text
        return state

    try:
        data = f.decode_form(posted, struct)
        values = fields(plan, data)
        run = getattr(plans, command)
        outcome = await anyio.to_thread.run_sync(
            lambda: run(plan_id, by=account.actor, command_id=data.command_id, **values)
        )
    except f.FormInvalid as invalid:
        name, (template, params) = next(iter(invalid.errors.items()))
        state = refused(name, translate_message(template, params, _, lang))
        return await _refused(request, plan, lang, section, dom_id, state)
    except EditConflict as error:
        position = await anyio.to_thread.run_sync(plans.recorder.max_notification_id)
        fresh = await _fresh_plan(views, plan_id, position or 0)
        state = refused(None, _(conflict), seen_revision=error.current_revision)
        return await _refused(request, fresh, lang, section, dom_id, state)
    except DomainError as error:
        state = refused(error.field, translate_message(error.template, error.params, _, lang))
        return await _refused(request, plan, lang, section, dom_id, state)

    fresh = await _fresh_plan(views, plan_id, outcome.position)
    target = focus(outcome.item_id)
    if not is_htmx_request(request):
        return Redirect(f"/my-plan#{target}", status_code=HTTP_303_SEE_OTHER)
    return await _sections(request, fresh, client_language(request, fresh), section, message=_(message), focus=target)


async def _refused(request: Request[Any, Any, Any], plan: ClientPlan, lang: str, section: str, dom_id: str,
                   state: FormState) -> Response[str]:
    forms = {dom_id: state}
    if is_htmx_request(request):
        return await _sections(request, plan, lang, section, status_code=HTTP_422_UNPROCESSABLE_ENTITY, forms=forms)
    return await _page(request, plan, lang, status_code=HTTP_422_UNPROCESSABLE_ENTITY, forms=forms)


async def _fresh_plan(views: PlanViews, plan_id: str, position: int) -> ClientPlan:
    """The plan from the read model once it has reached ``position`` (the client's own write)."""
    reached = await anyio.to_thread.run_sync(views.wait_for, position)
    if not reached:
        logger.warning("the plan views did not reach position %s in time; showing what they have", position)
    plan = await anyio.to_thread.run_sync(views.plan, plan_id)
    if plan is None:
        raise NotFoundException()
    return plan


# ------------------------------------------------------------------------------ live


@websocket("/my-plan/live", name="client:live")
async def client_live(socket: WebSocket) -> None:
    """The client's live socket: refused (HTTP 403) unless from this site, signed in as the
    plan's client; the plan is the account's own. When the plan cannot be read (the
    database is unavailable) it is refused 503 (close 1013 where the server cannot answer
    a handshake with a status), so the browser tries again, never told it lacks access."""
    hub = getattr(socket.app.state, "live_hub", None)
    if hub is None or not hub.accepting or AUDIENCE not in getattr(hub, "audiences", {}):
        await refuse_handshake(socket, TRY_AGAIN, "not serving live updates now")
        return
    if not same_origin(socket):
        await refuse_handshake(socket, POLICY, "foreign origin")
        return
    account = account_of(socket)
    if account is None or not account.is_client or not account.plan_id:
        await refuse_handshake(socket, POLICY, "not allowed")
        return
    try:
        plan = await hub.load(account.plan_id)
    except UNAVAILABLE as error:
        logger.warning("client live socket refused, the database is unavailable: %s", error)
        await refuse_websocket_unavailable(socket.scope, socket.send)
        return
    if not client_may_view(account, plan):
        await refuse_handshake(socket, POLICY, "not allowed")
        return
    await socket.accept()
    await hub.serve(socket, str(plan.id), account, client_language(socket, plan), shown_version(socket),
                    audience=AUDIENCE)


@asynccontextmanager
async def lifespan_hook(app: Litestar) -> AsyncIterator[None]:
    """Register the client's audience with the live hub (after the hub has started)."""
    hub = getattr(app.state, "live_hub", None)
    if hub is not None:
        state = app.state

        def render(engine: Any, plan: ClientPlan, language: str) -> str:
            access_log, organisations = load_extras(state, str(plan.id))
            return render_client_fragments(engine, plan, language, access_log=access_log, organisations=organisations)

        hub.add_audience(AUDIENCE, render=render, may_view=client_may_view)
    yield


CLIENT_ROUTE_HANDLERS: tuple[ControllerRouterHandler, ...] = (ClientController, client_live)
