"""The `polku` command line.

    polku serve [--host H] [--port P]   start the web application
    polku project [--host H] [--port P] write the read model for the web instances (PostgreSQL),
                                        serving only /healthz and /readyz (default 127.0.0.1:8100)
    polku demo [--if-empty]             load the demo plans (safe to repeat)
    polku plans                         list the plans
    polku plan ID                       print a plan and its history
    polku projections rebuild           rebuild the read models from the event log
    polku admin organisation add ID NAME --type TYPE
                                        add an organisation (or rename it)
    polku admin service add NAME        add a service to the region's service catalogue
    polku admin service list            the catalogue's services
    polku admin service remove NAME     take a service out of the catalogue
    polku admin person add USERNAME --name N --organisation ID --profession P [--kind professional|admin]
                                        add a person who signs in; prints their first sign-in link
    polku admin person link USERNAME    a new first sign-in link (the earlier one stops working)
    polku accesslog verify [--anchor SEQ:HASH]
                                        check the access log's chain; exit code 1 at the first broken link
    polku accesslog export [--since DAY] [--until DAY] [--format csv|jsonl] [--output FILE]
                                        the access log's entries (days in Finland's time, both included)
    polku admin client add USERNAME --name N --plan PLAN_ID
                                        add a client's account for their own plan; prints their first sign-in link

A database that cannot be reached (or, for the account store, stays locked) is one line
on standard error and exit code 75 (EX_TEMPFAIL: try again), whatever the command.

`polku demo` also adds the demo organisations and professionals (usernames like
aino.virtanen), all with one demo password: POLKU_DEMO_PASSWORD if set, else one generated
once and kept in <data dir>/demo-password.txt (0600); it prints the password. It also adds
the demo client matti.esimerkki, who sees his own plan at /my-plan, with the same password.

The store is chosen by the POLKU_* environment variables (see README.md); sign-in links
start with POLKU_BASE_URL (default http://127.0.0.1:8000) unless --base-url is given.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from collections.abc import Sequence
from typing import Any

from domain.application import PlanService
from domain.demo import load_demo
from domain.errors import ConfigurationError, DomainError
from domain.inputs import has_forbidden_character
from domain.plan import ClientPlan


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="polku", description="Polku: shared client plans for work-ability support.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="start the web application")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_port, default=8000)
    project = commands.add_parser(
        "project", help="write the read model for the web instances (PostgreSQL); serves /healthz and /readyz only"
    )
    project.add_argument("--host", default="127.0.0.1")
    project.add_argument("--port", type=_port, default=8100, help="of the health checks (default 8100)")
    demo = commands.add_parser("demo", help="load the demo plans (safe to run again)")
    demo.add_argument("--if-empty", action="store_true", help="only when the store has no plans yet")
    commands.add_parser("plans", help="list the plans")
    show = commands.add_parser("plan", help="print a plan and its history")
    show.add_argument("plan_id")
    projections = commands.add_parser("projections", help="manage the read models")
    projections.add_argument("action", choices=["rebuild"])
    _add_admin_commands(commands)
    _add_accesslog_commands(commands)
    given = sys.argv[1:] if argv is None else list(argv)
    if any(has_forbidden_character(arg) for arg in given):  # bytes that are not UTF-8 come as lone surrogates
        print("polku: the command line must be UTF-8 text", file=sys.stderr)
        return 2
    args = parser.parse_args(given)
    from web.errors import UNAVAILABLE

    try:
        return _run(args)
    except UNAVAILABLE as error:
        reason = next(iter(str(error).strip().splitlines()), type(error).__name__)
        print(f"polku: could not reach the database ({reason}); try again in a moment.", file=sys.stderr)
        return os.EX_TEMPFAIL
    except ConfigurationError as error:
        print(f"polku: {error}", file=sys.stderr)
        return os.EX_CONFIG
    except OSError as error:  # a data folder or file that cannot be made, read or written
        print(f"polku: {error.filename or ''}: {error.strerror or error}", file=sys.stderr)
        return 1


def _port(text: str) -> int:
    """A TCP port for ``--port`` (0: any free one)."""
    if text.isascii() and text.isdigit() and int(text) <= 65535:
        return int(text)
    raise argparse.ArgumentTypeError(f"{text!r} is no port: give a number from 0 to 65535")


def _run(args: argparse.Namespace) -> int:
    if args.command == "serve":
        from web.server import serve as run_server

        run_server(args.host, args.port)
        return 0
    if args.command == "project":
        return _project(args.host, args.port)
    if args.command == "projections":
        return _rebuild_projections()
    if args.command == "admin":
        return _admin(args)
    if args.command == "accesslog":
        return _accesslog(args)
    service = _open_plan_service()
    try:
        return _COMMANDS[args.command](service, args)
    except DomainError as error:
        print(f"polku: {error}", file=sys.stderr)
        return 1
    finally:
        service.close()


def _open_plan_service() -> PlanService:
    """The plan service, opened as a server instance opens it: one at a time on
    PostgreSQL, creating the event store's schema if this is a fresh database."""
    from domain.storage import StoreSettings
    from projections.leader import StartupLock

    settings = StoreSettings.from_environ()
    startup = StartupLock.hold(settings)
    try:
        return PlanService(settings)
    finally:
        startup.release()


