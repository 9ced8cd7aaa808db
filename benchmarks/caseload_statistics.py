"""Caseload and statistics benchmark: the pages that list many plans, before and after summary rows.

Before, the caseload page decoded the whole folded state of every plan of the person's
organisation that it might list (to ask ``domain.access``), and the administrator's page
decoded every plan for its statistics. Now both read the read model's summary columns and
rows (``projections.views``). This measures both ways in the same run, on the same store:

- ``data``: what the handler asks of the read model, in-process (no HTTP): the old path
  (the previous commit's code, kept below as ``old_*``) against the current one;
- ``page``: ``GET /caseload`` and ``GET /admin`` through a real uvicorn server
  (``web.server.build_server``), signed in, one request at a time; the baseline serves the
  same pages with the old data path patched in (``PlanViewTables.organisation_caseload``
  and ``web.controllers.admin._statistics``), so only the data path differs.

The store holds ``--plans`` plans (1,000; 200 with ``--quick``) of five organisations,
each plan with an expert, a counterpart of the next organisation, consents, three needs,
every fifth plan closed. Three people ask: a newcomer of one organisation who is in no
plan (their organisation's list has 2/5 of the plans, capped at 200), an expert of 40 plans,
and an administrator. Each figure is the median (and p90) of ``--repeat`` requests (21; 7
with ``--quick``), old and new taking turns. Also reported: how long the follower takes to
fold the whole log again (``rebuild``), which is what an existing store pays once at start
when the read model's version changes.

    .venv/bin/python benchmarks/caseload_statistics.py            # 1,000 plans, SQLite
    .venv/bin/python benchmarks/caseload_statistics.py --quick    # 200 plans
    .venv/bin/python benchmarks/caseload_statistics.py --stores sqlite postgres

Writes every figure, with the machine, load average, date and git commit, to
``benchmarks/results/caseload_statistics.json`` (or ``--out``). PostgreSQL: a fresh schema
on POLKU_TEST_PG_HOST/PORT/USER/DB (default 127.0.0.1:5432, user postgres, database
polku_test), dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402
import msgspec  # noqa: E402
import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

from domain.access import Action, may, relation_to  # noqa: E402
from domain.application import PlanService  # noqa: E402
from domain.storage import StoreSettings  # noqa: E402
from domain.values import Actor  # noqa: E402
from projections.plans import PlanProjection, PlanViews, rebuild  # noqa: E402
from projections.views import CaseloadEntry, PlanViewTables  # noqa: E402
from web.accounts import AccountStore  # noqa: E402
from web.controllers import admin as admin_controller  # noqa: E402
from web.live.access import today_in_finland  # noqa: E402
from web.server import build_server  # noqa: E402
from web.settings import Settings  # noqa: E402
from web.wiring import build_app  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results"
ORGANISATIONS = 5
PEOPLE_PER_ORGANISATION = 5
CATEGORIES = ("health", "work_and_employment", "everyday_life", "skills_and_competence")
OUTCOMES = ("work", "studies", "disability_pension", "continuation_kela")
PASSWORD = "benchmark password 4 Polku only"
SECRET_KEY = "benchmark-secret-key-that-is-long-enough-0123456789"
OBSERVER = "newcomer-0"  # in organisation 0, in no plan
EXPERT = "p0-0"  # named expert of one plan in 25
ADMIN = "bench-admin"


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    started = time.perf_counter()
    plans = 200 if args.quick else args.plans
    repeat = 7 if args.quick else args.repeat
    report: dict[str, Any] = {
        "benchmark": "caseload_statistics",
        "mode": "quick" if args.quick else "full",
        "command": " ".join([Path(sys.executable).name, *sys.argv]) if argv is None else None,
        "machine": machine_info(),
        "sizes": {"plans": plans, "repeats": repeat},
        "stores": {},
    }
    for store in args.stores:
        print(f"\n=== {store}: {plans} plans ===", flush=True)
        with store_settings(store) as settings:
            report["stores"][store] = run_store(settings, plans, repeat)
    report["duration_s"] = round(time.perf_counter() - started, 1)
    report["machine"]["load_average_at_end"] = os.getloadavg()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print_report(report)
    print(f"\nResults written to {out} ({report['duration_s']} s)")
    return 0


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="200 plans, 7 repeats")
    parser.add_argument("--plans", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=21)
    parser.add_argument("--stores", nargs="+", choices=["sqlite", "postgres"], default=["sqlite"])
    parser.add_argument("--out", default=str(RESULTS / "caseload_statistics.json"))
    return parser.parse_args(argv)


# ------------------------------------------------------------------------------ the store


@contextmanager
def store_settings(store: str) -> Iterator[StoreSettings]:
    data_dir = Path(tempfile.mkdtemp(prefix="polku-bench-caseload-"))
    try:
        if store == "sqlite":
            yield StoreSettings.from_environ({"POLKU_STORE": "sqlite", "POLKU_DATA_DIR": str(data_dir)})
            return
        schema = f"bench_caseload_{uuid.uuid4().hex[:8]}"
        environ = {
            "POLKU_STORE": "postgres",
            "POLKU_DATA_DIR": str(data_dir),
            "POLKU_PG_HOST": os.environ.get("POLKU_TEST_PG_HOST", "127.0.0.1"),
            "POLKU_PG_PORT": os.environ.get("POLKU_TEST_PG_PORT", "5432"),
            "POLKU_PG_USER": os.environ.get("POLKU_TEST_PG_USER", "postgres"),
            "POLKU_PG_DB": os.environ.get("POLKU_TEST_PG_DB", "polku_test"),
            "POLKU_PG_SCHEMA": schema,
            "POLKU_MASTER_KEY": "YmVuY2htYXJrLW1hc3Rlci1rZXktMzItYnl0ZXMhISE=",
        }
        _pg_execute(environ, [sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema))])
        try:
            yield StoreSettings.from_environ(environ)
        finally:
            names = [schema, *(f"{schema}_{part}" for part in ("views", "keys", "accounts", "accesslog"))]
            _pg_execute(environ, [sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(n)) for n in names])
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def _pg_execute(environ: dict[str, str], statements: list[sql.Composed]) -> None:
    with psycopg.connect(host=environ["POLKU_PG_HOST"], port=int(environ["POLKU_PG_PORT"]),
                         user=environ["POLKU_PG_USER"], dbname=environ["POLKU_PG_DB"], autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def person(organisation: int, number: int) -> Actor:
    return Actor(person_id=f"p{organisation}-{number}", name=f"Henkilö {organisation}-{number}",
                 organisation_id=f"bench-org-{organisation}", organisation_name=f"Organisaatio {organisation}")


def fill(service: PlanService, plans: int) -> int:
    """Open ``plans`` plans with their network and needs; returns the number of commands."""
    commands = 0
    for i in range(plans):
        expert = person(i % ORGANISATIONS, (i // ORGANISATIONS) % PEOPLE_PER_ORGANISATION)
        other = person((i + 1) % ORGANISATIONS, (i // 25) % PEOPLE_PER_ORGANISATION)
        plan_id = service.open_plan(by=expert, command_id=f"open-{i}", client_name=f"Asiakas {i:05d}",
                                    segment=("unemployed", "employed", "entrepreneur")[i % 3], language="fi",
                                    referring_party="self_referral", expert_profession="asiantuntija").plan_id
        service.give_consent(plan_id, by=expert, command_id=f"consent-{i}", organisation_id=other.organisation_id,
                             organisation_name=other.organisation_name, valid_from=date.today())
        member = service.add_member(plan_id, by=expert, command_id=f"member-{i}", person_id=other.person_id,
                                    name=other.name, profession="ohjaaja", organisation_id=other.organisation_id,
                                    organisation_name=other.organisation_name).item_id
        service.name_counterpart(plan_id, by=expert, command_id=f"counterpart-{i}", member_id=member, seen_revision=0)
        for n in range(3):
            service.record_need(plan_id, by=expert, command_id=f"need-{i}-{n}",
                                category=CATEGORIES[(i + n) % len(CATEGORIES)], description=f"Tarve {n}")
        commands += 7
        if i % 5 == 4:
            service.close_plan(plan_id, by=expert, command_id=f"close-{i}", outcome=OUTCOMES[i % len(OUTCOMES)])
            commands += 1
    return commands


def add_accounts(settings: StoreSettings) -> None:
    accounts = AccountStore.open(settings)
    try:
        for organisation in range(ORGANISATIONS):
            accounts.add_organisation(f"bench-org-{organisation}", f"Organisaatio {organisation}", "other")
        for username, kind in ((OBSERVER, "professional"), (EXPERT, "professional"), (ADMIN, "admin")):
            accounts.add_account(username, name=username, kind=kind, organisation_id="bench-org-0")
            accounts.set_password(username, PASSWORD)
    finally:
        accounts.close()


# ------------------------------------------------------------------- the old data path


def old_organisation_caseload(
    self: PlanViewTables, *, person_id: str, organisation_id: str, today: date, search: str = "", limit: int = 200
) -> list[CaseloadEntry]:
    """The previous commit's organisation list: the organisation's caseload, then each plan decoded for access."""
    mine = {entry.plan_id for entry in self.caseload(person_id=person_id, search=search)}
    projection = PlanProjection(self)
    shown = []
    for entry in self.caseload(person_id=person_id, organisation_id=organisation_id, search=search, limit=limit):
        if entry.plan_id in mine or entry.role not in ("expert", "counterpart"):
            continue
        plan = projection.load(entry.plan_id)
        relation = None if plan is None else relation_to(
            plan, kind="professional", person_id=person_id, organisation_id=organisation_id, client_plan_id=None,
            today=today,
        )
        if relation is not None and may(relation, Action.VIEW_PLAN):
            shown.append(entry)
    return shown


def old_statistics(service: PlanService) -> Callable[[PlanViews], admin_controller.Statistics]:
    """The previous commit's statistics: every plan id from the event store, each plan decoded."""

    def statistics_(views: PlanViews) -> admin_controller.Statistics:
        counts: dict[str, Counter[str]] = {k: Counter() for k in ("open", "closed", "outcome", "needs", "open_needs")}
        total = 0
        for plan_id in service.plan_ids():
            plan = views.plan(str(plan_id))
            if plan is None:
                continue
            total += 1
            segment = str(plan.client.segment)
            if plan.is_closed:
                counts["closed"][segment] += 1
                counts["outcome"][str(plan.closing.outcome) if plan.closing else ""] += 1
            else:
                counts["open"][segment] += 1
            for need in plan.needs.values():
                counts["needs"][str(need.category)] += 1
                if str(need.status) != "resolved":
                    counts["open_needs"][str(need.category)] += 1
        return admin_controller.Statistics(
            plans=total, open_by_segment=dict(counts["open"]), closed_by_segment=dict(counts["closed"]),
            closed_by_outcome=dict(counts["outcome"]), needs_by_category=dict(counts["needs"]),
            open_needs_by_category=dict(counts["open_needs"]),
        )

    return statistics_


