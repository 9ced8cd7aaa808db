"""The administrator's pages (``/admin``) and the access log's place in the web application.

**Pages** (administrators only: ``require_kind("admin")``; everyone else gets 403):

=====================================  =============================================
``GET  /admin``                        organisations, the service catalogue, people,
                                       anonymous statistics
``POST /admin/organisations``          add an organisation (or rename it)
``POST /admin/services``               add a service to the catalogue the step forms offer
``POST /admin/services/remove``        take a service out of the catalogue
``POST /admin/people``                 add a professional or an administrator; shows
                                       their first sign-in link, once
``GET  /admin/access-log``             the chain checked (``AccessLog.verify``), the
                                       head to note down, the export form
``GET  /admin/access-log/export``      download: ``?format=csv|jsonl&since=&until=``
                                       (days in Finland's time, both included)
=====================================  =============================================

The people list shows professionals and administrators only: client accounts are counted,
never listed. The statistics are counts over the read model's plans (no names): plans open
and closed by segment, closed plans by outcome, needs by category.

**The access log in the web application** (the log itself is :mod:`web.accesslog`):

- :func:`access_log_lifespan` (a ``web.wiring`` lifespan hook) opens the log beside the
  event store, keeps it in ``app.state.access_log`` (an app that has one already keeps it),
  puts the live socket behind it (below) and closes the log on shutdown;
  :func:`provide_access_log` is the ``access_log`` dependency.
- :func:`record_plan_read` is what a route calls before it renders a plan: it records the
  signed-in person's read and returns once the entry is durable, or raises
  :class:`~web.accesslog.AccessLogUnavailable`, which :data:`EXCEPTION_HANDLERS` turn into
  a 503 page ("try again in a moment") that carries nothing of the plan.
- The live socket (``/plans/{id}/live``): its first load is a page read. The hook wraps the
  application so that the socket's ``accept`` goes out only after the read is recorded; if
  it cannot be, the handshake is refused (close code 1013, "try again later", on which
  htmx reconnects) and nothing of the plan is sent.

No route changes or removes an entry: the access log's routes are all ``GET`` and only read.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Literal

import anyio.to_thread
import msgspec
from litestar import Controller, MediaType, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.exceptions import NotAuthorizedException
from litestar.params import FromQuery, URLEncodedBody
from litestar.response import Stream
from litestar.status_codes import HTTP_422_UNPROCESSABLE_ENTITY, HTTP_503_SERVICE_UNAVAILABLE
from litestar.types import ControllerRouterHandler, ExceptionHandlersMap

from domain.inputs import has_forbidden_character, plain_text
from domain.values import FINLAND
from projections.plans import PlanViews
from web.accesslog import AccessEntry, AccessLog, AccessLogUnavailable, What, day_start
from web.accounts import (
    LINK_LIFETIME,
    NAME_LIMIT,
    AccountError,
    AccountKind,
    AccountStore,
    OrganisationType,
    normalise_username,
)
from web.domain_messages import VOCABULARIES
from web.errors import MESSAGES_TARGET, is_api_request, is_htmx_request
from web.i18n import N_, language_of, translations
from web.identity import Account, account_of, require_kind

if TYPE_CHECKING:
    from litestar import Litestar
    from litestar.types import ASGIApp, Message, Receive, Scope, Send

__all__ = (
    "ADMIN_ROUTE_HANDLERS",
    "EXCEPTION_HANDLERS",
    "AdminController",
    "access_log_lifespan",
    "provide_access_log",
    "record_plan_read",
)

logger = logging.getLogger(__name__)

LOG_UNAVAILABLE_TITLE: Final = N_("The plan cannot be shown right now")
LOG_UNAVAILABLE_MESSAGE: Final = N_(
    "Every reading of a plan is recorded in the access log, and the record cannot be written at "
    "the moment, so the plan is not shown. Please try again in a moment."
)
#: Seconds a refused reader is told to wait.
RETRY_AFTER_S: Final = 5
#: The live socket's path (``web.live.routes.LIVE_PATH``).
_LIVE_SOCKET = re.compile(r"^/plans/([^/]+)/live$")
#: Close code for a socket refused because its read could not be recorded: "try again later".
_TRY_AGAIN_LATER: Final = 1013

ORGANISATION_TYPES: Final = {
    OrganisationType.WELLBEING_SERVICES_COUNTY: N_("Wellbeing services county unit"),
    OrganisationType.KELA: N_("Kela (Social Insurance Institution)"),
    OrganisationType.EMPLOYMENT_SERVICES: N_("Employment services"),
    OrganisationType.THIRD_SECTOR: N_("Third sector organisation"),
    OrganisationType.PRIVATE_PROVIDER: N_("Private service provider"),
    OrganisationType.OTHER: N_("Other organisation"),
}
KINDS: Final = {"professional": N_("Professional"), "admin": N_("Administrator")}

ORGANISATION_ADDED: Final = N_("Organisation %(name)s saved.")
SERVICE_ADDED: Final = N_("%(name)s is in the service catalogue now.")
SERVICE_EXISTS: Final = N_("The catalogue has this service already.")
SERVICE_REMOVED: Final = N_("%(name)s was taken out of the service catalogue. Steps that name it keep the name.")
SERVICE_GONE: Final = N_("%(name)s is not in the service catalogue (any more).")
PERSON_ADDED: Final = N_("%(name)s added. Give them this first sign-in link (and only to them).")
BAD_IDENTIFIER: Final = N_(
    "The id may have 1–64 characters: lower-case letters a–z, digits and . _ - (for example kela-pirkanmaa)."
)
NAME_MISSING: Final = N_("Enter the name.")
NAME_TOO_LONG: Final = N_("At most 200 characters.")  # web.accounts.NAME_LIMIT
FORBIDDEN_CHARACTER: Final = N_("Remove the character that cannot be saved (an invisible control character).")
ORGANISATION_EXISTS: Final = N_("An organisation has this id already.")
BAD_TYPE: Final = N_("Choose the type of organisation.")
BAD_USERNAME: Final = N_(
    "The username may have 2–64 characters: lower-case letters a–z, digits and . _ @ -, "
    "starting with a letter or a digit."
)
USERNAME_TAKEN: Final = N_("This username is taken.")
NO_SUCH_ORGANISATION: Final = N_("Choose an organisation from the list.")
BAD_KIND: Final = N_("Choose professional or administrator.")
NOT_SAVED: Final = N_("This could not be saved. Check the information and try again.")
BAD_DAY: Final = N_("Write the days as on the calendar, or leave them empty.")
BAD_FORMAT: Final = N_("Choose CSV or JSONL for the export.")
PROBLEMS: Final = {
    "missing": N_("Entry %(seq)s is missing: it has been removed."),
    "link": N_("Entry %(seq)s does not follow the entry before it: an entry before it has been changed, removed or moved."),
    "changed": N_("Entry %(seq)s has been changed after it was written."),
    "anchor": N_("Entry %(seq)s does not match the noted hash: the log has been rewritten or cut short."),
}

_IDENTIFIER = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{1,63}$")


# ======================================================================== the access log


@asynccontextmanager
async def access_log_lifespan(app: Litestar) -> AsyncIterator[None]:
    """Lifespan hook for ``web.wiring``: open the access log, guard the live socket, close it."""
    opened: AccessLog | None = None
    if app.state.get("access_log") is None:
        opened = await anyio.to_thread.run_sync(AccessLog.open, app.state.store_settings)
        app.state.access_log = opened
    if not app.state.get("access_log_live_installed"):
        app.asgi_handler = _LiveReadLogging(app.asgi_handler, app.state)
        app.state.access_log_live_installed = True
    try:
        yield
    finally:
        if opened is not None:
            await anyio.to_thread.run_sync(opened.close)


def provide_access_log(state: State) -> AccessLog:
    """The ``access_log`` dependency: ``access_log: NamedDependency[AccessLog]``."""
    log = state.get("access_log")
    if log is None:
        raise AccessLogUnavailable("the access log is not open")
    return log


async def record_plan_read(
    connection: Any,
    plan_id: str,
    what: What,
    *,
    version: int | None = None,
    moment: str | None = None,
) -> None:
    """Record that the signed-in person reads ``plan_id``; return once the entry is durable.

    Call it after the access check and before rendering. ``moment`` is what the reader asked
    the history for (kept if it is a date and time, else left out). Raises
    :class:`AccessLogUnavailable` (answered with 503) when the entry cannot be written.
    """
    account = account_of(connection)
    if account is None:
        raise NotAuthorizedException()
    log = connection.app.state.get("access_log")
    if log is None:
        raise AccessLogUnavailable("the access log is not open")
    await log.arecord(_entry(account, plan_id, what, version=version, moment=_moment(moment)))


def _entry(account: Account, plan_id: str, what: What, **fields: Any) -> AccessEntry:
    return AccessEntry(
        plan_id=str(plan_id),
        what=what,
        person_id=account.person_id,
        person_name=account.name,
        organisation_id=account.organisation_id,
        organisation_name=account.organisation_name,
        **fields,
    )


def _moment(text: str | None) -> str | None:
    text = (text or "").strip()
    if not text or text.isdigit() or len(text) > 40:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=FINLAND)
    return moment.isoformat()


def access_log_unavailable(request: Request[Any, Any, Any], exc: AccessLogUnavailable) -> Response[Any]:
    """503, in the user's language, with nothing of the plan: the read could not be recorded."""
    logger.error("a read of %s was refused: %s", request.url.path, exc)
    language = language_of(request)
    _ = translations(language).gettext
    headers = {"retry-after": str(RETRY_AFTER_S)}
    if is_api_request(request):
        body = {"error": {"code": "access_log_unavailable", "message": _(LOG_UNAVAILABLE_MESSAGE), "fields": []}}
        return Response(body, status_code=HTTP_503_SERVICE_UNAVAILABLE, media_type=MediaType.JSON, headers=headers)
    fragment = is_htmx_request(request)
    if fragment:
        headers |= {"HX-Retarget": MESSAGES_TARGET, "HX-Reswap": "innerHTML"}
    context = {"request": request, "lang": language, "status_code": HTTP_503_SERVICE_UNAVAILABLE,
               "title": LOG_UNAVAILABLE_TITLE, "message": LOG_UNAVAILABLE_MESSAGE}
    template = "errors/_message.html" if fragment else "errors/error.html"
    try:
        content = request.app.template_engine.render(template, **context)  # type: ignore[union-attr]
    except Exception:  # still say something, and still nothing of the plan
        logger.exception("could not render %s", template)
        content = f"<!doctype html><title>503</title><p>{_(LOG_UNAVAILABLE_MESSAGE)}</p>"
    return Response(content, status_code=HTTP_503_SERVICE_UNAVAILABLE, media_type=MediaType.HTML, headers=headers)