def _demo(service: PlanService, args: argparse.Namespace) -> int:
    if args.if_empty and next(service.plan_ids(), None) is not None:
        print("The store has plans already; demo not loaded.")
    else:
        plan_ids = load_demo(service)
        print(f"Demo loaded: {len(plan_ids)} plans.")
    return _demo_accounts(if_empty=args.if_empty, client_plan=_demo_client_plan(service))


def _demo_accounts(*, if_empty: bool, client_plan: str | None = None) -> int:
    """The demo organisations and professionals, with the demo password (printed)."""
    from domain.demo import PEOPLE
    from domain.storage import StoreSettings
    from web.accounts import (
        DEMO_PASSWORD_FILENAME,
        AccountStore,
        PasswordRejected,
        demo_password,
        ensure_demo_accounts,
    )

    settings = StoreSettings.from_environ()
    usernames = [actor.person_id for actor, _profession in PEOPLE.values()]
    store = AccountStore.open(settings)
    try:
        if if_empty and store.count_accounts() and store.account_by_username(usernames[0]) is None:
            print("The account store has accounts already; demo accounts not added.")
            return 0
        password = demo_password(settings.data_dir)
        ensure_demo_accounts(store, password)
        client = _ensure_demo_client(store, password, client_plan) if client_plan else None
    except PasswordRejected:
        print("polku: POLKU_DEMO_PASSWORD must be 12 to 256 characters long.", file=sys.stderr)
        return 1
    finally:
        store.close()
    kept = Path(settings.data_dir) / DEMO_PASSWORD_FILENAME
    source = "POLKU_DEMO_PASSWORD" if os.environ.get("POLKU_DEMO_PASSWORD") else f"kept in {kept}"
    print(f"Demo accounts: {len(usernames)} professionals ({', '.join(usernames[:3])}, ...).")
    if client:
        print(f"Demo client: {client}, who sees his own plan at /my-plan.")
    print(f"Sign in as any of them with the demo password ({source}): {password}")
    return 0


def _demo_client_plan(service: PlanService) -> str | None:
    """The demo plan of the demo client (``domain.demo.CLIENT``), if it is in the store."""
    from domain.demo import CLIENT

    return next((s.plan_id for s in service.summaries() if s.client_name == CLIENT.name), None)


def _ensure_demo_client(store: Any, password: str, plan_id: str) -> str:
    """The demo client's account for ``plan_id``, with the demo password (safe to repeat)."""
    from domain.demo import CLIENT

    username = CLIENT.person_id
    if store.account_by_username(username) is None:
        store.add_account(username, name=CLIENT.name, kind="client", person_id=CLIENT.person_id, plan_id=plan_id)
    current = store.password_hash_of(username)
    if current is None or not store.password_matches_hash(current, password):
        store.set_password(username, password)
    return username


def _add_admin_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    admin = commands.add_parser("admin", help="organisations and the people who sign in")
    areas = admin.add_subparsers(dest="area", required=True)
    organisation = areas.add_parser("organisation", help="organisations").add_subparsers(dest="action", required=True)
    add_organisation = organisation.add_parser("add", help="add an organisation (or rename it)")
    add_organisation.add_argument("organisation_id", metavar="ID", help="e.g. kela-pirkanmaa")
    add_organisation.add_argument("name", metavar="NAME")
    add_organisation.add_argument(
        "--type", required=True, choices=_ORGANISATION_TYPES, help="one of: " + ", ".join(_ORGANISATION_TYPES)
    )
    service = areas.add_parser("service", help="the service catalogue that the step forms offer").add_subparsers(
        dest="action", required=True
    )
    service.add_parser("add", help="add a service to the catalogue").add_argument("name", metavar="NAME")
    service.add_parser("list", help="the catalogue's services, one a line")
    service.add_parser("remove", help="take a service out of the catalogue").add_argument("name", metavar="NAME")
    person = areas.add_parser("person", help="people who sign in").add_subparsers(dest="action", required=True)
    add_person = person.add_parser("add", help="add a professional or an administrator; prints a first sign-in link")
    add_person.add_argument("username", metavar="USERNAME", help="e.g. aino.virtanen")
    add_person.add_argument("--name", required=True)
    add_person.add_argument("--organisation", required=True, metavar="ID")
    add_person.add_argument("--profession", default="")
    add_person.add_argument("--kind", choices=["professional", "admin"], default="professional")
    add_person.add_argument("--base-url", help="where the service is reached (default: POLKU_BASE_URL)")
    link = person.add_parser("link", help="a new first sign-in link (the earlier one stops working)")
    link.add_argument("username", metavar="USERNAME")
    link.add_argument("--base-url", help="where the service is reached (default: POLKU_BASE_URL)")
    client = areas.add_parser("client", help="clients who sign in to see their own plan").add_subparsers(
        dest="action", required=True
    )
    add_client = client.add_parser("add", help="add a client's account for their plan; prints a first sign-in link")
    add_client.add_argument("username", metavar="USERNAME", help="e.g. matti.esimerkki")
    add_client.add_argument("--name", required=True)
    add_client.add_argument("--plan", required=True, metavar="PLAN_ID", help="the id of the client's plan")
    add_client.add_argument("--base-url", help="where the service is reached (default: POLKU_BASE_URL)")