@contextmanager
def old_data_path(service: PlanService) -> Iterator[None]:
    """Serve the pages with the previous commit's data path patched in (only that differs)."""
    current_caseload, current_statistics = PlanViewTables.organisation_caseload, admin_controller._statistics
    PlanViewTables.organisation_caseload = old_organisation_caseload  # type: ignore[method-assign]
    admin_controller._statistics = old_statistics(service)
    try:
        yield
    finally:
        PlanViewTables.organisation_caseload = current_caseload  # type: ignore[method-assign]
        admin_controller._statistics = current_statistics


# ------------------------------------------------------------------------------ the runs


def run_store(settings: StoreSettings, plans: int, repeat: int) -> dict[str, Any]:
    service = PlanService(settings)
    views = PlanViews(settings)
    try:
        began = time.perf_counter()
        commands = fill(service, plans)
        end = service.recorder.max_notification_id() or 0
        assert views.wait_for(end, timeout=600), "the follower did not catch up"
        fill_s = time.perf_counter() - began
        print(f"  filled: {plans} plans, {commands} commands in {fill_s:.1f} s", flush=True)
        data = data_path(settings, service, views, repeat)
        print_section("data path (in-process), ms", data)
    finally:
        views.close()
    add_accounts(settings)
    page = pages(settings, service, repeat)
    print_section("pages (GET through uvicorn, signed in), ms", page)
    began = time.perf_counter()
    applied = rebuild(settings)
    rebuild_s = time.perf_counter() - began
    print(f"  rebuild (what a version change costs once at start): {applied} events in {rebuild_s:.1f} s", flush=True)
    service.close()
    return {"commands": commands, "events": end, "fill_s": round(fill_s, 1), "data_ms": data, "page_ms": page,
            "rebuild": {"events": applied, "seconds": round(rebuild_s, 2)}}


