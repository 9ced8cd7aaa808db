"""Event store benchmark (issue 2): appends, opens and a raw-insert baseline.

Runs the real `PlanService` on SQLite (a temporary data directory) and on PostgreSQL
(a fresh schema, dropped afterwards), with a master key generated for the run, and
measures, on each store, in this order:

1. 10,000 events spread over 1,000 plans (an opening and 9 commands each, in a
   shuffled order that keeps each plan's own order), three rounds, medians reported;
   first, on the fresh store;
2. one plan growing to 10,000 events, with a realistic mix of commands (mostly edits of
   existing needs, goals, steps and members, and notes; some measures and new items).
   Commands are timed one at a time through the service, as users give them, in
   windows of 100 at plan sizes 0, 1,000, 2,500, 5,000, 7,500 and 9,900; between the
   windows the plan grows through the same aggregate commands saved by the same service
   100 events at a time (the one-at-a-time cost grows with the plan, so timing all
   10,000 takes about 20 minutes a store; `--exhaustive` does exactly that). Reported:
   median and p95 per window, and the time for all 10,000 one at a time (estimated
   from the windows, or measured with `--exhaustive`);
3. opening plans of 10, 1,000 and 10,000 events (and 10,050: 50 events after the last
   snapshot), three ways:
   - `snapshot`: `get_plan` of a PlanService with the aggregate cache turned off
     (snapshot + the events after it, decrypted and decoded);
   - `replay`: `get_plan` of a PlanService without a snapshot store (every event);
   - `cached`: `get_plan` of the service as configured, cache warm (a query for newer
     events, then a copy of the cached plan; a command skips the query, see
     `PlanService._plan_for_command`);
4. a baseline on the same database in the same run: raw inserts of rows of the same
   sizes (sampled from the stored events) into a table of the stored-events shape, one
   transaction per insert (SQLite: WAL + synchronous=FULL, autocommit; PostgreSQL:
   autocommit), measured three times during the run (after 1, after 2, after 3), medians.

Only the service's call is timed: the workload makes up a command's fields before the
clock starts, as the raw insert makes its row before. The ratios compare the per-event
append median with the raw insert median, and the mean over all of one plan's events
with the raw insert's mean (each mean with its own WAL checkpoints). Targets
(issue 2): a 10,000-event plan opens in under 10 ms with snapshots; the per-event append
cost is within 3x of the raw insert.

    .venv/bin/python benchmarks/event_store.py            # full run, ~7 minutes
    .venv/bin/python benchmarks/event_store.py --quick    # smaller sizes, under a minute

Writes every figure, plus the machine, versions, date and git commit, to
`benchmarks/results/event_store.json` (`--quick`: `event_store.quick.json`; or `--out`);
`--markdown FILE` prints a results file as the table of docs/performance.md. PostgreSQL
connection settings come from `--pg-*` options, else POLKU_TEST_PG_HOST/PORT/USER/DB (the
test suite's), else 127.0.0.1:5432, user postgres, database polku_test; `--stores sqlite`
skips it. `--profile DIR` adds a breakdown of the biggest plan's open and cProfile files.

After section 1 it also measures what a group commit would cost: commands on different
plans saved in one transaction (`PlanService.save(*plans)`), per event. `PlanService`
does not save that way (one command, one transaction); the figure is reported beside the
others but is not part of the targets.
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import io
import json
import os
import platform
import pstats
import random
import secrets
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from domain.application import SNAPSHOT_INTERVAL, PlanService  # noqa: E402
from domain.plan import ClientPlan  # noqa: E402
from domain.storage import StoreSettings  # noqa: E402
from domain.values import Actor  # noqa: E402

DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "event_store.json"
QUICK_OUT = REPO_ROOT / "benchmarks" / "results" / "event_store.quick.json"
"""A quick run writes here, so it never overwrites the figures of a full run."""

OPEN_TARGET_MS = 10.0
"""Issue 2: a 10,000-event plan opens in under 10 ms with snapshots."""
APPEND_RATIO_TARGET = 3.0
"""Issue 2: the per-event append cost is within 3x of a raw insert."""


@dataclass(frozen=True)
class Sizes:
    """How much each section does; `--quick` uses the small set."""

    one_plan_events: int
    window_starts: tuple[int, ...]
    """Plan versions at which a window of commands is timed one at a time."""
    window: int
    many_plans: int
    events_per_plan: int
    many_rounds: int
    open_sizes: tuple[int, ...]
    open_repeats: dict[int, int]
    baseline_inserts: int
    after_snapshot: int = 50
    after_snapshot_repeats: int = 10
    groups: int = 100
    group_size: int = 10


FULL = Sizes(
    one_plan_events=10_000,
    window_starts=(0, 1_000, 2_500, 5_000, 7_500, 9_900),
    window=100,
    many_plans=1_000,
    events_per_plan=10,
    many_rounds=3,
    open_sizes=(10, 1_000, 10_000),
    open_repeats={10: 50, 1_000: 50, 10_000: 20},
    baseline_inserts=2_000,
)
QUICK = Sizes(
    one_plan_events=1_000,
    window_starts=(0, 500, 900),
    window=100,
    many_plans=100,
    events_per_plan=10,
    many_rounds=1,
    open_sizes=(10, 1_000),
    open_repeats={10: 30, 1_000: 20},
    baseline_inserts=300,
    groups=20,
)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.markdown:
        print(markdown_tables(json.loads(Path(args.markdown).read_text())))
        return 0
    # Stopped with SIGTERM (kill, a CI timeout), still drop the schema and the temp dir.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sizes = QUICK if args.quick else FULL
    if args.exhaustive:
        sizes = replace(sizes, window_starts=(0,), window=sizes.one_plan_events)
    master_key = base64.b64encode(secrets.token_bytes(32)).decode()
    started = time.perf_counter()
    report: dict[str, Any] = {
        "benchmark": "event_store",
        "mode": ("quick" if args.quick else "full") + (" exhaustive" if args.exhaustive else ""),
        "command": " ".join([Path(sys.executable).name, *sys.argv]) if argv is None else None,
        "machine": machine_info(),
        "sizes": {
            "one_plan_events": sizes.one_plan_events,
            "one_plan_window_starts": list(sizes.window_starts),
            "one_plan_window": sizes.window,
            "many_plans_rounds": sizes.many_rounds,
            "many_plans": sizes.many_plans,
            "events_per_plan": sizes.events_per_plan,
            "open_sizes": list(sizes.open_sizes),
            "open_repeats": {str(k): v for k, v in sizes.open_repeats.items()},
            "baseline_inserts_per_round": sizes.baseline_inserts,
            "snapshot_interval": SNAPSHOT_INTERVAL,
        },
        "targets": {"open_10k_snapshot_ms": OPEN_TARGET_MS, "append_ratio_max": APPEND_RATIO_TARGET},
        "stores": {},
    }
    for store in args.stores:
        print(f"\n=== {store} ===", flush=True)
        try:
            with open_store(store, args, master_key) as target:
                report["stores"][store] = run_store(target, sizes, args.seed, profile_dir=args.profile)
        except StoreUnavailable as error:
            print(f"  skipped: {error}", flush=True)
            report["stores"][store] = {"skipped": str(error)}
    report["duration_s"] = round(time.perf_counter() - started, 1)
    report["machine"]["load_average_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    out = Path(args.out or (QUICK_OUT if args.quick else DEFAULT_OUT))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print_report(report)
    print(f"\nResults written to {out} ({report['duration_s']} s)")
    return 0


# --------------------------------------------------------------------------- stores


class StoreUnavailable(Exception):
    """The store cannot be reached; its section is skipped with this reason."""


@dataclass
class Target:
    """One store under test: how to make services on it and a raw connection to it."""

    name: str
    settings: StoreSettings
    raw_insert: Callable[[list[int], random.Random], list[float]]
    describe: dict[str, Any]
    services: list[PlanService] = field(default_factory=list)

    def service(self, *, cache: bool = True, snapshots: bool = True) -> PlanService:
        """A PlanService on this store: as configured, or without cache / snapshots."""
        if cache and snapshots:
            service = PlanService(self.settings)
        elif snapshots:
            service = UncachedPlanService(self.settings)
        else:
            service = ReplayingPlanService(self.settings)
        self.services.append(service)
        return service

    def close(self) -> None:
        for service in self.services:
            service.close()
        self.services.clear()


class UncachedPlanService(PlanService):
    """The service with the aggregate cache off: every get reads the store.

    (`StoreSettings(aggregate_cache_size=0)` does the same now.) The name stays the
    service's: the library names a subclass after itself, and the PostgreSQL tables are
    named after the application.
    """

    name = PlanService.name

    def construct_env(self, name: str, env: Any = None) -> Any:
        environment = super().construct_env(name, env)
        environment["AGGREGATE_CACHE_MAXSIZE"] = ""
        return environment


class ReplayingPlanService(UncachedPlanService):
    """The service without cache and without a snapshot store: every get replays all events."""

    name = PlanService.name

    def construct_env(self, name: str, env: Any = None) -> Any:
        environment = super().construct_env(name, env)
        environment["IS_SNAPSHOTTING_ENABLED"] = "n"
        return environment


@contextmanager
def open_store(kind: str, args: argparse.Namespace, master_key: str) -> Iterator[Target]:
    if kind == "sqlite":
        with _sqlite_store(master_key) as target:
            yield target
    else:
        with _postgres_store(args, master_key) as target:
            yield target


@contextmanager
def _sqlite_store(master_key: str) -> Iterator[Target]:
    data_dir = tempfile.mkdtemp(prefix="polku-bench-")
    settings = StoreSettings(kind="sqlite", data_dir=data_dir, master_key_b64=master_key)
    db_path = Path(data_dir) / "events.sqlite3"
    target = Target(
        name="sqlite",
        settings=settings,
        raw_insert=lambda sizes, rng: _sqlite_raw_inserts(db_path, sizes, rng),
        describe={"sqlite_version": sqlite3.sqlite_version, "data_dir": "temporary directory", "disk": _disk_of(data_dir)},
    )
    try:
        yield target
    finally:
        target.close()
        shutil.rmtree(data_dir, ignore_errors=True)


@contextmanager
def _postgres_store(args: argparse.Namespace, master_key: str) -> Iterator[Target]:
    import psycopg

    schema = f"polku_bench_{secrets.token_hex(4)}"
    settings = StoreSettings(
        kind="postgres",
        pg_host=args.pg_host,
        pg_port=args.pg_port,
        pg_db=args.pg_db,
        pg_user=args.pg_user,
        pg_password=args.pg_password,
        pg_schema=schema,
        master_key_b64=master_key,
    )
    try:
        admin = psycopg.connect(settings.pg_conninfo, autocommit=True, connect_timeout=3)
    except psycopg.Error as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise StoreUnavailable(f"PostgreSQL at {args.pg_host}:{args.pg_port}/{args.pg_db}: {first_line}") from None
    with admin:
        server = admin.execute("SHOW server_version").fetchone()[0]
        synchronous_commit = admin.execute("SHOW synchronous_commit").fetchone()[0]
        admin.execute(f'CREATE SCHEMA "{schema}"')
        target = Target(
            name="postgres",
            settings=settings,
            raw_insert=lambda sizes, rng: _postgres_raw_inserts(settings.pg_conninfo, schema, sizes, rng),
            describe={
                "server_version": server,
                "synchronous_commit": synchronous_commit,
                "host": f"{args.pg_host}:{args.pg_port}",
                "database": args.pg_db,
                "schema": f"{schema} (dropped after the run)",
            },
        )
        try:
            yield target
        finally:
            target.close()
            for name in (schema, f"{schema}_keys"):
                admin.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def _disk_of(path: str) -> str:
    try:
        out = subprocess.run(["df", "--output=source,fstype", path], capture_output=True, text=True, timeout=5)
        return " ".join(out.stdout.split()[2:4])
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# ------------------------------------------------------------------ the workload

WORDS = (
    "asiakas kertoi että kuntoutus eteni hyvin viikon aikana työkokeilu alkaa maanantaina "
    "lääkäri suositteli fysioterapiaa selkäkipujen vuoksi työkykyä arvioidaan uudelleen "
    "kuukauden kuluttua sovittiin tapaaminen Kelan kanssa kuntoutusohjaaja soittaa "
    "asiakkaalle ensi viikolla taloudellinen tilanne on vaikea toimeentulotuki haettu "
    "opiskelu kiinnostaa ammattikoulu hakuaika päättyy keväällä verkosto kokoontuu "
    "psykiatrinen sairaanhoitaja tukee mielialaa uni parantunut liikunta lisääntynyt "
    "työterveys ei kuulu asiakkaalle työllisyyspalvelut ohjasi palveluun tavoitteena "
    "osa-aikatyö syksyllä arki sujuu paremmin lapset koulussa kela päätös odottaa"
).split()

NEED_CATEGORIES = ("health", "work_and_employment", "everyday_life", "skills_and_competence")
NEED_STATUSES = ("open", "being_addressed", "being_addressed", "open")
SEGMENTS = ("unemployed", "employed", "entrepreneur")
REFERRERS = ("self_referral", "employment_services", "kela", "health_centre", "social_services")

# What users do to a plan once it is under way: mostly edits of what is there, and notes.
STEADY_MIX: tuple[tuple[str, int], ...] = (
    ("add_note", 25),
    ("update_need", 12),
    ("update_step", 12),
    ("reschedule_step", 10),
    ("revise_goal", 9),
    ("record_step_outcome", 8),
    ("record_measure", 7),
    ("update_member", 6),
    ("progress_step", 3),
    ("change_client_details", 2),
    ("plan_step", 3),
    ("record_need", 1),
    ("set_goal", 1),
    ("settle_goal", 1),
)


@dataclass
class PlanWorkload:
    """The commands one plan receives, as its users give them, with what they saw.

    It keeps the revision of every item it edited, as a user's form would, so each
    edit names the revision it saw and never conflicts. The first commands build
    the plan's network and content; after that `STEADY_MIX` applies.
    """

    rng: random.Random
    tag: str
    expert: Actor
    colleagues: list[Actor]
    plan_id: str = ""
    count: int = 0
    client_revision: int = 0
    needs: dict[str, int] = field(default_factory=dict)
    goals: dict[str, int] = field(default_factory=dict)
    steps: dict[str, list[Any]] = field(default_factory=dict)
    """step id -> [revision, status]"""
    members: dict[str, int] = field(default_factory=dict)
    organisations_with_consent: set[str] = field(default_factory=set)

    @classmethod
    def new(cls, rng: random.Random, tag: str) -> PlanWorkload:
        expert = Actor(
            person_id=f"p-{tag}-expert",
            name="Eeva Esimerkki",
            organisation_id="org-wellbeing",
            organisation_name="Hyvinvointialue",
        )
        colleagues = [
            Actor(person_id=f"p-{tag}-{i}", name=name, organisation_id=org_id, organisation_name=org_name)
            for i, (name, org_id, org_name) in enumerate(
                (
                    ("Kalle Kuntoutusohjaaja", "org-kela", "Kela"),
                    ("Tiina Työvalmentaja", "org-employment", "Työllisyyspalvelut"),
                    ("Sami Sosiaalityöntekijä", "org-social", "Sosiaalipalvelut"),
                )
            )
        ]
        return cls(rng=rng, tag=tag, expert=expert, colleagues=colleagues)

    def opening(self) -> dict[str, Any]:
        return {
            "by": self.expert,
            "command_id": self._command_id(),
            "client_name": "Matti Meikäläinen",
            "segment": self.rng.choice(SEGMENTS),
            "language": "fi",
            "referring_party": self.rng.choice(REFERRERS),
            "expert_profession": "kuntoutusohjaaja",
            "expert_contact": "eeva@example.fi",
        }

    def opened(self, plan_id: str) -> None:
        self.plan_id = plan_id
        self.organisations_with_consent.add(self.expert.organisation_id)

    def next_command(self) -> tuple[str, dict[str, Any]]:
        """The name of the next PlanService method and its keyword arguments."""
        name = self._setup_command() or self._steady_command()
        fields = getattr(self, f"_{name}")()
        return name, {"by": self._actor(), "command_id": self._command_id(), **fields}

    def done(self, name: str, fields: dict[str, Any], item_id: str | None) -> None:
        """Note what the command changed, as the user's next form would show it."""
        if name == "give_consent":
            self.organisations_with_consent.add(fields["organisation_id"])
        elif name == "add_member":
            self.members[item_id] = 1
        elif name == "record_need":
            self.needs[item_id] = 1
        elif name == "set_goal":
            self.goals[item_id] = 1
        elif name == "plan_step":
            self.steps[item_id] = [1, "planned"]
        elif name == "update_need":
            self.needs[item_id] += 1
        elif name == "revise_goal":
            self.goals[item_id] += 1
        elif name == "settle_goal":
            del self.goals[item_id]
        elif name == "update_member":
            self.members[item_id] += 1
        elif name == "change_client_details":
            self.client_revision += 1
        elif name in ("update_step", "reschedule_step", "record_step_outcome", "progress_step"):
            self.steps[item_id][0] += 1
            if name == "progress_step":
                self.steps[item_id][1] = fields["status"]
                if fields["status"] in ("done", "cancelled"):
                    del self.steps[item_id]

    # The first commands: consents, the network, needs, goals, steps.
    def _setup_command(self) -> str | None:
        missing = [c for c in self.colleagues if c.organisation_id not in self.organisations_with_consent]
        if missing:
            return "give_consent"
        if len(self.needs) < 4:
            return "record_need"
        if len(self.members) < len(self.colleagues):
            return "add_member"
        if len(self.goals) < 3:
            return "set_goal"
        if len(self.steps) < 6:
            return "plan_step"
        return None

    def _steady_command(self) -> str:
        names, weights = zip(*STEADY_MIX, strict=True)
        name = self.rng.choices(names, weights)[0]
        if name in ("revise_goal", "settle_goal") and not self.goals:
            return "set_goal"
        if name == "settle_goal" and len(self.goals) < 3:
            return "revise_goal"
        if name in ("update_step", "reschedule_step", "record_step_outcome", "progress_step") and not self.steps:
            return "plan_step"
        if name == "update_member" and not self.members:
            return "add_note"
        return name

    def _give_consent(self) -> dict[str, Any]:
        colleague = next(c for c in self.colleagues if c.organisation_id not in self.organisations_with_consent)
        return {
            "organisation_id": colleague.organisation_id,
            "organisation_name": colleague.organisation_name,
            "valid_from": _today(),
        }

    def _add_member(self) -> dict[str, Any]:
        colleague = self.colleagues[len(self.members)]
        return {
            "person_id": colleague.person_id,
            "name": colleague.name,
            "profession": "asiantuntija",
            "organisation_id": colleague.organisation_id,
            "organisation_name": colleague.organisation_name,
            "contact": f"{colleague.person_id}@example.fi",
            "part": self._text(5, 20),
        }

    def _update_member(self) -> dict[str, Any]:
        member_id = self._pick(self.members)
        return {
            "member_id": member_id,
            "seen_revision": self.members[member_id],
            "profession": self.rng.choice(("asiantuntija", "kuntoutusohjaaja", "työvalmentaja")),
            "contact": f"{self.rng.randrange(10**6)}@example.fi",
            "part": self._text(5, 30),
        }

    def _record_need(self) -> dict[str, Any]:
        return {
            "category": self.rng.choice(NEED_CATEGORIES),
            "description": self._text(10, 60),
            "financial": self._text(0, 15),
        }

    def _update_need(self) -> dict[str, Any]:
        need_id = self._pick(self.needs)
        return {
            "need_id": need_id,
            "seen_revision": self.needs[need_id],
            "category": self.rng.choice(NEED_CATEGORIES),
            "description": self._text(10, 60),
            "financial": self._text(0, 15),
            "status": self.rng.choice(NEED_STATUSES),
        }

    def _set_goal(self) -> dict[str, Any]:
        return {
            "title": self._text(4, 12),
            "need_ids": self.rng.sample(sorted(self.needs), k=min(2, len(self.needs))),
            "target_date": _today() + timedelta(days=self.rng.randrange(30, 365)),
        }

    def _revise_goal(self) -> dict[str, Any]:
        goal_id = self._pick(self.goals)
        return {"goal_id": goal_id, "seen_revision": self.goals[goal_id], **self._set_goal()}

    def _settle_goal(self) -> dict[str, Any]:
        goal_id = self._pick(self.goals)
        return {
            "goal_id": goal_id,
            "seen_revision": self.goals[goal_id],
            "status": self.rng.choice(("achieved", "dropped")),
            "note": self._text(3, 20),
        }

    def _plan_step(self) -> dict[str, Any]:
        start = _today() + timedelta(days=self.rng.randrange(0, 60))
        return {
            "title": self._text(3, 8),
            "need_id": self.rng.choice(sorted(self.needs)),
            "responsible_member_id": self.rng.choice(sorted(self.members)),
            "planned_start": start,
            "planned_end": start + timedelta(days=self.rng.randrange(7, 90)),
            "service": self._text(1, 4),
        }

    def _update_step(self) -> dict[str, Any]:
        step_id = self._pick(self.steps)
        fields = self._plan_step()
        return {
            "step_id": step_id,
            "seen_revision": self.steps[step_id][0],
            "title": fields["title"],
            "need_id": fields["need_id"],
            "responsible_member_id": fields["responsible_member_id"],
            "service": fields["service"],
        }

    def _reschedule_step(self) -> dict[str, Any]:
        step_id = self._pick(self.steps)
        start = _today() + timedelta(days=self.rng.randrange(0, 90))
        return {
            "step_id": step_id,
            "seen_revision": self.steps[step_id][0],
            "planned_start": start,
            "planned_end": start + timedelta(days=self.rng.randrange(7, 90)),
            "reason": self._text(3, 15),
        }

    def _record_step_outcome(self) -> dict[str, Any]:
        step_id = self._pick(self.steps)
        return {"step_id": step_id, "seen_revision": self.steps[step_id][0], "outcome": self._text(10, 50)}

    def _progress_step(self) -> dict[str, Any]:
        step_id = self._pick(self.steps)
        revision, status = self.steps[step_id]
        new_status = "started" if status == "planned" else self.rng.choice(("done", "done", "cancelled"))
        return {
            "step_id": step_id,
            "seen_revision": revision,
            "status": new_status,
            "on": _today(),
            "outcome": self._text(0, 20),
        }

    def _record_measure(self) -> dict[str, Any]:
        return {
            "kind": self.rng.choice(("self_assessment", "work_ability_score")),
            "value": float(self.rng.randrange(0, 11)),
            "measured_on": _today() - timedelta(days=self.rng.randrange(0, 14)),
        }

    def _add_note(self) -> dict[str, Any]:
        return {
            "text": self._text(15, 120),
            "visibility": self.rng.choice(("professionals", "professionals", "client_and_professionals")),
        }

    def _change_client_details(self) -> dict[str, Any]:
        return {
            "seen_revision": self.client_revision,
            "client_name": self.rng.choice(("Matti Meikäläinen", "Matti K. Meikäläinen")),
            "segment": self.rng.choice(SEGMENTS),
            "language": self.rng.choice(("fi", "sv")),
            "referring_party": self.rng.choice(REFERRERS),
        }

    # helpers
    def _actor(self) -> Actor:
        return self.expert if self.rng.random() < 0.6 else self.rng.choice(self.colleagues)

    def _command_id(self) -> str:
        self.count += 1
        return f"{self.tag}-{self.count}"

    def _pick(self, items: dict[str, Any]) -> str:
        """An item to edit: recent items more often than old ones."""
        keys = list(items)
        index = len(keys) - 1 - min(int(self.rng.expovariate(1 / 4)), len(keys) - 1)
        return keys[index]

    def _text(self, low: int, high: int) -> str:
        return " ".join(self.rng.choices(WORDS, k=self.rng.randint(low, high))) if high else ""