def _add_accesslog_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    accesslog = commands.add_parser("accesslog", help="the access log: who read which plan").add_subparsers(
        dest="action", required=True
    )
    verify = accesslog.add_parser("verify", help="check the chain of entries; exit code 1 at the first broken link")
    verify.add_argument("--anchor", metavar="SEQ:HASH", help="an entry's number and hash noted earlier")
    export = accesslog.add_parser("export", help="print or write the entries")
    export.add_argument("--since", metavar="DAY", help="from this day (YYYY-MM-DD, Finland's time)")
    export.add_argument("--until", metavar="DAY", help="to this day, included")
    export.add_argument("--format", choices=["csv", "jsonl"], default="csv")
    export.add_argument("--output", metavar="FILE", help="write to FILE (default: standard output)")


def _accesslog(args: argparse.Namespace) -> int:
    from domain.storage import StoreSettings
    from web.accesslog import AccessLog, day_start

    log = AccessLog.open(StoreSettings.from_environ())
    try:
        if args.action == "verify":
            anchor = None
            if args.anchor:
                seq, _, digest = args.anchor.partition(":")
                if not seq.isdigit() or len(digest) != 64:
                    print("polku: --anchor is SEQ:HASH, e.g. 1234:9f86d08...", file=sys.stderr)
                    return 2
                anchor = (int(seq), digest.lower())
            report = log.verify(anchor)
            if report.ok:
                print(f"The access log is intact: {report.checked} entries; the last is {report.head_seq},"
                      f" hash {report.head_hash}.")
                return 0
            print(f"The access log is broken at entry {report.broken_seq}: {report.message}.", file=sys.stderr)
            print(f"Entries 1 to {report.head_seq} are intact (hash of {report.head_seq}: {report.head_hash}).",
                  file=sys.stderr)
            return 1
        try:
            since, until = day_start(args.since or ""), day_start(args.until or "", next_day=True)
        except ValueError:
            print("polku: --since and --until are days, e.g. 2026-11-23", file=sys.stderr)
            return 2
        output = open(args.output, "w", encoding="utf-8", newline="") if args.output else sys.stdout  # noqa: SIM115
        try:
            for line in log.export(since, until, format=args.format):
                output.write(line)
        finally:
            if output is not sys.stdout:
                output.close()
        return 0
    finally:
        log.close()


_ORGANISATION_TYPES = (
    "wellbeing_services_county", "kela", "employment_services", "third_sector", "private_provider", "other",
)


def _admin(args: argparse.Namespace) -> int:
    from domain.storage import StoreSettings
    from web.accounts import LINK_LIFETIME, AccountError, AccountStore

    store = AccountStore.open(StoreSettings.from_environ())
    try:
        if args.area == "organisation":
            organisation = store.add_organisation(args.organisation_id, args.name, args.type)
            print(f"Organisation {organisation.organisation_id}: {organisation.name} ({organisation.type}).")
            return 0
        if args.area == "service":
            return _service(store, args)
        if args.area == "client":
            account = store.add_account(args.username, name=args.name, kind="client", plan_id=_existing_plan(args.plan))
            print(f"Added {account.name} (client of the plan {account.plan_id}) as {args.username.strip().lower()}.")
        elif args.action == "add":
            account = store.add_account(
                args.username, name=args.name, kind=args.kind, organisation_id=args.organisation,
                profession=args.profession,
            )
            print(f"Added {account.name} ({account.kind}, {account.organisation_name}) as {args.username.strip().lower()}.")
        token = store.issue_link(args.username)
    except AccountError as error:
        print(f"polku: {error}", file=sys.stderr)
        return 1
    finally:
        store.close()
    base_url = (args.base_url or os.environ.get("POLKU_BASE_URL") or "http://127.0.0.1:8000").rstrip("/")
    print(f"First sign-in link (works once, for {LINK_LIFETIME // 3600} hours; give it to this person only):")
    print(f"  {base_url}/signin/link/{token}")
    return 0