def data_path(settings: StoreSettings, service: PlanService, views: PlanViews, repeat: int) -> dict[str, Any]:
    today = today_in_finland()

    def caseload(who: str) -> Callable[[], Any]:
        return lambda: (views.caseload(person_id=who),
                        views.store.organisation_caseload(person_id=who, organisation_id="bench-org-0", today=today))

    runs = {"caseload_newcomer": caseload(OBSERVER), "caseload_expert": caseload(EXPERT),
            "statistics": lambda: admin_controller._statistics(views)}
    with old_data_path(service):
        old_sizes = {name: _size(run()) for name, run in runs.items()}
    sizes = {name: _size(run()) for name, run in runs.items()}
    # The old organisation list took 200 plans, then dropped the person's own: it could show fewer.
    assert old_sizes["statistics"] == sizes["statistics"], "the old and new statistics disagree"
    results = {}
    for name, run in runs.items():
        timings: dict[str, list[float]] = {"old": [], "new": []}
        for _ in range(repeat):
            with old_data_path(service):
                timings["old"].append(_timed(run))
            timings["new"].append(_timed(run))
        results[name] = {**_summary(timings), "listed": {"old": old_sizes[name], "new": sizes[name]}}
    return results


def pages(settings: StoreSettings, service: PlanService, repeat: int) -> dict[str, Any]:
    app = build_app(Settings(secret_key=SECRET_KEY, data_dir=Path(settings.data_dir)), settings)
    server = build_server("127.0.0.1", 0, app=app, log_level="warning", access_log=False)
    results = {}
    with _serving(server) as base_url:
        clients = {who: _signed_in(base_url, who) for who in (OBSERVER, EXPERT, ADMIN)}
        try:
            requests = {"caseload_newcomer": (OBSERVER, "/caseload"), "caseload_expert": (EXPERT, "/caseload"),
                        "admin": (ADMIN, "/admin")}
            for name, (who, path) in requests.items():
                with old_data_path(service):
                    before = _page(clients[who], path)
                after = _page(clients[who], path)
                assert path != "/admin" or before == after, "the statistics differ between the old and new data paths"
                timings: dict[str, list[float]] = {"old": [], "new": []}
                for _ in range(repeat):
                    with old_data_path(service):
                        timings["old"].append(_timed(lambda c=clients[who], p=path: _page(c, p)))
                    timings["new"].append(_timed(lambda c=clients[who], p=path: _page(c, p)))
                results[name] = {**_summary(timings), "bytes": {"old": len(before), "new": len(after)}}
        finally:
            for client in clients.values():
                client.close()
    return results


