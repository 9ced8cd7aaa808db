"""The access matrix: every plan route x every role x the state of the consent, on a real server.

**The routes** come from the application's own route table: every route under ``/plans``
is expanded into concrete requests by :data:`EXPANSIONS` (the page, the history, the
client's contact details, every item of every kind as shown, and every form of
``web.controllers.plans.ACTIONS`` opened and posted, and the live socket's handshake). A
new form in ``ACTIONS`` is covered by itself; a route under ``/plans`` that no expansion
knows fails :func:`test_every_plan_route_is_in_the_matrix`.

**The roles** are people of the demo (usernames are person ids) and a few more accounts,
each standing in one way to the plan of the scenario:

=========================  =========================================================
``expert``                 Aino (the county): opened the plan, its named expert
``counterpart``            Pekka (Kela): named counterpart (Kela's consent is the one that varies)
``member``                 Timo (employment services): a network member
``expert_colleague``       Sanna: Aino's colleague; the county's consent is always valid
``counterpart_colleague``  Riikka: Pekka's colleague at Kela: with consent only when it is valid
``outsider``               Outi (third sector): no part in the plan
``client``                 the client of this plan (a client account)
``other_client``           the client of another plan, guessing this plan's id
``admin``                  an administrator of the region
``anonymous``              nobody signed in
=========================  =========================================================

**The consent states** are three plans built alike, differing in Kela's consent: ``valid``
(since yesterday), ``future`` (from next month: Pekka was added and named on that day, so
he is the counterpart but his colleagues have no consent yet) and ``withdrawn`` (Pekka left
the network with it). The ``valid`` plan also has a non-disclosure order on the client's
contact details.

**Expected answers** follow from ``domain.access``: each role's relation to the plan is
first checked against what the role means (:data:`RELATIONS`); then nobody signed in is
sent to sign in, OUTSIDER and ADMIN get 404 (never 403: plan ids cannot be probed), a
relation that ``may`` not view gets 403, a form whose command the relation may not give
(``may_give``) or that would show contact details a non-disclosure order hides
(``may_see_client_contact``) gets 403, and the rest get the route's own answer. A refused
request records nothing (the event store's position is unchanged: the posts of refused
roles carry a valid command, so a leak would show) and no refused body holds the plan's
personal data; no body at all holds the contact details for a role the order hides them
from. An allowed post carries an invalid command id, so it reaches the domain (422) and
records nothing either: one data set serves the whole matrix.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as sync_connect

from domain.access import Action as Permission
from domain.access import Relation, may, may_give, may_see_client_contact, relation_to
from domain.application import PlanService
from domain.demo import PEOPLE, load_demo
from domain.plan import ClientPlan
from tests.web.conftest import TEST_SECRET_KEY, running
from tests.web.identity_fixtures import FAST_HASHER, add_account, sign_in, with_identity
from web.accounts import AccountStore
from web.controllers.plans import ACTIONS, KINDS
from web.live.access import today_in_finland
from web.settings import Settings
from web.wiring import build_app, store_settings_for

ORGANISATION_TYPES = {
    "pirha-toike": "wellbeing_services_county",
    "kela-pirkanmaa": "kela",
    "tampere-tyollisyys": "employment_services",
    "vire-ry": "third_sector",
    "kuntoutus-oy": "private_provider",
}
STATES = ("valid", "future", "withdrawn")
ROLES = (
    "expert", "counterpart", "member", "expert_colleague", "counterpart_colleague", "outsider",
    "client", "other_client", "admin", "anonymous",
)
PROFESSIONALS = {
    "expert": "aino", "counterpart": "pekka", "member": "timo", "expert_colleague": "sanna",
    "counterpart_colleague": "riikka", "outsider": "outi",
}
E, CP, M, CO, CL, AD, OUT = (Relation.EXPERT, Relation.COUNTERPART, Relation.MEMBER, Relation.COLLEAGUE,
                             Relation.CLIENT, Relation.ADMIN, Relation.OUTSIDER)
_SAME = {"expert": E, "member": M, "expert_colleague": CO, "outsider": OUT, "client": CL, "other_client": OUT,
         "admin": AD, "anonymous": None}
#: What each role is, per consent state (checked against ``relation_to`` before any request).
RELATIONS: dict[str, dict[str, Relation | None]] = {
    "valid": {**_SAME, "counterpart": CP, "counterpart_colleague": CO},
    "future": {**_SAME, "counterpart": CP, "counterpart_colleague": OUT},
    "withdrawn": {**_SAME, "counterpart": OUT, "counterpart_colleague": OUT},
}
NOT_A_COMMAND_ID = " not a command id "
"""What an allowed post sends: the domain refuses it (422) before anything is recorded."""


# ------------------------------------------------------------------------ the plans


@dataclass
class ScenarioPlan:
    """One plan of a scenario: its id, an item of each kind, and its personal data."""

    plan_id: str
    items: dict[str, str]
    """An item id per kind segment (``needs``...), ``details`` for the client."""
    personal: list[str]
    """Texts of the plan that are personal data (the client's name, needs, notes...)."""
    contact: str


def build_plan(
    service: PlanService, label: str, *, kela: str = "valid", non_disclosure: bool = False
) -> ScenarioPlan:
    """A plan opened by Aino, Pekka (Kela) the counterpart, Timo a member, with one of everything.

    ``kela`` is the state of Kela's consent: ``valid`` (since yesterday), ``future`` (from
    next month; Pekka is added and named on that day: the service's clock is moved there
    for it) or ``withdrawn`` (after everything else: Pekka leaves the network).
    """
    aino, pekka, timo = (PEOPLE[name][0] for name in ("aino", "pekka", "timo"))
    today = today_in_finland()
    yesterday = today - timedelta(days=1)
    marker = f"{label}-{uuid.uuid4().hex[:6]}"
    client_name = f"Asiakas {marker}"
    texts = {
        "need": f"Tarve {marker}", "goal": f"Tavoite {marker}", "step": f"Askel {marker}",
        "note": f"Muistiinpano {marker}", "handover": f"Siirto {marker}",
    }
    contact = f"Piilotie {marker}, 040 1234 567"
    opened = service.open_plan(by=aino, command_id=f"open-{marker}", client_name=client_name, segment="unemployed",
                               language="fi", referring_party="self_referral", expert_profession="kuntoutusohjaaja")
    plan_id = opened.plan_id

    def do(command: str, by: Any = aino, **fields: Any) -> str | None:
        return getattr(service, command)(plan_id, by=by, command_id=str(uuid.uuid4()), **fields).item_id

    def plan() -> ClientPlan:
        return service.get_plan(plan_id)

    def join(person: Any, valid_from: date) -> tuple[str, str]:
        consent_id = do("give_consent", organisation_id=person.organisation_id,
                        organisation_name=person.organisation_name, valid_from=valid_from)
        member_id = do("add_member", person_id=person.person_id, name=person.name, profession="asiantuntija",
                       organisation_id=person.organisation_id, organisation_name=person.organisation_name)
        assert consent_id and member_id
        return consent_id, member_id

    _, timo_id = join(timo, yesterday)
    original_clock = service.clock
    if kela == "future":
        service.clock = lambda: original_clock() + timedelta(days=31)
    try:
        kela_consent, pekka_id = join(pekka, today + timedelta(days=30) if kela == "future" else yesterday)
        do("name_counterpart", member_id=pekka_id, seen_revision=plan().responsibility.revision)
        handover = do("propose_handover", note=texts["handover"])
    finally:
        service.clock = original_clock
    need = do("record_need", category="health", description=texts["need"], financial="")
    goal = do("set_goal", title=texts["goal"], need_ids=[need], target_date=today + timedelta(days=90))
    step = do("plan_step", title=texts["step"], need_id=need, responsible_member_id=plan().responsibility.expert_id,
              planned_start=today, planned_end=today + timedelta(days=30), service="")
    do("record_measure", kind="work_ability_score", value=5, measured_on=today)
    do("add_note", text=texts["note"])
    do("record_client_contact", seen_revision=plan().client.revision, contact=contact)
    if non_disclosure:
        do("set_non_disclosure", seen_revision=plan().client.revision, active=True)
    if kela == "withdrawn":
        do("withdraw_consent", consent_id=kela_consent, seen_revision=plan().consents[kela_consent].revision)
    items = {
        "client": "details", "needs": need, "goals": goal, "members": timo_id, "consents": kela_consent,
        "handovers": handover, "steps": step,
    }
    return ScenarioPlan(plan_id=plan_id, items={k: str(v) for k, v in items.items()},
                        personal=[client_name, *texts.values()], contact=contact)


# ------------------------------------------------------------------------ the site


@dataclass
class AccessSite:
    base_url: str
    app: Litestar
    accounts: AccountStore
    plans: dict[str, ScenarioPlan]
    """By consent state; ``other`` is a demo plan, the other client's."""
    usernames: dict[tuple[str, str], str | None] = field(default_factory=dict)
    """(state, role) -> username (None: anonymous)."""
    _clients: dict[str | None, httpx.Client] = field(default_factory=dict)
    _plans: dict[str, ClientPlan] = field(default_factory=dict)

    @property
    def service(self) -> PlanService:
        return self.app.state.plans

    @property
    def ws_url(self) -> str:
        return "ws" + self.base_url.removeprefix("http")

    def event_count(self) -> int:
        return self.service.recorder.max_notification_id() or 0

    def wait_for_views(self) -> None:
        assert self.app.state.views.wait_for(self.event_count(), timeout=10)

    def read_model(self, plan_id: str) -> ClientPlan:
        """The plan as the read model has it (read once: the matrix changes nothing)."""
        if plan_id not in self._plans:
            plan = self.app.state.views.plan(plan_id)
            assert plan is not None
            self._plans[plan_id] = plan
        return self._plans[plan_id]

    def client(self, username: str | None) -> httpx.Client:
        """A browser of ``username`` (signed in once, kept for the module), or of nobody."""
        if username not in self._clients:
            http = httpx.Client(base_url=self.base_url, follow_redirects=False, timeout=15,
                                headers={"accept-language": "fi"})
            if username is None:
                http.get("/")  # the CSRF cookie
            else:
                sign_in(http, self.base_url, username)
            self._clients[username] = http
        return self._clients[username]

    def account(self, username: str) -> Any:
        account = self.accounts.account_by_username(username)
        assert account is not None, username
        return account

    def close(self) -> None:
        for http in self._clients.values():
            http.close()


def add_people(accounts: AccountStore) -> None:
    """The 12 demo professionals (usernames = person ids) and an administrator."""
    for actor, profession in PEOPLE.values():
        add_account(accounts, actor.person_id, name=actor.name, profession=profession,
                    organisation=(actor.organisation_id, actor.organisation_name,
                                  ORGANISATION_TYPES[actor.organisation_id]))
    add_account(accounts, "admin.alue", name="Alue Admin", kind="admin",
                organisation=("pirha-toike", PEOPLE["aino"][0].organisation_name, "wellbeing_services_county"))


def add_client(accounts: AccountStore, username: str, plan_id: str, name: str) -> None:
    add_account(accounts, username, name=name, kind="client", plan_id=plan_id, organisation=None)


@contextmanager
def access_site(data: Path, build: Callable[[PlanService], dict[str, ScenarioPlan]]) -> Iterator[AccessSite]:
    """The whole application over ``data`` with the demo, the plans ``build`` makes and the people."""
    settings = Settings(secret_key=TEST_SECRET_KEY, data_dir=data)
    store = store_settings_for(settings, environ={})
    service = PlanService(store)
    try:
        demo = load_demo(service)
        plans = build(service)
        plans["other"] = ScenarioPlan(plan_id=demo[0], items={}, personal=[], contact="")
    finally:
        service.close()
    accounts = AccountStore.sqlite(data / "test-accounts.sqlite3", hasher=FAST_HASHER)
    add_people(accounts)
    add_client(accounts, "asiakas.muu", plans["other"].plan_id, "Matti Esimerkki")
    for state, plan in plans.items():
        if state != "other":
            add_client(accounts, f"asiakas.{state}", plan.plan_id, plan.personal[0])
    app = with_identity(build_app(settings, store), accounts)
    try:
        with running(app) as base_url:
            site = AccessSite(base_url=base_url, app=app, accounts=accounts, plans=plans)
            for state in plans:
                for role in ROLES:
                    site.usernames[(state, role)] = username_of(state, role)
            site.wait_for_views()
            try:
                yield site
            finally:
                site.close()
    finally:
        accounts.close()


def username_of(state: str, role: str) -> str | None:
    if role in PROFESSIONALS:
        return PEOPLE[PROFESSIONALS[role]][0].person_id
    return {"client": f"asiakas.{state}", "other_client": "asiakas.muu", "admin": "admin.alue"}.get(role)


def matrix_plans(service: PlanService) -> dict[str, ScenarioPlan]:
    return {state: build_plan(service, state, kela=state, non_disclosure=state == "valid") for state in STATES}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AccessSite]:
    with access_site(tmp_path_factory.mktemp("access-matrix"), matrix_plans) as running_site:
        yield running_site