def _service(store: Any, args: argparse.Namespace) -> int:
    """``polku admin service add NAME`` (exit code 1 if it is in the catalogue), ``list`` and
    ``remove NAME`` (exit code 1 if it is not)."""
    if args.action == "list":
        for name in store.services():
            print(name)
        return 0
    if args.action == "remove":
        if not store.remove_service(args.name):
            print(f"polku: the catalogue has no {args.name!r}", file=sys.stderr)
            return 1
        print(f"Service {args.name!r} taken out of the catalogue.")
        return 0
    if not store.add_service(args.name):
        print(f"polku: the catalogue has {args.name.strip()!r} already", file=sys.stderr)
        return 1
    print(f"Service {args.name.strip()!r} added to the catalogue.")
    return 0


def _existing_plan(plan_id: str) -> str:
    """The id of a plan in the store, or refuse (a client account is for an existing plan)."""
    from web.accounts import AccountError

    service = _open_plan_service()
    try:
        return str(service.get_plan(plan_id.strip()).id)
    except DomainError:
        raise AccountError(f"there is no plan {plan_id!r}") from None
    finally:
        service.close()


def _plans(service: PlanService, _args: argparse.Namespace) -> int:
    for summary in service.summaries():
        state = "closed" if summary.is_closed else "open"
        counterpart = summary.counterpart or "-"
        print(
            f"{summary.plan_id}  {summary.client_name:<24} {summary.segment:<13} {state:<6} "
            f"expert: {summary.expert} ({summary.expert_organisation}); counterpart: {counterpart}"
        )
    return 0


def _plan(service: PlanService, args: argparse.Namespace) -> int:
    plan = service.get_plan(args.plan_id)
    print(_describe_plan(plan))
    print("\nHistory:")
    for entry in service.history(plan.id):
        print(f"  {entry.version:>4}  {entry.at:%d.%m.%Y %H:%M}  {entry.by_name} ({entry.by_organisation}): {entry.text}")
    return 0


def _project(host: str, port: int) -> int:
    """The read model's dedicated writer (docs/deployment.md, "A dedicated projector")."""
    from domain.storage import StoreSettings
    from web.server import project

    if StoreSettings.from_environ().kind != "postgres":
        print("polku: `polku project` needs POLKU_STORE=postgres; over SQLite `polku serve` writes its read model.",
              file=sys.stderr)
        return 2
    project(host, port)
    return 0


def _rebuild_projections() -> int:
    """Rebuild with a progress bar; stop `polku serve` and `polku project` first."""
    from tqdm import tqdm

    from domain.storage import StoreSettings
    from projections.plans import rebuild

    with tqdm(unit="event", desc="plan views") as bar:

        def progress(position: int, total: int) -> None:
            bar.total = total
            bar.update(position - bar.n)

        try:
            applied = rebuild(StoreSettings.from_environ(), progress)
        except RuntimeError as refusal:
            print(f"polku: {refusal}", file=sys.stderr)
            return 1
    print(f"Rebuilt the plan views from {applied} events.")
    return 0


def _describe_plan(plan: ClientPlan) -> str:
    client = plan.client
    counterpart = plan.counterpart
    lines = [
        f"Plan {plan.id} (version {plan.version})",
        f"Client: {client.name}, {client.segment}, language {client.language}, referred by {client.referring_party}",
        f"Opened {plan.opened_on:%d.%m.%Y}"
        + (f"; closed {plan.closing.closed_on:%d.%m.%Y} with {plan.closing.outcome}" if plan.closing else "; open"),
        f"Named expert: {plan.expert.name} ({plan.expert.organisation_name})",
        f"Counterpart: {counterpart.name} ({counterpart.organisation_name})" if counterpart else "Counterpart: -",
        "Needs:",
        *(f"  [{n.category}] {n.description} ({n.status})" for n in plan.needs.values()),
        "Goals:",
        *(f"  {g.title} by {g.target_date:%d.%m.%Y} ({g.status})" for g in plan.goals.values()),
        "Network:",
        *(f"  {m.name}, {m.profession}, {m.organisation_name}" for m in plan.members.values()),
        "Steps:",
        *(
            f"  {s.planned_start:%d.%m.%Y}–{s.planned_end:%d.%m.%Y} {s.title} ({s.status})"
            for s in sorted(plan.steps.values(), key=lambda s: s.planned_start)
        ),
    ]
    if plan.pending_handover:
        lines.append(f"Pending handover to {plan.members[plan.pending_handover.to_member_id].name}")
    return "\n".join(lines)


_COMMANDS = {"demo": _demo, "plans": _plans, "plan": _plan}

if __name__ == "__main__":
    sys.exit(main())