EXCEPTION_HANDLERS: Final[ExceptionHandlersMap] = {AccessLogUnavailable: access_log_unavailable}
"""Added to the application's own (``web.wiring``): a read that could not be recorded is a 503."""


class _LiveReadLogging:
    """ASGI layer: a live socket of a plan is accepted only once its read is recorded.

    Outside the session and sign-in layers, so it sees the socket's messages after the
    route has checked who is asking and whether they may see the plan: the route's
    ``websocket.accept`` is held until the entry is durable. A refused or failed handshake
    sends nothing and records nothing.
    """

    def __init__(self, app: ASGIApp, state: State) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = _LIVE_SOCKET.match(scope["path"]) if scope["type"] == "websocket" else None
        if match is None:
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, self._recording_send(scope, match.group(1), send))

    def _recording_send(self, scope: Scope, plan_id: str, send: Send) -> Callable[[Message], Awaitable[None]]:
        refused = False

        async def recording_send(message: Message) -> None:
            nonlocal refused
            if refused:  # nothing goes out on a socket whose read was not recorded
                return
            if message["type"] == "websocket.accept":
                user = scope.get("user")
                log: AccessLog | None = self.state.get("access_log")
                try:
                    if not isinstance(user, Account) or log is None:
                        raise AccessLogUnavailable("no account or no access log")
                    await log.arecord(_entry(user, _plan_uuid(plan_id), "page", via="websocket"))
                except AccessLogUnavailable as error:
                    logger.error("a live socket of %s was refused: %s", scope["path"], error)
                    refused = True
                    await send({"type": "websocket.close", "code": _TRY_AGAIN_LATER, "reason": "try again later"})
                    return
            await send(message)

        return recording_send