# ------------------------------------------------------------------------ the requests


@dataclass(frozen=True)
class Probe:
    """One concrete request of a plan route, with what it needs and gives when allowed."""

    route: str
    """The route's path in the app's route table, and the method (``WS`` for a websocket)."""
    method: str
    path: str
    """The path with ``{plan}`` for the plan's id and ``{<kind>}`` for an item of that kind."""
    permission: Permission = Permission.VIEW_PLAN
    command: str | None = None
    shows_contact: bool = False
    htmx: bool = False
    ok: int = 200
    """The status when access is granted (422 for a post: it carries no valid command id)."""
    form: tuple[str, str] | None = None

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}"


PAGE = "/plans/{plan_id:str}"
HISTORY = "/plans/{plan_id:str}/history"
CONTACT = "/plans/{plan_id:str}/contact"
ITEM = "/plans/{plan_id:str}/{kind:str}/{item_id:str}"
FORM = "/plans/{plan_id:str}/{kind:str}/{item_id:str}/{form:str}"
LIVE = "/plans/{plan_id:str}/live"

ITEMLESS_KINDS = {"measures", "notes"}
"""Kinds whose items are not shown one by one (only their "add" block is)."""


def _item_of(kind: str, form: str | None = None) -> str:
    if form is not None:
        return "new" if form in ("add", "propose") else "{%s}" % kind
    return "{%s}" % kind