def _today() -> Any:
    return datetime.now(UTC).date()


def apply_command(service: PlanService, workload: PlanWorkload, timings: Timings | None = None) -> None:
    """Give the workload's next command through the service; with `timings`, time the
    service's call alone.

    The workload makes up the command's fields (random texts, the item to edit) before
    the clock starts and notes the outcome after it stops, as a user's request arrives
    with its fields and the raw insert's row is made before its insert is timed: about
    0.02 ms a command that the service does not do.
    """
    name, fields = workload.next_command()
    call = getattr(service, name)
    outcome = timings.run(call, workload.plan_id, **fields) if timings is not None else call(workload.plan_id, **fields)
    workload.done(name, fields, outcome.item_id)


def open_workload_plan(service: PlanService, workload: PlanWorkload, timings: Timings | None = None) -> None:
    """Open the workload's plan through the service (with `timings`, the call alone is timed)."""
    opening = workload.opening()
    outcome = timings.run(service.open_plan, **opening) if timings is not None else service.open_plan(**opening)
    workload.opened(outcome.plan_id)


# -------------------------------------------------------------------- the sections


def run_store(target: Target, sizes: Sizes, seed: int, profile_dir: str | None = None) -> dict[str, Any]:
    rng = random.Random(seed)
    run_tag = secrets.token_hex(3)
    service = target.service()
    result: dict[str, Any] = {
        "store": target.describe,
        "aggregate_cache_size": target.settings.aggregate_cache_size,
        "baseline_rounds": [],
    }

    # The many small plans go first, into a fresh store, as in earlier runs (big snapshots
    # once slowed every snapshot lookup on SQLite; the rowid snapshot table ended that).
    print(f"  many plans: {sizes.many_plans:,} plans x {sizes.events_per_plan} events, {sizes.many_rounds} round(s) ...", flush=True)
    rounds = []
    for round_number in range(sizes.many_rounds):
        figures, small_plan_ids = append_many_plans(
            service, rng, f"{run_tag}-many{round_number}", sizes.many_plans, sizes.events_per_plan
        )
        rounds.append(figures)
        _print_append(f"     round {round_number + 1}: ", figures)
    result["many_plans"] = _pooled_rounds(rounds)

    print(f"  group commit: {sizes.groups} groups of {sizes.group_size} commands on different plans ...", flush=True)
    result["group_commit"], small_plans = append_in_groups(service, rng, f"{run_tag}-groups", sizes.groups, sizes.group_size)
    result["command_breakdown"] = command_breakdown(service, rng, small_plans, sizes.groups * sizes.group_size)

    result["baseline_rounds"].append(baseline_round(target, service, rng, sizes.baseline_inserts, "after the many plans"))

    print(f"  one plan: {sizes.one_plan_events:,} events ...", flush=True)
    big, one_plan = append_one_plan(
        service, rng, f"{run_tag}-big", sizes.one_plan_events, sizes.window_starts, sizes.window
    )
    result["one_plan"] = one_plan
    service.flush_snapshots()  # written in the background, after the commands were answered
    result["stored_sizes"] = stored_sizes(service, big.plan_id)
    sizes_seen = result["stored_sizes"]
    print(
        f"     stored event median {sizes_seen['event_bytes']['median']} B;"
        f" latest snapshot {sizes_seen['latest_snapshot_bytes']:,} B at version {sizes_seen['latest_snapshot_version']:,};"
        f" events {sizes_seen['events_total_bytes']:,} B, {sizes_seen['snapshots_kept']} snapshots"
        f" {sizes_seen['snapshots_total_bytes']:,} B in all",
        flush=True,
    )

    result["baseline_rounds"].append(baseline_round(target, service, rng, sizes.baseline_inserts, "after the one plan"))

    print("  opening plans ...", flush=True)
    plans_by_size: dict[int, str] = {}
    for size in sizes.open_sizes:
        if size == sizes.events_per_plan:
            plans_by_size[size] = small_plan_ids[len(small_plan_ids) // 2]
        elif size == sizes.one_plan_events:
            plans_by_size[size] = big.plan_id
        else:
            workload = PlanWorkload.new(random.Random(rng.random()), f"{run_tag}-{size}")
            open_workload_plan(service, workload)
            grow_plan(service, workload, size)
            plans_by_size[size] = workload.plan_id
    service.flush_snapshots()
    opens: dict[str, Any] = {}
    uncached = target.service(cache=False)
    replaying = target.service(cache=False, snapshots=False)
    for size in sizes.open_sizes:
        opens[str(size)] = measure_opens(service, uncached, replaying, plans_by_size[size], sizes.open_repeats[size])
        _print_opens(size, opens[str(size)])
    largest = max(sizes.open_sizes)
    if largest == sizes.one_plan_events:
        # Typical rather than best case: events recorded after the latest snapshot.
        for _ in range(sizes.after_snapshot):
            apply_command(service, big)
        size = largest + sizes.after_snapshot
        opens[str(size)] = measure_opens(service, uncached, replaying, big.plan_id, sizes.after_snapshot_repeats)
        _print_opens(size, opens[str(size)])
    result["opens"] = opens

    result["baseline_rounds"].append(baseline_round(target, service, rng, sizes.baseline_inserts, "after the opens"))
    result["baseline"] = _pooled_baseline(result["baseline_rounds"])
    result["ratios"] = ratios(result)
    result["informative_ratios"] = informative_ratios(result)
    result["targets_met"] = targets_met(result, largest)
    group = result["group_commit"]
    group["ratio_to_raw_insert"] = round(group["per_event_ms"]["median"] / result["baseline"]["median"], 2)

    if profile_dir:
        result["profiles"] = profile(service, uncached, big, Path(profile_dir), target.name)
    return result


def append_one_plan(
    service: PlanService, rng: random.Random, tag: str, events: int, window_starts: tuple[int, ...], window: int
) -> tuple[PlanWorkload, dict[str, Any]]:
    """Grow one plan to `events` events; time the commands in windows, one at a time.

    Inside a window each command goes through the service as a user's would, and is
    timed. Between windows the plan grows faster: the same commands on the aggregate,
    saved through the same service (same mapper, encryption and snapshots) every 100
    events. With `window_starts=(0,)` and `window=events` every command is timed.
    """
    workload = PlanWorkload.new(random.Random(rng.random()), tag)
    windows = []
    growth = {"events": 0, "elapsed_s": 0.0}
    started = time.perf_counter()
    for start in window_starts:
        if workload.count < start:
            before = time.perf_counter()
            growth["events"] += start - workload.count
            grow_plan(service, workload, start)
            growth["elapsed_s"] += time.perf_counter() - before
        timings = Timings()
        snapshot_latencies = []
        first = workload.count + 1
        for _ in range(min(window, events - workload.count)):
            if workload.count == 0:
                open_workload_plan(service, workload, timings)
            else:
                apply_command(service, workload, timings)
            if workload.count % SNAPSHOT_INTERVAL == 0:
                snapshot_latencies.append(timings.wall[-1])
        figures = {
            "events": f"{first}-{workload.count}",
            "first": first,
            "last": workload.count,
            **timings.summary(),
            "snapshot_saves_ms": [round(s * 1000, 3) for s in snapshot_latencies],
            "load_average_1min": _load(),
        }
        if len(timings) >= 2_000:
            figures["by_segment"] = [
                {"events": f"{first + i}-{first + min(i + 1_000, len(timings)) - 1}", **timings.summary(i, i + 1_000)}
                for i in range(0, len(timings), 1_000)
            ]
        windows.append(figures)
        print(
            f"     events {figures['events']:>11} one at a time: median {figures['median']:8.2f} ms,"
            f" p95 {figures['p95']:8.2f} ms, CPU median {figures['cpu_median']:8.2f} ms (load {figures['load_average_1min']})",
            flush=True,
        )
    if workload.count < events:
        before = time.perf_counter()
        growth["events"] += events - workload.count
        grow_plan(service, workload, events)
        growth["elapsed_s"] += time.perf_counter() - before
    elapsed = time.perf_counter() - started
    timed = sum(w["n"] for w in windows)
    one_at_a_time_s = _estimated_total_s(windows, events)
    return workload, {
        "events": events,
        "timed_one_at_a_time": timed,
        "windows": windows,
        "one_at_a_time_s": round(one_at_a_time_s, 1),
        "one_at_a_time_events_per_s": round(events / one_at_a_time_s, 1),
        "one_at_a_time_is_estimate": timed < events,
        "batched_growth": {
            "events": growth["events"],
            "elapsed_s": round(growth["elapsed_s"], 2),
            "events_per_s": round(growth["events"] / growth["elapsed_s"], 1) if growth["elapsed_s"] else None,
        },
        "elapsed_s": round(elapsed, 1),
    }


def grow_plan(service: PlanService, workload: PlanWorkload, version: int) -> None:
    """Run the workload's commands on the aggregate until the plan has `version` events.

    The fast path between timed windows: one `get_plan` and one save per 100 events,
    cut at the snapshot interval so snapshots are taken exactly as one at a time. The
    grown plan is cached at the end, as the service's own commands leave it: otherwise
    the next timed command ran on the stale cached plan, clashed in the store and read
    every event since (48 ms after growing to 1,000 events, 218 ms to 5,000).
    """
    plan = service.get_plan(workload.plan_id)
    while workload.count < version:
        name, fields = workload.next_command()
        item_id = getattr(ClientPlan, name)(plan, at=service.clock(), **fields)
        workload.done(name, fields, item_id)
        if plan.version % SNAPSHOT_INTERVAL == 0 or workload.count == version:
            service.save(plan)
    service._cache_saved(plan)


def _estimated_total_s(windows: list[dict[str, Any]], events: int) -> float:
    """Time to append every event one at a time: the windows' mean latencies,
    interpolated linearly between the windows' middles (flat beyond the ends)."""
    points = [((w["first"] + w["last"]) / 2, w["mean"] / 1000) for w in windows]
    total = 0.0
    for version in range(1, events + 1):
        if version <= points[0][0]:
            total += points[0][1]
        elif version >= points[-1][0]:
            total += points[-1][1]
        else:
            for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
                if x0 <= version <= x1:
                    total += y0 + (y1 - y0) * (version - x0) / (x1 - x0)
                    break
    return total


def append_many_plans(
    service: PlanService, rng: random.Random, tag: str, plans: int, events_per_plan: int
) -> tuple[dict[str, Any], list[str]]:
    """Open `plans` plans, then give each `events_per_plan - 1` commands, interleaved.

    The order is shuffled (as many users working at once) but keeps each plan's own order.
    """
    workloads = [PlanWorkload.new(random.Random(rng.random()), f"{tag}-{i}") for i in range(plans)]
    order = [i for i in range(plans) for _ in range(events_per_plan - 1)]
    rng.shuffle(order)
    commands = Timings()
    openings = Timings()
    started = time.perf_counter()
    for workload in workloads:
        open_workload_plan(service, workload, openings)
    for index in order:
        apply_command(service, workloads[index], commands)
    elapsed = time.perf_counter() - started
    events = plans * events_per_plan
    return {
        "plans": plans,
        "events": events,
        "elapsed_s": round(elapsed, 3),
        "events_per_s": round(events / elapsed, 1),
        "latency_ms": openings.merged(commands).summary(),
        "open_plan_ms": openings.summary(),
        "commands_ms": commands.summary(),
        "load_average_1min": _load(),
    }, [w.plan_id for w in workloads]


def append_in_groups(service: PlanService, rng: random.Random, tag: str, groups: int, group_size: int) -> dict[str, Any]:
    """What a group commit would cost: `group_size` commands on different plans saved
    in one transaction (`PlanService.save(*plans)`), per event.

    Not how `PlanService` saves (one command, one transaction, so that each command has
    its own conflicts, idempotency and bounded lock waits); this measures what batching
    the commands that arrive together could gain. Each group: `get_plan` of each plan,
    one command on each, one save; timed as a whole, divided by the group size.
    """
    workloads = [PlanWorkload.new(random.Random(rng.random()), f"{tag}-{i}") for i in range(group_size * 4)]
    for workload in workloads:
        open_workload_plan(service, workload)
    per_event = Timings()

    def one_group(members: list[PlanWorkload]) -> None:
        plans = []
        for workload in members:
            plan = service.get_plan(workload.plan_id)
            name, fields = workload.next_command()
            workload.done(name, fields, getattr(ClientPlan, name)(plan, at=service.clock(), **fields))
            plans.append(plan)
        service.save(*plans)

    for _ in range(groups):
        members = rng.sample(workloads, group_size)
        before_wall, before_cpu = time.perf_counter(), time.thread_time()
        one_group(members)
        per_event.cpu.append((time.thread_time() - before_cpu) / group_size)
        per_event.wall.append((time.perf_counter() - before_wall) / group_size)
    figures = {"groups": groups, "group_size": group_size, "per_event_ms": per_event.summary(), "load_average_1min": _load()}
    print(
        f"     per event median {figures['per_event_ms']['median']:.3f} ms, p95 {figures['per_event_ms']['p95']:.3f} ms"
        f" (groups of {group_size}; load {figures['load_average_1min']})",
        flush=True,
    )
    return figures, workloads


def command_breakdown(service: PlanService, rng: random.Random, workloads: list[PlanWorkload], commands: int) -> dict[str, Any]:
    """Where a small plan's command spends its time, step by step (medians, ms).

    Each command is the service's own method, as in the other sections; the steps are
    told apart by clocks put around the service's own objects for this section only:
    `_plan_for_command` (the erasure check from the keyring's cache, the cached plan),
    `save` (so the command on the aggregate is what runs before it), the mapper's
    `to_stored_event` (encoding and encryption, with the collecting of the event before
    it) and the recorder's `insert_events` (the insert, its whole transaction; on
    PostgreSQL one call of `domain.postgres`'s function, which takes the table lock and
    sends the `NOTIFY`); `after_insert` is the rest (the snapshot check, caching the
    saved plan, the waking of subscribers and the outcome). Earlier this section redid
    the steps by hand and collected the event the library's way, whose protocol checks
    `PlanService.save` skips, so it overstated the encoding step.
    """
    marks: dict[str, float] = {}
    steps: dict[str, list[float]] = {name: [] for name in ("plan", "command", "encode_encrypt", "insert", "after_insert", "total")}
    commanding = threading.get_ident()

    def clocked(action: Callable[..., Any], before: str | None, after: str | None) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() != commanding:  # the snapshot writer shares the mapper
                return action(*args, **kwargs)
            if before:
                marks.setdefault(before, time.perf_counter())
            value = action(*args, **kwargs)
            if after:
                marks[after] = time.perf_counter()
            return value

        return run

    instrumented = (
        (service, "_plan_for_command", None, "got"),
        (service, "save", "saving", None),
        (service.mapper, "to_stored_event", None, "encoded"),
        (service.recorder, "insert_events", None, "inserted"),
    )
    for workload in workloads:
        service.get_plan(workload.plan_id)  # the group commit saved them past their cached copies
    for owner, name, before, after in instrumented:
        setattr(owner, name, clocked(getattr(owner, name), before, after))
    try:
        for _ in range(commands):
            workload = rng.choice(workloads)
            name, fields = workload.next_command()
            call = getattr(service, name)
            marks.clear()
            started = time.perf_counter()
            outcome = call(workload.plan_id, **fields)
            finished = time.perf_counter()
            workload.done(name, fields, outcome.item_id)
            points = (started, marks["got"], marks["saving"], marks["encoded"], marks["inserted"], finished)
            for step, (begin, end) in zip(steps, zip(points, points[1:])):
                steps[step].append(end - begin)
            steps["total"].append(finished - started)
    finally:
        for owner, name, _before, _after in instrumented:
            delattr(owner, name)
    figures = {name: round(statistics.median(values) * 1000, 3) for name, values in steps.items()}
    print("     command breakdown (median ms): " + ", ".join(f"{k} {v}" for k, v in figures.items()), flush=True)
    return {"commands": commands, "median_ms": figures, "load_average_1min": _load()}


def _pooled_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of each figure over the rounds, and the rounds themselves."""

    def median_of(*path: str) -> float:
        values = []
        for figures in rounds:
            for key in path:
                figures = figures[key]
            values.append(figures)
        return round(statistics.median(values), 4)

    return {
        "plans": rounds[0]["plans"],
        "events": rounds[0]["events"],
        "events_per_s": median_of("events_per_s"),
        "latency_ms": {
            "median": median_of("latency_ms", "median"),
            "p95": median_of("latency_ms", "p95"),
            "cpu_median": median_of("latency_ms", "cpu_median"),
        },
        "open_plan_ms": {"median": median_of("open_plan_ms", "median"), "p95": median_of("open_plan_ms", "p95")},
        "commands_ms": {"median": median_of("commands_ms", "median"), "p95": median_of("commands_ms", "p95")},
        "rounds": rounds,
    }


def measure_opens(
    service: PlanService, uncached: PlanService, replaying: PlanService, plan_id: str, repeats: int
) -> dict[str, Any]:
    """Open the plan `repeats` times each way, interleaved, after one warm-up each."""
    ways: dict[str, Callable[[], Any]] = {
        "snapshot": lambda: uncached.get_plan(plan_id),
        "replay": lambda: replaying.get_plan(plan_id),
        "cached": lambda: service.get_plan(plan_id),
    }
    samples = {way: Timings() for way in ways}
    versions = {way: get().version for way, get in ways.items()}  # warm-up: keys, connections, cache
    if len(set(versions.values())) != 1:
        raise AssertionError(f"The three ways opened different versions: {versions}")
    for _ in range(repeats):
        for way, get in ways.items():
            samples[way].run(get)
    return {
        "version": versions["snapshot"],
        "repeats": repeats,
        "load_average_1min": _load(),
        **{way: timings.summary() for way, timings in samples.items()},
    }


def stored_sizes(service: PlanService, plan_id: str) -> dict[str, Any]:
    """Sizes of the plan's stored (encrypted) events and of the snapshots kept."""
    identifier = uuid.UUID(plan_id)
    events = [len(e.state) for e in service.recorder.select_events(identifier)]
    snapshots = service.snapshots.recorder.select_events(identifier) if service.snapshots else []
    latest = snapshots[-1] if snapshots else None
    return {
        "event_bytes": {"median": statistics.median(events), "mean": round(statistics.fmean(events)), "max": max(events)},
        "events_total_bytes": sum(events),
        "latest_snapshot_bytes": len(latest.state) if latest else None,
        "latest_snapshot_version": latest.originator_version if latest else None,
        "snapshots_kept": len(snapshots),
        "snapshots_total_bytes": sum(len(s.state) for s in snapshots),
    }


def baseline_round(target: Target, service: PlanService, rng: random.Random, inserts: int, when: str) -> dict[str, Any]:
    """Raw inserts of rows sized like the stored events so far, one transaction each."""
    sizes = _stored_event_sizes(service)
    row_sizes = [rng.choice(sizes) for _ in range(inserts)]
    latencies = target.raw_insert(row_sizes, rng)
    result = {
        "when": when,
        "inserts": inserts,
        "row_bytes_mean": round(statistics.fmean(row_sizes)),
        "load_average_1min": _load(),
        **summary(latencies),
    }
    print(f"  baseline ({when}): raw insert median {result['median']:.3f} ms, p95 {result['p95']:.3f} ms", flush=True)
    return result


def _stored_event_sizes(service: PlanService) -> list[int]:
    recorder = service.recorder
    notifications = recorder.select_notifications(start=None, limit=5_000)
    return [len(n.state) for n in notifications] or [600]


def _sqlite_raw_inserts(db_path: Path, row_sizes: list[int], rng: random.Random) -> list[float]:
    connection = sqlite3.connect(db_path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute(
            "CREATE TABLE IF NOT EXISTS bench_raw_events (originator_id TEXT, originator_version INTEGER,"
            " topic TEXT, state BLOB, PRIMARY KEY (originator_id, originator_version))"
        )
        originator = uuid.uuid4().hex
        topic = "domain.plan:ClientPlan.NoteAdded"
        latencies = []
        for version, size in enumerate(row_sizes, start=1):
            state = rng.randbytes(size)
            before = time.perf_counter()
            connection.execute("INSERT INTO bench_raw_events VALUES (?, ?, ?, ?)", (originator, version, topic, state))
            latencies.append(time.perf_counter() - before)
        return latencies
    finally:
        connection.close()


def _postgres_raw_inserts(conninfo: str, schema: str, row_sizes: list[int], rng: random.Random) -> list[float]:
    import psycopg

    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute(
            f'CREATE TABLE IF NOT EXISTS "{schema}".bench_raw_events (originator_id uuid NOT NULL,'
            " originator_version bigint NOT NULL, topic text, state bytea, notification_id bigserial,"
            " PRIMARY KEY (originator_id, originator_version))"
        )
        connection.execute(
            f'CREATE UNIQUE INDEX IF NOT EXISTS bench_raw_events_nid ON "{schema}".bench_raw_events (notification_id)'
        )
        statement = (
            f'INSERT INTO "{schema}".bench_raw_events (originator_id, originator_version, topic, state)'
            " VALUES (%s, %s, %s, %s) RETURNING notification_id"
        )
        originator = uuid.uuid4()
        topic = "domain.plan:ClientPlan.NoteAdded"
        latencies = []
        with connection.cursor() as cursor:
            for version, size in enumerate(row_sizes, start=1):
                state = rng.randbytes(size)
                before = time.perf_counter()
                cursor.execute(statement, (originator, version, topic, state))
                cursor.fetchone()
                latencies.append(time.perf_counter() - before)
        return latencies


def _pooled_baseline(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    medians = [r["median"] for r in rounds]
    means = [r["mean"] for r in rounds]
    return {
        "median": round(statistics.median(medians), 4),
        "mean": round(statistics.median(means), 4),
        "p95": round(statistics.median(r["p95"] for r in rounds), 4),
        "round_medians": medians,
        "round_means": means,
    }


def ratios(result: dict[str, Any]) -> dict[str, float]:
    """Per-event append cost over the raw insert's: medians over its median, and the
    mean over all of one plan's events over its mean.

    A mean counts the slow few (WAL checkpoints, a wait for the snapshot writer, a
    collection) and a median does not; the raw inserts have their own checkpoints,
    which their mean counts. Until 3 Dec the mean was divided by the raw median; that
    figure is kept in `informative_ratios`.
    """
    base = result["baseline"]["median"]
    small, large = _small_and_large(result["one_plan"])
    one = result["one_plan"]
    mean_ms = one["one_at_a_time_s"] * 1000 / one["events"]
    return {
        "one_plan_small": round(small["median"] / base, 2),
        "one_plan_large": round(large["median"] / base, 2),
        "one_plan_mean_over_all_events": round(mean_ms / result["baseline"]["mean"], 2),
        "many_plans": round(result["many_plans"]["latency_ms"]["median"] / base, 2),
    }


def informative_ratios(result: dict[str, Any]) -> dict[str, float]:
    """Ratios shown beside the targets' own: the mean over one plan's events over the raw
    insert's median (the mean ratio of the runs before 3 Dec)."""
    one = result["one_plan"]
    mean_ms = one["one_at_a_time_s"] * 1000 / one["events"]
    return {"one_plan_mean_over_raw_insert_median": round(mean_ms / result["baseline"]["median"], 2)}


def _small_and_large(one_plan: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The timed stretch on the young plan and the one on the full-grown plan."""
    windows = one_plan["windows"]
    if len(windows) == 1 and "by_segment" in windows[0]:
        segments = windows[0]["by_segment"]
        return segments[0], segments[-1]
    return windows[0], windows[-1]


def targets_met(result: dict[str, Any], largest: int) -> dict[str, bool]:
    opens = result["opens"].get(str(largest), {})
    snapshot_median = opens.get("snapshot", {}).get("median")
    within = {name: ratio <= APPEND_RATIO_TARGET for name, ratio in result["ratios"].items()}
    return {
        f"open_{largest}_events_with_snapshot_under_{OPEN_TARGET_MS:g}_ms": snapshot_median is not None
        and snapshot_median < OPEN_TARGET_MS,
        **{f"append_{name}_within_{APPEND_RATIO_TARGET:g}x_raw_insert": met for name, met in within.items()},
    }


def profile(
    service: PlanService, uncached: PlanService, workload: PlanWorkload, directory: Path, store: str
) -> dict[str, Any]:
    """Where the time goes on the biggest plan (--profile): a breakdown of a snapshot
    open and of a command's copy, then cProfile of 30 commands and 20 snapshot opens."""
    breakdown = time_breakdown(service, workload.plan_id)
    print(f"\n  breakdown {store} (median ms): " + ", ".join(f"{k} {v}" for k, v in breakdown.items()), flush=True)
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, action in (
        ("commands", lambda: [apply_command(service, workload) for _ in range(30)]),
        ("open_snapshot", lambda: [uncached.get_plan(workload.plan_id) for _ in range(20)]),
    ):
        profiler = cProfile.Profile()
        profiler.runcall(action)
        path = directory / f"event_store_{store}_{name}.prof"
        profiler.dump_stats(path)
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(12)
        print(f"\n  profile {store} {name} (tottime):\n{text.getvalue()}", flush=True)
        written[name] = str(path)
    return {"breakdown_ms": breakdown, "cprofile_files": written}


def time_breakdown(service: PlanService, plan_id: str, repeats: int = 7) -> dict[str, float]:
    """The steps of opening a plan from its snapshot, and of the copy every command makes.

    Each step is timed on its own, `repeats` times, through the same objects the service
    uses (recorders, keyring, mapper, the snapshot codec); medians in milliseconds.
    `decode_snapshot` is the codec's whole decoding (its decompression included), which
    the library's JSON transcoder no longer does for a plan's snapshot.
    """
    import copy

    from domain.crypto import ENCRYPTED, _associated_data
    from domain.snapshots import decode_plan_snapshot, plan_snapshot_json

    identifier = uuid.UUID(plan_id)
    mapper = service.mapper
    steps: dict[str, list[float]] = {}

    def timed(name: str, action: Callable[[], Any]) -> Any:
        before = time.perf_counter()
        value = action()
        steps.setdefault(name, []).append(time.perf_counter() - before)
        return value

    for _ in range(repeats):
        timed("is_erased", lambda: service.keyring.is_erased(identifier))
        stored = timed(
            "fetch_snapshot_row",
            lambda: service.snapshots.recorder.select_events(identifier, desc=True, limit=1)[0],
        )
        timed("fetch_events_after_it", lambda: service.recorder.select_events(identifier, gt=stored.originator_version))
        cipher = service.keyring.cipher_for(identifier)
        body = stored.state[len(ENCRYPTED) :]
        plain = timed("decrypt_snapshot", lambda: cipher.decrypt(body[:12], body[12:], _associated_data(stored)))
        timed("decompress_snapshot", lambda: plan_snapshot_json(plain))
        timed("decode_snapshot", lambda: decode_plan_snapshot(plain, identifier, stored.originator_version))
        snapshot = timed("decrypt_decode_build_snapshot", lambda: mapper.to_domain_event(stored))
        plan = timed("snapshot_to_plan", lambda: snapshot.mutate(None))
        timed("take_snapshot_object", lambda: type(plan).Snapshot.take(plan))
        taken = type(plan).Snapshot.take(plan)
        timed("encode_encrypt_snapshot", lambda: mapper.to_stored_event(taken))
        cached = service.repository.cache.get(identifier) if service.repository.cache else plan
        timed("deepcopy_of_cached_plan", lambda: copy.deepcopy(cached))
    figures = {name: round(statistics.median(values) * 1000, 3) for name, values in steps.items()}
    tracemalloc.start()  # the plan's objects, decoded afresh from its snapshot
    decoded = mapper.to_domain_event(stored).mutate(None)
    figures["plan_in_memory_mb"] = round(tracemalloc.get_traced_memory()[0] / 1e6, 1)
    tracemalloc.stop()
    del decoded
    figures["snapshot_bytes"] = len(stored.state)
    figures["plan_version"] = plan.version
    return figures


# ------------------------------------------------------------------------ figures


class Timings:
    """Wall-clock time and this thread's CPU time of each timed call.

    On a shared machine the wall time also counts waiting for a core; the CPU time
    does not (nor waiting for the disk or the server), so the two together tell the
    code's own cost from the machine's contention.
    """

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def run(self, action: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        wall, cpu = time.perf_counter(), time.thread_time()
        value = action(*args, **kwargs)
        self.cpu.append(time.thread_time() - cpu)
        self.wall.append(time.perf_counter() - wall)
        return value

    def summary(self, start: int = 0, stop: int | None = None) -> dict[str, float]:
        return summary(self.wall[start:stop], self.cpu[start:stop])

    def merged(self, other: Timings) -> Timings:
        both = Timings()
        both.wall, both.cpu = self.wall + other.wall, self.cpu + other.cpu
        return both

    def __len__(self) -> int:
        return len(self.wall)


def summary(seconds: list[float], cpu_seconds: list[float] | None = None) -> dict[str, float]:
    """Median, p95, mean, min and max in milliseconds (and the CPU time's median, p95, mean)."""
    ms = sorted(s * 1000 for s in seconds)
    figures = {
        "n": len(ms),
        "median": round(statistics.median(ms), 4),
        "p95": round(_percentile(ms, 95), 4),
        "mean": round(statistics.fmean(ms), 4),
        "min": round(ms[0], 4),
        "max": round(ms[-1], 4),
    }
    if cpu_seconds:
        cpu = sorted(s * 1000 for s in cpu_seconds)
        figures["cpu_median"] = round(statistics.median(cpu), 4)
        figures["cpu_p95"] = round(_percentile(cpu, 95), 4)
        figures["cpu_mean"] = round(statistics.fmean(cpu), 4)
    return figures


def _percentile(ordered: list[float], percent: float) -> float:
    """Nearest-rank percentile of an ordered list."""
    rank = max(1, -(-len(ordered) * percent // 100))
    return ordered[int(rank) - 1]


def machine_info() -> dict[str, Any]:
    import cryptography
    import eventsourcing
    import msgspec
    import psycopg

    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "eventsourcing": eventsourcing.__version__ if hasattr(eventsourcing, "__version__") else _dist_version("eventsourcing"),
        "msgspec": msgspec.__version__,
        "cryptography": cryptography.__version__,
        "psycopg": psycopg.__version__,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty_paths": len((_git("status", "--porcelain") or "").splitlines()),
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def _load() -> float | None:
    """The 1-minute load average: above the CPU count, other work competed with the run."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _print_append(indent: str, section: dict[str, Any]) -> None:
    latency = section["latency_ms"]
    print(
        f"{indent}{section['events']:,} events in {section['elapsed_s']:.1f} s = {section['events_per_s']:,.0f} events/s;"
        f" per command median {latency['median']:.2f} ms, p95 {latency['p95']:.2f} ms,"
        f" CPU median {latency['cpu_median']:.2f} ms (load {section['load_average_1min']})",
        flush=True,
    )


def _print_opens(size: int, opens: dict[str, Any]) -> None:
    cells = ", ".join(f"{way} {opens[way]['median']:.2f}/{opens[way]['p95']:.2f}" for way in ("snapshot", "replay", "cached"))
    print(f"     open {size:>6,} events (median/p95 ms): {cells} (load {opens['load_average_1min']})", flush=True)


def print_report(report: dict[str, Any]) -> None:
    machine = report["machine"]
    load = "/".join(f"{x:.1f}" for x in machine["load_average_at_start"][:1] + machine["load_average_at_end"][:1])
    print(
        f"\nEvent store benchmark ({report['mode']}), {machine['date']}, {machine['cpu_count']} CPUs"
        f" (1-min load at start/end {load}), Python {machine['python']}, commit {(machine['git_commit'] or '?')[:10]}"
    )
    for store, result in report["stores"].items():
        if "skipped" in result:
            print(f"\n{store}: skipped ({result['skipped']})")
            continue
        print(f"\n{store}")
        print(f"  {'measure':<46} {'median ms':>10} {'p95 ms':>10} {'CPU med ms':>10}  note")
        for label, figures, note in report_rows(result):
            cells = [figures.get(key) for key in ("median", "p95", "cpu_median")]
            text = ["" if value is None else f"{value:.3f}" for value in cells]
            print(f"  {label:<46} {text[0]:>10} {text[1]:>10} {text[2]:>10}  {note}")
        print(
            "  ratios append / raw insert (medians over its median, the mean over its mean): "
            + ", ".join(f"{k} {v}x" for k, v in result["ratios"].items())
        )
        informative = result.get("informative_ratios", {})
        if informative:
            print("  also: " + ", ".join(f"{k} {v}x" for k, v in informative.items()))
        for name, met in result["targets_met"].items():
            print(f"  target {name}: {'met' if met else 'MISSED'}")


def markdown_tables(report: dict[str, Any]) -> str:
    """The figures of a results file as one Markdown table, the stores side by side
    (for docs/performance.md: `--markdown benchmarks/results/event_store.json`)."""
    stores = [(name, result) for name, result in report["stores"].items() if "skipped" not in result]
    rows: dict[str, dict[str, tuple[dict[str, Any], str]]] = {}
    for name, result in stores:
        for label, figures, note in report_rows(result):
            rows.setdefault(label, {})[name] = (figures, note)
    header = "| measure | " + " | ".join(f"{name} median | p95 | CPU median" for name, _ in stores) + " |"
    lines = [header, "|---|" + "---:|---:|---:|" * len(stores)]

    def cell(value: float | None) -> str:
        return "" if value is None else f"{value:,.2f}" if value < 100 else f"{value:,.0f}"

    for label, by_store in rows.items():
        cells = []
        for name, _ in stores:
            figures, _note = by_store.get(name, ({}, ""))
            cells.extend(cell(figures.get(key)) for key in ("median", "p95", "cpu_median"))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("| ratio to the raw insert (median / median, mean / mean) | " + " | ".join(name for name, _ in stores) + " |")
    lines.append("|---|" + "---:|" * len(stores))
    for key in stores[0][1]["ratios"]:
        lines.append(f"| {key} | " + " | ".join(f"{result['ratios'][key]:,.1f}x" for _, result in stores) + " |")
    return "\n".join(lines)


def report_rows(result: dict[str, Any]) -> list[tuple[str, dict[str, Any], str]]:
    """(label, figures with median/p95/cpu_median, note) for each line of the table."""
    one, many, base = result["one_plan"], result["many_plans"], result["baseline"]
    rows: list[tuple[str, dict[str, Any], str]] = []
    for window in one["windows"]:
        for part in window.get("by_segment", [window]):
            rows.append((f"append one plan, events {part['events']}", part, "one at a time"))
    how = "estimated from the windows" if one["one_at_a_time_is_estimate"] else "measured"
    rows.append(
        (
            f"append one plan, all {one['events']:,} events (mean)",
            {"median": one["one_at_a_time_s"] * 1000 / one["events"]},
            f"mean; {one['one_at_a_time_events_per_s']:,.1f} events/s ({how})",
        )
    )
    rows.append(
        (
            f"append {many['plans']:,} plans x {many['events'] // many['plans']} events",
            many["latency_ms"],
            f"{many['events_per_s']:,.0f} events/s",
        )
    )
    if "group_commit" in result:
        group = result["group_commit"]
        rows.append(
            (
                f"append in groups of {group['group_size']} plans' commands, one transaction, per event",
                group["per_event_ms"],
                f"{group['groups']} groups; not how commands are saved",
            )
        )
    rounds = "/".join(format(m, ".3f") for m in base["round_medians"])
    mean = f"; mean {base['mean']:.3f}" if "mean" in base else ""
    rows.append(("raw insert, one transaction per row", base, f"rounds {rounds}{mean}"))
    for size, opens in result["opens"].items():
        for way in ("snapshot", "replay", "cached"):
            rows.append((f"open {int(size):,} events, {way}", opens[way], f"n={opens[way]['n']}"))
    return rows


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: about a minute")
    parser.add_argument(
        "--out",
        help=f"JSON results file (default {DEFAULT_OUT.relative_to(REPO_ROOT)}; --quick: {QUICK_OUT.name})",
    )
    parser.add_argument(
        "--stores",
        type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
        default=["sqlite", "postgres"],
        help="comma-separated: sqlite,postgres (default both)",
    )
    parser.add_argument(
        "--exhaustive",
        action="store_true",
        help="time every command of the one-plan section one at a time (full: about 20 minutes a store)",
    )
    parser.add_argument("--markdown", metavar="JSON", help="print the figures of a results file as Markdown; run nothing")
    parser.add_argument("--seed", type=int, default=2, help="seed of the command mix (default 2)")
    parser.add_argument("--profile", metavar="DIR", help="also cProfile commands and opens on the biggest plan into DIR")
    parser.add_argument("--pg-host", default=os.environ.get("POLKU_TEST_PG_HOST", "127.0.0.1"))
    parser.add_argument("--pg-port", type=int, default=int(os.environ.get("POLKU_TEST_PG_PORT", "5432")))
    parser.add_argument("--pg-db", default=os.environ.get("POLKU_TEST_PG_DB", "polku_test"))
    parser.add_argument("--pg-user", default=os.environ.get("POLKU_TEST_PG_USER", "postgres"))
    parser.add_argument("--pg-password", default=os.environ.get("POLKU_TEST_PG_PASSWORD", ""))
    args = parser.parse_args(argv)
    unknown = set(args.stores) - {"sqlite", "postgres"}
    if unknown:
        parser.error(f"unknown store(s): {', '.join(sorted(unknown))}")
    return args


if __name__ == "__main__":
    sys.exit(main())