def _plan_uuid(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return text


# ======================================================================== the pages


class OrganisationForm(msgspec.Struct):
    organisation_id: str = ""
    name: str = ""
    type: str = ""


class ServiceForm(msgspec.Struct):
    name: str = ""


class PersonForm(msgspec.Struct):
    username: str = ""
    name: str = ""
    organisation_id: str = ""
    profession: str = ""
    kind: str = "professional"


class AdminController(Controller):
    path = "/admin"
    guards = [require_kind("admin")]  # noqa: RUF012 - Litestar's layer attribute

    @get(name="admin:home")
    async def home(
        self, request: Request[Any, Any, Any], views: NamedDependency[PlanViews]
    ) -> Response[str]:
        return await _admin_page(request, views)

    @post("/organisations", name="admin:add-organisation", status_code=200)
    async def add_organisation(
        self,
        request: Request[Any, Any, Any],
        data: URLEncodedBody[OrganisationForm],
        views: NamedDependency[PlanViews],
    ) -> Response[str]:
        accounts: AccountStore = request.app.state.accounts
        form = {"organisation_id": data.organisation_id.strip(), "name": plain_text(data.name), "type": data.type}
        errors: dict[str, str] = {}
        if not _IDENTIFIER.match(form["organisation_id"]):
            errors["organisation_id"] = BAD_IDENTIFIER
        elif await anyio.to_thread.run_sync(accounts.organisation, form["organisation_id"]) is not None:
            errors["organisation_id"] = ORGANISATION_EXISTS  # adding is not renaming (the CLI renames)
        if problem := _name_problem(form["name"]):
            errors["name"] = problem
        if form["type"] not in {t.value for t in OrganisationType}:
            errors["type"] = BAD_TYPE
        if not errors:
            try:
                organisation = await anyio.to_thread.run_sync(
                    accounts.create_organisation, form["organisation_id"], form["name"], form["type"]
                )
            except AccountError as error:
                logger.info("organisation not added: %s", error)
                errors["form"] = NOT_SAVED
            else:
                if organisation is not None:
                    return await _admin_page(request, views, notice=(ORGANISATION_ADDED, {"name": organisation.name}))
                errors["organisation_id"] = ORGANISATION_EXISTS  # added by someone else a moment ago
        return await _admin_page(request, views, organisation_form=form, organisation_errors=errors,
                                 status_code=HTTP_422_UNPROCESSABLE_ENTITY)

    @post("/services", name="admin:add-service", status_code=200)
    async def add_service(
        self,
        request: Request[Any, Any, Any],
        data: URLEncodedBody[ServiceForm],
        views: NamedDependency[PlanViews],
    ) -> Response[str]:
        accounts: AccountStore = request.app.state.accounts
        form = {"name": plain_text(data.name)}
        errors: dict[str, str] = {}
        if problem := _name_problem(form["name"]):
            errors["name"] = problem
        if not errors:
            try:
                added = await anyio.to_thread.run_sync(accounts.add_service, form["name"])
            except AccountError as error:
                logger.info("service not added: %s", error)
                errors["name"] = NOT_SAVED
            else:
                if added:
                    return await _admin_page(request, views, notice=(SERVICE_ADDED, {"name": form["name"]}))
                errors["name"] = SERVICE_EXISTS
        return await _admin_page(request, views, service_form=form, service_errors=errors,
                                 status_code=HTTP_422_UNPROCESSABLE_ENTITY)

    @post("/services/remove", name="admin:remove-service", status_code=200)
    async def remove_service(
        self,
        request: Request[Any, Any, Any],
        data: URLEncodedBody[ServiceForm],
        views: NamedDependency[PlanViews],
    ) -> Response[str]:
        accounts: AccountStore = request.app.state.accounts
        removed = await anyio.to_thread.run_sync(accounts.remove_service, data.name)
        notice = SERVICE_REMOVED if removed else SERVICE_GONE
        return await _admin_page(request, views, notice=(notice, {"name": data.name}))

    @post("/people", name="admin:add-person", status_code=200)
    async def add_person(
        self,
        request: Request[Any, Any, Any],
        data: URLEncodedBody[PersonForm],
        views: NamedDependency[PlanViews],
    ) -> Response[str]:
        accounts: AccountStore = request.app.state.accounts
        form = {"username": normalise_username(data.username)[:100], "name": plain_text(data.name),
                "organisation_id": data.organisation_id.strip(), "profession": plain_text(data.profession),
                "kind": data.kind}
        errors: dict[str, str] = {}
        if not _USERNAME.match(form["username"]):
            errors["username"] = BAD_USERNAME
        elif await anyio.to_thread.run_sync(accounts.account_by_username, form["username"]) is not None:
            errors["username"] = USERNAME_TAKEN
        for field, required in (("name", True), ("profession", False)):
            if problem := _name_problem(form[field], required=required):
                errors[field] = problem
        if await anyio.to_thread.run_sync(accounts.organisation, form["organisation_id"]) is None:
            errors["organisation_id"] = NO_SUCH_ORGANISATION
        if form["kind"] not in KINDS:
            errors["kind"] = BAD_KIND
        if not errors:
            try:
                account, token = await anyio.to_thread.run_sync(lambda: _add_person(accounts, form))
            except AccountError as error:
                logger.info("person not added: %s", error)
                errors["form"] = USERNAME_TAKEN if "taken" in str(error) else NOT_SAVED
            else:
                link = f"{_base_url(request)}/signin/link/{token}"
                return await _admin_page(
                    request, views, notice=(PERSON_ADDED, {"name": account.name}),
                    new_link={"url": link, "hours": LINK_LIFETIME // 3600, "name": account.name},
                )
        return await _admin_page(request, views, person_form=form, person_errors=errors,
                                 status_code=HTTP_422_UNPROCESSABLE_ENTITY)

    @get("/access-log", name="admin:access-log")
    async def access_log_page(
        self,
        request: Request[Any, Any, Any],
        access_log: NamedDependency[AccessLog],
        since: FromQuery[str] = "",
        until: FromQuery[str] = "",
    ) -> Response[str]:
        report = await anyio.to_thread.run_sync(access_log.verify)
        count = await anyio.to_thread.run_sync(access_log.count)
        _ = translations(language_of(request)).gettext
        problem = _(PROBLEMS[report.problem]) % {"seq": report.broken_seq} if report.problem else ""
        context = {"request": request, "report": report, "count": count, "problem": problem,
                   "since": since[:10], "until": until[:10], "error": ""}
        return _render(request, "admin/access_log.html", context)

    @get("/access-log/export", name="admin:access-log-export")
    async def export_access_log(
        self,
        request: Request[Any, Any, Any],
        access_log: NamedDependency[AccessLog],
        format: FromQuery[str] = "csv",  # noqa: A002
        since: FromQuery[str] = "",
        until: FromQuery[str] = "",
    ) -> Response[Any]:
        """The entries as a file (every field, hashes too). A GET: it changes nothing."""
        kind: Literal["csv", "jsonl"] = "jsonl" if format == "jsonl" else "csv"
        error = "" if format in ("csv", "jsonl") else BAD_FORMAT
        try:
            start = day_start(since)
            end = day_start(until, next_day=True)
        except ValueError:  # (a day at the calendar's ends too: it has no moment in UTC)
            error = BAD_DAY
        if error:
            report = await anyio.to_thread.run_sync(access_log.verify)
            count = await anyio.to_thread.run_sync(access_log.count)
            context = {"request": request, "report": report, "count": count, "problem": "",
                       "since": since[:10], "until": until[:10], "error": error}
            return _render(request, "admin/access_log.html", context, HTTP_422_UNPROCESSABLE_ENTITY)
        account = account_of(request)
        logger.info("access log exported by %s (%s to %s)", account.person_id if account else "?", since, until)
        stamp = datetime.now(FINLAND).strftime("%Y%m%d-%H%M%S")
        return Stream(
            _lines(access_log, start, end, kind),
            media_type="application/x-ndjson" if kind == "jsonl" else "text/csv",  # Litestar adds the charset
            headers={
                "content-disposition": f'attachment; filename="polku-access-log-{stamp}.{kind}"',
                "cache-control": "no-store",
                "x-content-type-options": "nosniff",
            },
        )


ADMIN_ROUTE_HANDLERS: Final[tuple[ControllerRouterHandler, ...]] = (AdminController,)


# ------------------------------------------------------------------------- helpers


def _name_problem(text: str, *, required: bool = True) -> str | None:
    """What is wrong with a name (or a profession) typed into a form of these pages, if anything."""
    if not text:
        return NAME_MISSING if required else None
    if len(text) > NAME_LIMIT:
        return NAME_TOO_LONG
    if has_forbidden_character(text):
        return FORBIDDEN_CHARACTER
    return None


def _add_person(accounts: AccountStore, form: dict[str, str]) -> tuple[Account, str]:
    account = accounts.add_account(
        form["username"], name=form["name"], kind=AccountKind(form["kind"]),
        organisation_id=form["organisation_id"], profession=form["profession"],
    )
    return account, accounts.issue_link(form["username"])


def _base_url(request: Request[Any, Any, Any]) -> str:
    configured = os.environ.get("POLKU_BASE_URL", "").strip()
    return (configured or str(request.base_url)).rstrip("/")


def _lines(log: AccessLog, since: datetime | None, until: datetime | None, kind: Literal["csv", "jsonl"]) -> Iterator[bytes]:
    """The export, in chunks of about 64 kB (read in a worker thread by the response)."""
    chunk: list[str] = []
    size = 0
    for line in log.export(since, until, format=kind):
        chunk.append(line)
        size += len(line)
        if size >= 65536:
            yield "".join(chunk).encode()
            chunk, size = [], 0
    if chunk:
        yield "".join(chunk).encode()


async def _admin_page(
    request: Request[Any, Any, Any],
    views: PlanViews,
    *,
    notice: tuple[str, dict[str, Any]] | None = None,
    new_link: dict[str, Any] | None = None,
    organisation_form: dict[str, str] | None = None,
    organisation_errors: dict[str, str] | None = None,
    person_form: dict[str, str] | None = None,
    person_errors: dict[str, str] | None = None,
    service_form: dict[str, str] | None = None,
    service_errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response[str]:
    accounts: AccountStore = request.app.state.accounts
    organisations, (people, clients), services = await anyio.to_thread.run_sync(
        lambda: (accounts.organisations(), _people(accounts), accounts.services())
    )
    statistics = await anyio.to_thread.run_sync(_statistics, views)
    _ = translations(language_of(request)).gettext
    context = {
        "request": request,
        "organisations": organisations,
        "organisation_types": ORGANISATION_TYPES,
        "kinds": KINDS,
        "people": people,
        "client_accounts": clients,
        "statistics": statistics,
        "vocabularies": VOCABULARIES,
        "notice": _(notice[0]) % notice[1] if notice else "",
        "new_link": new_link,
        "organisation_form": organisation_form or {"organisation_id": "", "name": "", "type": ""},
        "organisation_errors": organisation_errors or {},
        "person_form": person_form or {"username": "", "name": "", "organisation_id": "", "profession": "",
                                       "kind": "professional"},
        "person_errors": person_errors or {},
        "services": services,
        "service_form": service_form or {"name": ""},
        "service_errors": service_errors or {},
    }
    return _render(request, "admin/index.html", context, status_code)


def _people(accounts: AccountStore) -> tuple[list[tuple[str, Account]], int]:
    """(username, account) of the professionals and administrators; how many client accounts."""
    people, clients = [], 0
    for username in accounts.usernames():
        account = accounts.account_by_username(username)
        if account is None:
            continue
        if account.is_client:
            clients += 1
        else:
            people.append((username, account))
    people.sort(key=lambda item: (item[1].organisation_name, item[1].name))
    return people, clients


class Statistics(msgspec.Struct, kw_only=True):
    """Counts only: no names, no ids."""

    plans: int = 0
    open_by_segment: dict[str, int] = msgspec.field(default_factory=dict)
    closed_by_segment: dict[str, int] = msgspec.field(default_factory=dict)
    closed_by_outcome: dict[str, int] = msgspec.field(default_factory=dict)
    needs_by_category: dict[str, int] = msgspec.field(default_factory=dict)
    open_needs_by_category: dict[str, int] = msgspec.field(default_factory=dict)


def _statistics(views: PlanViews) -> Statistics:
    """Counts over every plan the read model holds (erased plans are gone from it).

    Read from the read model's summary columns and rows (``PlanViewTables.statistics``):
    no plan is decoded.
    """
    counted = views.store.statistics()
    open_segments: Counter[str] = Counter()
    closed_segments: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    for count in counted.plans:
        if count.is_closed:
            closed_segments[count.segment] += count.plans
            outcomes[count.closing_outcome or ""] += count.plans
        else:
            open_segments[count.segment] += count.plans
    return Statistics(
        plans=sum(count.plans for count in counted.plans),
        open_by_segment=dict(open_segments),
        closed_by_segment=dict(closed_segments),
        closed_by_outcome=dict(outcomes),
        needs_by_category={count.category: count.needs for count in counted.needs},
        open_needs_by_category={count.category: count.open_needs for count in counted.needs},
    )


def _render(request: Request[Any, Any, Any], template: str, context: dict[str, Any], status_code: int = 200) -> Response[str]:
    content = request.app.template_engine.render(template, **context)
    return Response(content, media_type=MediaType.HTML, status_code=status_code)