def _item_probes(method: str) -> list[Probe]:
    probes = []
    for kind in KINDS:
        ids = ["new"] if kind in ITEMLESS_KINDS else (["{client}"] if kind == "client" else ["new", _item_of(kind)])
        for item in ids:
            probes.append(Probe(ITEM, method, f"/plans/{{plan}}/{kind}/{item}", htmx=True))
    return probes


def _form_probes(method: str) -> list[Probe]:
    probes = []
    for (kind, form), action in ACTIONS.items():
        path = f"/plans/{{plan}}/{kind}/{_item_of(kind, form)}/{form}"
        probes.append(Probe(FORM, method, path, command=action.command, shows_contact=action.shows_contact,
                            htmx=True, ok=200 if method == "GET" else 422, form=(kind, form)))
    return probes


#: Every route under /plans (path, method) -> its concrete requests.
EXPANSIONS: dict[tuple[str, str], Callable[[str], list[Probe]]] = {
    (PAGE, "GET"): lambda m: [Probe(PAGE, m, "/plans/{plan}")],
    (HISTORY, "GET"): lambda m: [Probe(HISTORY, m, "/plans/{plan}/history", permission=Permission.VIEW_HISTORY),
                                 Probe(HISTORY, m, "/plans/{plan}/history?at=1", permission=Permission.VIEW_HISTORY)],
    (CONTACT, "GET"): lambda m: [Probe(CONTACT, m, "/plans/{plan}/contact", htmx=True)],
    (ITEM, "GET"): _item_probes,
    (FORM, "GET"): _form_probes,
    (FORM, "POST"): _form_probes,
    (LIVE, "WS"): lambda m: [Probe(LIVE, m, "/plans/{plan}/live")],
}
#: Methods the framework answers by itself, the same for any id (see the test of it).
AUTOMATIC_METHODS = {"OPTIONS", "HEAD"}