def _page(client: httpx.Client, path: str) -> str:
    response = client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    return response.text


def _signed_in(base_url: str, username: str) -> httpx.Client:
    client = httpx.Client(base_url=base_url, timeout=120, headers={"accept-language": "en"})
    page = client.get("/signin")
    token = page.text.split('<meta name="csrf-token" content="', 1)[1].split('"', 1)[0]
    answer = client.post("/signin", data={"_csrf_token": token, "username": username, "password": PASSWORD})
    assert answer.status_code == 303, f"sign-in of {username} refused: {answer.status_code}"
    return client


@contextmanager
def _serving(server: Any) -> Iterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.01)
    try:
        host, port = sock.getsockname()
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def _size(result: Any) -> Any:
    """How many plans each caseload list has, or the whole statistics (to check old == new)."""
    if isinstance(result, tuple):
        return [len(part) for part in result]
    return msgspec.to_builtins(result)


def _timed(run: Callable[[], Any]) -> float:
    began = time.perf_counter()
    run()
    return (time.perf_counter() - began) * 1000


def _summary(timings: dict[str, list[float]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for mode, values in timings.items():
        ordered = sorted(values)
        found[mode] = {"median": round(statistics.median(ordered), 2),
                       "p90": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 2),
                       "runs": [round(v, 2) for v in values]}
    found["speed_up"] = round(found["old"]["median"] / found["new"]["median"], 1)
    return found


# ------------------------------------------------------------------------------ report


def print_section(title: str, results: dict[str, Any]) -> None:
    print(f"  {title}:")
    for name, result in results.items():
        print(f"    {name:<20} old {result['old']['median']:>9.2f} (p90 {result['old']['p90']:.2f})"
              f"   new {result['new']['median']:>8.2f} (p90 {result['new']['p90']:.2f})   x{result['speed_up']}",
              flush=True)


def print_report(report: dict[str, Any]) -> None:
    machine = report["machine"]
    print(f"\n{report['benchmark']} ({report['mode']}), commit {machine['commit']}, "
          f"load average {machine['load_average_at_start']} -> {machine['load_average_at_end']}")
    for store, result in report["stores"].items():
        print(f"  {store}: {result['events']} events; rebuild {result['rebuild']['seconds']} s")


def machine_info() -> dict[str, Any]:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                            check=False).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "projections", "web", "domain"], cwd=REPO_ROOT,
                           capture_output=True, text=True, check=False).stdout.strip()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "commit": commit + ("+uncommitted" if dirty else ""),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average_at_start": os.getloadavg(),
    }


if __name__ == "__main__":
    sys.exit(main())
