"""The `polku` command line.

    polku serve [--host H] [--port P]   start the web application
    polku demo [--if-empty]             load the demo plans (safe to repeat)
    polku plans                         list the plans
    polku plan ID                       print a plan and its history
    polku projections rebuild           rebuild the read models from the event log

The store is chosen by the POLKU_* environment variables (see README.md).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from domain.application import PlanService
from domain.demo import load_demo
from domain.errors import DomainError
from domain.plan import ClientPlan


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="polku", description="Polku: shared client plans for work-ability support.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="start the web application")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    demo = commands.add_parser("demo", help="load the demo plans (safe to run again)")
    demo.add_argument("--if-empty", action="store_true", help="only when the store has no plans yet")
    commands.add_parser("plans", help="list the plans")
    show = commands.add_parser("plan", help="print a plan and its history")
    show.add_argument("plan_id")
    projections = commands.add_parser("projections", help="manage the read models")
    projections.add_argument("action", choices=["rebuild"])
    args = parser.parse_args(argv)

    if args.command == "serve":
        from web.server import serve as run_server

        run_server(args.host, args.port)
        return 0
    if args.command == "projections":
        return _rebuild_projections()
    service = PlanService()
    try:
        return _COMMANDS[args.command](service, args)
    except DomainError as error:
        print(f"polku: {error}", file=sys.stderr)
        return 1
    finally:
        service.close()


def _demo(service: PlanService, args: argparse.Namespace) -> int:
    if args.if_empty and next(service.plan_ids(), None) is not None:
        print("The store has plans already; demo not loaded.")
        return 0
    plan_ids = load_demo(service)
    print(f"Demo loaded: {len(plan_ids)} plans.")
    return 0


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


def _rebuild_projections() -> int:
    """Rebuild with a progress bar; stop `polku serve` first."""
    from tqdm import tqdm

    from domain.storage import StoreSettings
    from projections.plans import rebuild

    with tqdm(unit="event", desc="plan views") as bar:

        def progress(position: int, total: int) -> None:
            bar.total = total
            bar.update(position - bar.n)

        applied = rebuild(StoreSettings.from_environ(), progress)
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