def plan_routes(app: Litestar) -> set[tuple[str, str]]:
    """(path, method) of every route under /plans in ``app``'s route table."""
    found = set()
    for route in app.routes:
        if not (route.path == "/plans" or route.path.startswith("/plans/")):
            continue
        methods = getattr(route, "methods", None) or {"WS"}
        found |= {(route.path, method) for method in methods if method not in AUTOMATIC_METHODS}
    return found


def _route_table() -> set[tuple[str, str]]:
    with tempfile.TemporaryDirectory() as data:
        return plan_routes(build_app(Settings(secret_key=TEST_SECRET_KEY, data_dir=Path(data))))


ROUTES = _route_table()
PROBES = [probe for key in sorted(ROUTES) if key in EXPANSIONS for probe in EXPANSIONS[key](key[1])]


# ------------------------------------------------------------------------ valid posts


def _valid_body(plan: ClientPlan, items: dict[str, str], kind: str, form: str) -> dict[str, Any]:
    """A post that the plan service would accept from the named expert (for the refused roles)."""
    today = today_in_finland()
    item_id = items.get(kind)
    revision: dict[str, Callable[[], int]] = {
        "client": lambda: plan.client.revision,
        "needs": lambda: plan.needs[items["needs"]].revision,
        "goals": lambda: plan.goals[items["goals"]].revision,
        "members": lambda: plan.members[items["members"]].revision if items["members"] in plan.members else 0,
        "consents": lambda: plan.consents[items["consents"]].revision,
        "steps": lambda: plan.steps[items["steps"]].revision,
    }
    need, later = items["needs"], (today + timedelta(days=60)).isoformat()
    bodies: dict[tuple[str, str], dict[str, Any]] = {
        ("client", "edit"): {"client_name": "Uusi Nimi", "segment": "employed", "language": "sv",
                             "referring_party": "self_referral"},
        ("client", "contact"): {"contact": "Uusi osoite 1"},
        ("client", "nondisclosure"): {"active": "false" if plan.client.non_disclosure else "true"},
        ("client", "close"): {"outcome": "work", "note": ""},
        ("client", "reopen"): {"reason": "Jatkuu"},
        ("needs", "add"): {"category": "health", "description": "Uusi tarve", "financial": ""},
        ("needs", "edit"): {"category": "health", "description": "Muutettu", "financial": "", "status": "open"},
        ("goals", "add"): {"title": "Uusi tavoite", "need_ids": [need], "target_date": later},
        ("goals", "revise"): {"title": "Muutettu", "need_ids": [need], "target_date": later},
        ("goals", "settle"): {"status": "achieved", "note": ""},
        ("members", "add"): {"person_id": "hanna.jarvinen", "name": "Hanna Järvinen", "profession": "asiantuntija",
                             "organisation_id": "tampere-tyollisyys", "contact": "", "part": ""},
        ("members", "edit"): {"profession": "valmentaja", "contact": "", "part": ""},
        ("members", "remove"): {},
        ("members", "counterpart"): {},
        ("consents", "add"): {"organisation_id": "vire-ry", "valid_from": today.isoformat()},
        ("consents", "withdraw"): {},
        ("handovers", "propose"): {"note": "Siirto"},
        ("handovers", "accept"): {"note": ""},
        ("handovers", "decline"): {"note": ""},
        ("handovers", "withdraw"): {"note": ""},
        ("steps", "add"): {"title": "Uusi askel", "need_id": need, "responsible_member_id": "",
                           "planned_start": today.isoformat(), "planned_end": later, "service": ""},
        ("steps", "edit"): {"title": "Muutettu", "need_id": need, "responsible_member_id": "", "service": ""},
        ("steps", "reschedule"): {"planned_start": today.isoformat(), "planned_end": later, "reason": "Jono"},
        ("steps", "progress"): {"status": "started", "on": today.isoformat(), "outcome": ""},
        ("steps", "outcome"): {"outcome": "Hyvä"},
        ("measures", "add"): {"kind": "work_ability_score", "value": "6", "measured_on": today.isoformat()},
        ("notes", "add"): {"text": "Uusi muistiinpano", "visibility": "professionals"},
    }
    assert (kind, form) in bodies, f"the matrix needs a valid post for the new form {kind}/{form}: add it here"
    body = dict(bodies[(kind, form)])
    if ACTIONS[(kind, form)].revision is not None:
        body["seen_revision"] = str(plan.responsibility.revision if form == "counterpart" else revision[kind]())
    assert item_id is not None or form in ("add", "propose")
    return body


# ------------------------------------------------------------------------ the expectations


def expected_status(probe: Probe, relation: Relation | None, plan: ClientPlan) -> int:
    """The answer ``domain.access`` calls for."""
    if relation is None:
        return 401 if probe.htmx else 303  # the sign-in wall
    if relation in (Relation.OUTSIDER, Relation.ADMIN):
        return 404
    if not may(relation, probe.permission):
        return 403
    if probe.command is not None:
        if not may_give(relation, probe.command):
            return 403
        if probe.shows_contact and not may_see_client_contact(plan, relation):
            return 403
    return probe.ok


def relation_of(site: AccessSite, state: str, role: str, plan: ClientPlan) -> Relation | None:
    username = site.usernames[(state, role)]
    if username is None:
        return None
    account = site.account(username)
    return relation_to(plan, kind=account.kind, person_id=account.person_id,
                       organisation_id=account.organisation_id or "", client_plan_id=account.plan_id,
                       today=today_in_finland())


def concrete(probe: Probe, scenario: ScenarioPlan) -> str:
    return probe.path.format(plan=scenario.plan_id, **scenario.items)


# ------------------------------------------------------------------------ the tests


def test_every_plan_route_is_in_the_matrix(site: AccessSite) -> None:
    running_routes = plan_routes(site.app)
    assert running_routes == ROUTES, "the running app's routes differ from those the matrix was made from"
    missing = sorted(ROUTES - set(EXPANSIONS))
    assert not missing, f"routes under /plans that the access matrix does not cover: {missing}"
    assert not set(EXPANSIONS) - ROUTES, "the matrix expands routes the app no longer has: tidy EXPANSIONS"
    assert {probe.form for probe in PROBES if probe.method == "POST"} == set(ACTIONS)
    assert ACTIONS[("client", "contact")].shows_contact  # the form that shows the contact details says so


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("state", STATES)
def test_each_role_is_what_it_says(site: AccessSite, state: str, role: str) -> None:
    plan = site.read_model(site.plans[state].plan_id)
    assert relation_of(site, state, role, plan) == RELATIONS[state][role]


@pytest.mark.parametrize("probe", PROBES, ids=lambda probe: probe.id)
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("state", STATES)
def test_access_matrix(site: AccessSite, state: str, role: str, probe: Probe) -> None:
    scenario = site.plans[state]
    plan = site.read_model(scenario.plan_id)
    relation = relation_of(site, state, role, plan)
    assert relation == RELATIONS[state][role]
    username = site.usernames[(state, role)]
    path = concrete(probe, scenario)
    if probe.method == "WS":
        check_socket(site, username, path, allowed=relation is not None and may(relation, Permission.VIEW_PLAN))
        return
    expected = expected_status(probe, relation, plan)
    http = site.client(username)
    headers = {"hx-request": "true"} if probe.htmx else {}
    token = http.cookies.get("csrftoken", "")
    before = site.event_count()
    if probe.method == "GET":
        response = http.get(path, headers=headers)
    else:
        assert probe.form is not None
        body = _valid_body(plan, scenario.items, *probe.form)
        body["command_id"] = NOT_A_COMMAND_ID if expected == probe.ok else str(uuid.uuid4())
        response = http.post(path, data={**body, "_csrf_token": token}, headers=headers)
    assert response.status_code == expected, f"{role} ({relation}) {probe.method} {path}: {response.text[:600]}"
    assert site.event_count() == before, "a refused (or invalid) request recorded something"
    body_text = response.text
    if expected != probe.ok:
        own_name = site.account(username).name if username else ""
        texts = [*scenario.personal, scenario.contact, *(m.name for m in plan.members.values())]
        leaked = [text for text in texts if text in body_text and text != own_name]  # one's own name is shown
        assert not leaked, f"a refused answer holds personal data: {leaked}"
    if relation is None or not may_see_client_contact(plan, relation):
        assert scenario.contact not in body_text
    elif probe.route == PAGE and expected == 200:
        assert scenario.contact in body_text  # those who may see it, do


def check_socket(site: AccessSite, username: str | None, path: str, *, allowed: bool) -> None:
    headers = {}
    if username is not None:
        cookies = site.client(username).cookies
        headers["Cookie"] = f"polku_session={cookies['polku_session']}"
    try:
        with sync_connect(site.ws_url + path, origin=site.base_url, additional_headers=headers,  # type: ignore[arg-type]
                          open_timeout=5, close_timeout=1):
            pass
    except InvalidStatus as refused:
        assert not allowed, f"{username} was refused the live socket ({refused.response.status_code})"
        assert refused.response.status_code in (401, 403)
        return
    assert allowed, f"{username} opened the live socket of a plan they may not see"


def test_the_framework_answers_options_alike_for_any_plan_id(site: AccessSite) -> None:
    http = site.client(site.usernames[("valid", "outsider")])
    real = http.options(f"/plans/{site.plans['valid'].plan_id}")
    made_up = http.options(f"/plans/{uuid.uuid4()}")
    assert (real.status_code, real.headers.get("allow"), real.text) == (
        made_up.status_code, made_up.headers.get("allow"), made_up.text)


@pytest.mark.parametrize("role", ["expert", "outsider", "admin", "client", "other_client"])
def test_an_unknown_plan_looks_like_a_hidden_one(site: AccessSite, role: str) -> None:
    """Ids cannot be probed: a plan that does not exist answers as one that is not yours."""
    http = site.client(site.usernames[("valid", role)])
    for path in (f"/plans/{uuid.uuid4()}", f"/plans/{uuid.uuid4()}/history", "/plans/not-a-plan",
                 f"/plans/{uuid.uuid4()}/needs/new/add"):
        assert http.get(path).status_code == 404, (role, path)
