"""Several instances benchmark (issue 5): experts editing many plans, viewers on every instance.

Four set-ups in one run, each with the same plans, viewers and load:

- **sqlite-1**, the baseline: one ``polku serve`` over SQLite files (as issue 3 measured it);
- **postgres-1**: one ``polku serve`` over PostgreSQL;
- **postgres-2**: two ``polku serve`` processes (ports of their own, separate data folders,
  the same POLKU_* database, master key and secret key) over the same PostgreSQL database;
- **postgres-2p**: the same two web instances plus ``polku project``, the read model's
  dedicated writer (docs/deployment.md): the web instances only serve, the projector only
  projects, so its CPU per edit is the projection's whole cost in a process of its own.

The PostgreSQL database is a fresh one per run (``polku_bench_<hex>`` on 127.0.0.1:5432),
filled once with the plans and dropped at the end, even on error (so are the data folders
and every process started here).

The world is the live timeline's (``benchmarks/live_timeline.py``, reused, not copied):
1,000 plans made through ``PlanService`` (copies of the demo's open plans), the read model
rebuilt, the demo accounts; 2,000 signed-in viewers (1-5 a plan, each a websocket as
htmx opens it) in viewer processes (``live_viewers.py``); the need-edit form posted as
htmx posts it, open loop (``live_load.py``) at increasing rates until one saturates; every
edit writes a marker that the viewers note on arrival.

**Across instances.** With two instances, the edits of plan ``p`` go to instance ``p % 2``
(so half of the edits to each), and the viewers of each plan are dealt out starting with the
OTHER instance: every plan has at least one viewer on the instance that did not take the
edit. The latency reported as "across" is from sending an edit to the moment every viewer of
the plan on the other instance has it; "every viewer" is the same over both instances.

**CPU per edit.** Per step, from /proc: the CPU seconds of each instance (all its threads),
of the PostgreSQL backends connected to the benchmark's database (listed from
``pg_stat_activity`` at the start and the end of the step), and of PostgreSQL's shared
processes (postmaster, WAL writer, checkpointer, background writer, autovacuum launcher:
these also serve the other databases of the server); divided by the edits answered 200.
The projector is a group of its own (``projector``); ``instances`` are the web instances.
Per process role (:func:`cpu_by_role`): a web instance that does not write, the web instance
that writes the read model, and the projector. Peak memory per instance: the kernel's
high-water mark of resident memory (VmHWM).

    .venv/bin/python benchmarks/instances.py            # full run
    .venv/bin/python benchmarks/instances.py --quick    # 100 plans, 200 viewers, short steps
    .venv/bin/python benchmarks/instances.py --app-root /tmp/polku-at-commit
                          # the application imported from another folder (e.g. a `git archive`)

**Refusals.** An edit answered anything but 200 is counted per status with the first answer's
text (:class:`live_load.Refusals`), logged as it happens and listed in the Markdown; so are
the viewers refused at connect. With each step the connections to the PostgreSQL server are
noted (this run's database, everyone's, ``max_connections``): on the shared server a full
house refuses every command as "the plan is busy" (422), which is not a measurement.

Writes ``benchmarks/results/instances.json`` (or ``--out``) and, beside it, ``instances.md``:
the run, its figures as Markdown tables and the capacity estimate for a larger deployment
(:func:`capacity`), also printed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import os
import random
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
for _path in (os.environ.get("LIVE_TIMELINE_APP_ROOT"), str(HERE)):  # --app-root, also in the build processes
    if _path and _path not in sys.path:
        sys.path.insert(0, _path)

import live_timeline  # noqa: E402
from live_load import (  # noqa: E402
    CpuAccount,
    HttpPool,
    Items,
    ProcMeter,
    Refusals,
    StepLoad,
    merge_loads,
    open_loop,
    peak_rss_mib,
    rss_mib,
    summary_ms,
)
from live_timeline import (  # noqa: E402
    Audience,
    Server,
    Sizes,
    World,
    build_world,
    edit_answered,
    edit_request,
    finish_report,
    log,
    machine_info,
    measure_step,
    refresh_items,
    saturated,
    sign_in_sessions,
    spread_viewers,
    start_audience,
    viewer_specs,
)

DEFAULT_OUT = HERE / "results" / "instances.json"
HOST = "127.0.0.1"
TARGET_RATE = 200
"""Issue 5: p99 edit-to-viewer under 150 ms across instances at 200 edits a second."""
TARGET_P99_MS = 150.0
SERVER_NAMES = ("a", "b")
CONNECTIONS_PER_PROCESS = 22
"""Room to leave on the server per process of a set-up: what one `polku serve` holds under load
with the default POLKU_PG_POOL_MAX=5 (docs/deployment.md, "Connections to PostgreSQL"). Its
pools' peaks measured under 16 threads of commands and page reads: the event store's 5 and its
insert connection, the read model's 5, the plan keys' 2-4, the follower's 3, the listener and
the leader's lock; with the accounts' pool and the access log 1 each, 22. Idle it holds 10-11
(`polku project` 9, two web instances and a projector 22 together). It was 40 when the pools
kept 26 idle and grew to 15 each (39 seen at 25 edits/s); at 40, the three processes of
postgres-2p never found room on a server of 100 and waited the whole 30 s before each run."""

FULL = replace(live_timeline.FULL, rates=(10, 25, 50, 75, 100, 150, 200, 300), step_seconds=10.0,
               extra_meeting_needs=0)
QUICK = replace(live_timeline.QUICK, rates=(10, 25), step_seconds=3.0, extra_meeting_needs=0)


@dataclass(frozen=True)
class Setup:
    name: str
    store: str
    """sqlite or postgres"""
    instances: int
    """web instances (`polku serve`)"""
    projector: bool = False
    """whether `polku project` runs beside them (and writes the read model)"""


SETUPS = (Setup("sqlite-1", "sqlite", 1), Setup("postgres-1", "postgres", 1), Setup("postgres-2", "postgres", 2),
          Setup("postgres-2p", "postgres", 2, projector=True))


# ============================================================================ PostgreSQL


@dataclass
class Database:
    """A fresh PostgreSQL database for one run, and who in the server works for it."""

    host: str
    port: int
    user: str
    name: str = field(default_factory=lambda: f"polku_bench_{secrets.token_hex(4)}")
    master_key: str = field(default_factory=lambda: base64.b64encode(secrets.token_bytes(32)).decode())

    monitor: Any = field(default=None, repr=False)
    """A connection kept for reading pg_stat_activity at each step (the server may be full later)."""

    def _admin(self, attempts: int = 20) -> Any:
        """A connection to the `postgres` database; waits a while when the server is full (other
        people's tests share it)."""
        import psycopg

        for attempt in range(attempts):
            try:
                return psycopg.connect(host=self.host, port=self.port, user=self.user, dbname="postgres",
                                       autocommit=True)
            except psycopg.OperationalError:
                if attempt == attempts - 1:
                    raise
                time.sleep(1)
        raise AssertionError("unreachable")

    def create(self) -> None:
        from psycopg import sql

        with self._admin() as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name)))
        self.monitor = self._admin()

    def drop(self) -> None:
        from psycopg import sql

        if self.monitor is not None:
            self.monitor.close()
        with self._admin() as connection:
            connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name)))

    def settings(self, data_dir: Path) -> Any:
        from domain.storage import StoreSettings

        return StoreSettings(kind="postgres", data_dir=str(data_dir), pg_host=self.host, pg_port=self.port,
                             pg_db=self.name, pg_user=self.user, master_key_b64=self.master_key)

    def connections(self) -> dict[str, int]:
        """Connections to the server now: this run's database's (``ours``), everyone's (``all``), and
        ``max_connections``. The server is shared: when it is full, a set-up's commands are refused
        (the event store cannot connect) and its measurements mean nothing."""
        ours, everyone = self.monitor.execute(
            "SELECT count(*) FILTER (WHERE datname = %s), count(*) FROM pg_stat_activity"
            " WHERE backend_type = 'client backend'", (self.name,)).fetchone()
        limit = int(self.monitor.execute("SHOW max_connections").fetchone()[0])
        return {"ours": ours, "all": everyone, "max": limit}

    def wait_for_room(self, processes: int, limit: float = 30.0) -> dict[str, int]:
        """Wait (at most `limit` s) until the previous set-up's connections are gone and the server
        has room for `processes` more of ours (:data:`CONNECTIONS_PER_PROCESS` each); say so if
        it has not. Returns the connections then."""
        deadline = time.monotonic() + limit
        while True:
            now = self.connections()
            room = now["max"] - now["all"] >= processes * CONNECTIONS_PER_PROCESS
            if (now["ours"] == 0 and room) or time.monotonic() > deadline:
                break
            time.sleep(1)
        if not room:
            log(f"WARNING: the PostgreSQL server has {now['max'] - now['all']} free connections, fewer than"
                f" {processes} x {CONNECTIONS_PER_PROCESS} for this set-up: its commands may be refused as busy")
        return now

    def processes(self) -> dict[str, list[int]]:
        """The pids of the backends of this database, and of the server's shared processes."""
        rows = self.monitor.execute("SELECT pid, datname, backend_type FROM pg_stat_activity").fetchall()
        ours = [pid for pid, database, _kind in rows if database == self.name]
        shared = [pid for pid, database, kind in rows if database is None and kind != "client backend"]
        postmaster = _parent(shared[0]) if shared else None
        return {"postgres_backends": ours, "postgres_shared": shared + ([postmaster] if postmaster else [])}


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


# ============================================================================== set-ups


@dataclass
class Running:
    """The processes of one set-up while it runs."""

    setup: Setup
    servers: list[Server]
    projector: Server | None = None
    sessions: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    audience: Audience | None = None
    across: Audience | None = None
    """The same receipts as `audience`, but a plan's viewers are only those on the instance
    that did not take its edits (with one instance: every viewer)."""

    def host(self, index: int) -> str:
        return f"{HOST}:{self.servers[index].port}"

    def instance_of_plan(self, plan: int) -> int:
        """The instance that takes the plan's edits."""
        return plan % len(self.servers)


def server_environ(setup: Setup, world: World, database: Database | None, data_dir: Path,
                   secret: str) -> dict[str, str]:
    """The environment of one instance: POLKU_* of its set-up only (none of this process's)."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("POLKU_", "LIVE_TIMELINE_PROFILE"))}
    env.update({"PYTHONUNBUFFERED": "1", "POLKU_SECRET_KEY": secret,
                "LIVE_TIMELINE_GC_FILE": str(data_dir.with_suffix(".gc.json")),
                **live_timeline.MANY_SOCKETS_PER_ACCOUNT})
    if os.environ.get("LIVE_TIMELINE_APP_ROOT"):
        env["LIVE_TIMELINE_APP_ROOT"] = os.environ["LIVE_TIMELINE_APP_ROOT"]
    if setup.store == "sqlite":
        env.update({"POLKU_STORE": "sqlite", "POLKU_DATA_DIR": str(world.data_dir)})
    else:
        assert database is not None
        env.update(database.settings(data_dir).as_environ())
    return env


def start_servers(setup: Setup, world: World, database: Database | None, work: Path) -> list[Server]:
    """`polku serve` (through the benchmark's harness, which is exactly that) once per instance."""
    secret = secrets.token_urlsafe(32)
    servers = []
    for index in range(setup.instances):
        name = f"{setup.name}-{SERVER_NAMES[index]}"
        data_dir = work / name
        data_dir.mkdir(parents=True, exist_ok=True)
        port = live_timeline._free_port()
        command = [sys.executable, str(HERE / "live_server.py"), "--host", HOST, "--port", str(port)]
        env = server_environ(setup, world, database, data_dir, secret)
        servers.append(Server(name, command, env, port, work / f"{name}.log"))
    return servers


def start_projector(setup: Setup, world: World, database: Database | None, work: Path) -> Server:
    """`polku project` (health checks on a port of its own), with the web instances' POLKU_* settings."""
    name = f"{setup.name}-projector"
    data_dir = work / name
    data_dir.mkdir(parents=True, exist_ok=True)
    port = live_timeline._free_port()
    command = [sys.executable, "-m", "web.cli", "project", "--host", HOST, "--port", str(port)]
    env = server_environ(setup, world, database, data_dir, secrets.token_urlsafe(32))
    return Server(name, command, env, port, work / f"{name}.log")


async def projector_writes(running: Running, limit: float = 30.0) -> float:
    """Seconds until the projector, and no web instance, writes the read model."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if await asyncio.to_thread(writers, running) == [False] * len(running.servers) + [True]:
            return round(time.monotonic() - started, 2)
        await asyncio.sleep(0.2)
    raise RuntimeError(f"{running.setup.name}: the projector did not take the writer's lock within {limit} s")


def deal_viewers(running: Running, viewers: list[dict[str, Any]]) -> dict[int, list[int]]:
    """Put each viewer on an instance, the first of each plan on one that does not take the plan's
    edits; returns, per plan, the viewers on such instances."""
    count = len(running.servers)
    nth: dict[int, int] = {}
    across: dict[int, list[int]] = {}
    for viewer in viewers:
        plan = viewer["plan"]
        number = nth[plan] = nth.get(plan, -1) + 1
        index = (running.instance_of_plan(plan) + 1 + number) % count
        viewer["instance"] = index
        viewer["ws_base"] = f"ws://{running.host(index)}"
        viewer["origin"] = f"http://{running.host(index)}"
        if count == 1 or index != running.instance_of_plan(plan):
            across.setdefault(plan, []).append(viewer["id"])
    return across


async def run_setup(setup: Setup, world: World, database: Database | None, sizes: Sizes, work: Path,
                    report: dict[str, Any], cleanup: list[Any]) -> None:
    result: dict[str, Any] = {"instances": setup.instances, "store": setup.store}
    report["setups"][setup.name] = result
    if database is not None:
        result["connections_before"] = await asyncio.to_thread(
            database.wait_for_room, setup.instances + setup.projector)
    servers = start_servers(setup, world, database, work)
    cleanup.extend(servers)
    running = Running(setup, servers)
    if setup.projector:
        running.projector = start_projector(setup, world, database, work)
        cleanup.append(running.projector)
    try:
        ready_path = "/readyz" if setup.store == "postgres" else "/healthz"
        result["start_s"] = [await asyncio.to_thread(server.wait_ready, ready_path) for server in servers]
        if running.projector is not None:
            result["projector_start_s"] = await asyncio.to_thread(running.projector.wait_ready, ready_path)
            result["projector_writes_after_s"] = await projector_writes(running)
        result["writer"] = await asyncio.to_thread(writers, running)
        if database is not None:
            result["connections_ready"] = database.connections()
        log(f"{setup.name}: {len(servers)} instance(s) up (pids {[s.pid for s in servers]});"
            f" PostgreSQL connections {result.get('connections_ready')}; signing in")
        running.sessions = await asyncio.to_thread(sign_in_sessions, f"http://{running.host(0)}", world.password,
                                                   world, sizes.sessions_per_account)
        back = await asyncio.to_thread(refresh_items, f"http://{running.host(0)}", world.items, running.sessions,
                                       world.allowed)
        if back:
            result["items_refreshed"] = back
        await asyncio.sleep(2)  # the hub compiles its templates in the background at start
        result["rss_mib_idle"] = [rss_mib(s.pid) for s in servers]
        await connect_viewers(running, world, sizes, work, result)
        result["rss_mib_connected"] = [rss_mib(s.pid) for s in servers]
        await run_steps(running, world, database, sizes, result)
        result["rss_mib_after_edits"] = [rss_mib(s.pid) for s in servers]
        result["rss_mib_most_at_a_step_end"] = [max((step["rss_mib"][i] or 0 for step in result.get("steps", [])),
                                                    default=None) for i in range(len(servers))]
        # The kernel's high-water mark, which counts the argon2id hashing of the sign-ins (on instance a) too.
        result["peak_rss_mib"] = [peak_rss_mib(s.pid) for s in servers]
        if running.projector is not None:
            result["projector_peak_rss_mib"] = peak_rss_mib(running.projector.pid)
        result["writer_at_end"] = await asyncio.to_thread(writers, running)
    finally:
        if running.audience is not None:
            await running.audience.quit()
        everyone = [*servers, *([running.projector] if running.projector is not None else [])]
        result["server_errors"] = [server.errors() for server in everyone]
        for server in everyone:
            server.stop()
            cleanup.remove(server)


def writers(running: Running) -> list[bool | None]:
    """Which instance writes the read model (/readyz; None on SQLite, where it is always the one);
    the projector, if one runs, is last."""
    import httpx

    if running.setup.store != "postgres":
        return [None]
    ports = [s.port for s in running.servers] + ([running.projector.port] if running.projector is not None else [])
    return [httpx.get(f"http://{HOST}:{port}/readyz", timeout=5).json().get("writer") for port in ports]


async def connect_viewers(running: Running, world: World, sizes: Sizes, work: Path, result: dict[str, Any]) -> None:
    rng = random.Random(3)
    counts = spread_viewers(sizes.plans, sizes.viewers, rng)
    viewers = viewer_specs(world, counts, running.sessions, rng, bare=False, plan_filter=list(range(sizes.plans)))
    across_of = deal_viewers(running, viewers)
    result["viewers_per_instance"] = [sum(1 for v in viewers if v["instance"] == i)
                                      for i in range(len(running.servers))]
    result["viewers_across"] = sum(len(v) for v in across_of.values())
    log(f"{running.setup.name}: connecting {len(viewers)} viewers {result['viewers_per_instance']}")
    running.audience, result["connect"] = await start_audience(
        viewers, sizes.viewer_processes, f"ws://{running.host(0)}", f"http://{running.host(0)}", work, timeout=600)
    running.across = Audience(running.audience.processes, across_of, work)
    running.across.receipts = running.audience.receipts
    log(f"{running.setup.name}: {result['connect']}")
    await asyncio.sleep(2)
    await running.audience.collect()  # forget the presence messages of connecting


async def run_steps(running: Running, world: World, database: Database | None, sizes: Sizes,
                    result: dict[str, Any]) -> None:
    assert running.audience is not None and running.across is not None
    count = len(running.servers)
    statuses: dict[int, int] = {}
    answered = refusals = Refusals(edit_answered(statuses))
    pools = [HttpPool(HOST, server.port, size=256 // count, sessions=sizes.sessions_per_account)
             for server in running.servers]
    builds = [edit_request(running.host(i), f"http://{running.host(i)}", running.sessions, world.allowed)
              for i in range(count)]
    items = [Items([item for item in world.items if running.instance_of_plan(item.plan) == i], seed=7 + i)
             for i in range(count)]
    last: dict[str, StepLoad] = {}

    async def edits(rate: float, seconds: float) -> StepLoad:
        last["load"] = merge_loads(list(await asyncio.gather(*(
            open_loop(pools[i], items[i], builds[i], answered, rate / count, seconds) for i in range(count)))))
        return last["load"]

    instance_pids = {f"instance_{SERVER_NAMES[i]}": s.pid for i, s in enumerate(running.servers)}
    if running.projector is not None:
        instance_pids["projector"] = running.projector.pid
    meter = ProcMeter({**instance_pids, **running.audience.pids, "load_generator": os.getpid()})
    clients = [*running.audience.pids.values(), os.getpid()]
    account = CpuAccount(lambda: {**{name: [pid] for name, pid in instance_pids.items()}, "clients": clients,
                                  **(database.processes() if database is not None else {})})
    try:
        warm = await measure_step("warm-up", lambda: edits(5, 3), running.audience, meter, statuses, rate=5, seconds=3)
        result["warm_up"] = {"achieved_per_s": warm["achieved_per_s"], "statuses": warm["statuses"],
                             "refusals": refusals.take()}
        log_refusals(running.setup.name, "warm-up", result["warm_up"]["refusals"],
                     database.connections() if database is not None else None)
        result["steps"] = []
        for rate in sizes.rates:
            account.start()
            step = await measure_step(f"{rate}/s", lambda r=rate: edits(r, sizes.step_seconds), running.audience,
                                      meter, statuses, rate=rate, seconds=sizes.step_seconds)
            step["cpu_seconds"] = account.stop()
            step["refusals"] = refusals.take()
            if database is not None:
                step["postgres_connections"] = database.connections()
            step["saturated"] = saturated(step)
            step["edit_to_viewers_across_ms"] = across_latency(running.across, last["load"])
            step["gc_pauses"] = gc_pauses(running, last["load"])
            step["cpu_ms_per_edit"] = cpu_per_edit(step)
            step["cpu_ms_per_edit_by_role"] = cpu_by_role(step, result.get("writer") or [])
            step["server_unhandled_errors"] = sum(s.errors().get("unhandled", 0) for s in running.servers)
            step["rss_mib"] = [rss_mib(s.pid) for s in running.servers]
            if running.projector is not None:
                step["projector_rss_mib"] = rss_mib(running.projector.pid)
            result["steps"].append(step)
            print_step(running.setup.name, step)
            log_refusals(running.setup.name, step["label"], step["refusals"], step.get("postgres_connections"))
            await servers_idle(instance_pids)
            if step["saturated"]:
                break
        result["rates_not_run"] = [r for r in sizes.rates if r not in [s["offered_per_s"] for s in result["steps"]]]
    finally:
        for pool in pools:
            pool.close()


async def servers_idle(pids: dict[str, int], limit: float = 10.0) -> None:
    """Wait (at most `limit` s) until every instance uses under a fifth of a core: the last step's
    work is done. (Other people's processes are not waited for: they are reported per step.)"""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        meter = ProcMeter(pids)
        meter.start()
        await asyncio.sleep(0.5)
        cpu = meter.stop()
        if all(cpu[name] < 20 for name in pids):
            return


def across_latency(across: Audience, load: StepLoad) -> dict[str, Any]:
    """From sending each edit answered 200 to every viewer of its plan on the other instance."""
    latencies = []
    for sent in load.sent:
        if sent.status == 200:
            reached = across.reached_all(sent.plan, sent.need, sent.seq)
            if reached is not None:
                latencies.append(reached - sent.sent)
    return summary_ms(latencies)


def gc_pauses(running: Running, load: StepLoad) -> dict[str, Any]:
    """The garbage collector's pauses over 20 ms in the instances during the step (live_server.py
    writes them), and how many of the edits slower than the target across instances had one
    of them between their sending and their arrival at the last viewer."""
    pauses: list[tuple[float, int, float]] = []
    per_instance = {}
    for index, server in enumerate(running.servers):
        try:
            written = json.loads(server.log.with_suffix(".gc.json").read_text())
        except (OSError, ValueError):
            continue
        mine = [tuple(p) for p in written["long_pauses"] if p[0] >= load.started]
        pauses += mine
        per_instance[SERVER_NAMES[index]] = {"pauses": len(mine), "longest_ms": max((p[2] for p in mine), default=0),
                                             "generation_2": sum(1 for p in mine if p[1] == 2)}
    slow = met = 0
    assert running.across is not None
    for sent in load.sent:
        reached = running.across.reached_all(sent.plan, sent.need, sent.seq) if sent.status == 200 else None
        if reached is not None and (reached - sent.sent) * 1000 > TARGET_P99_MS:
            slow += 1
            met += any(sent.sent <= at <= reached for at, _generation, _ms in pauses)
    return {"over_20_ms": per_instance, "edits_over_target": slow, "of_which_during_a_pause": met}


def cpu_per_edit(step: dict[str, Any]) -> dict[str, float | None]:
    """CPU milliseconds per edit answered 200, by group of processes (and the web instances together)."""
    edits = int(step["statuses"].get("200", 0))
    spent = {name: value["cpu_s"] for name, value in step["cpu_seconds"].items()
             if isinstance(value, dict) and name != "clients"}
    spent["instances"] = sum(v for name, v in spent.items() if name.startswith("instance_"))
    return {name: round(1000 * seconds / edits, 2) if edits else None for name, seconds in spent.items()}


def cpu_by_role(step: dict[str, Any], writers: list[bool | None]) -> dict[str, float | None]:
    """CPU ms per edit of one process of each role: a web instance that does not write the read
    model (the mean of those), the web instance that writes it, the projector."""
    cpu = step["cpu_ms_per_edit"]
    web = [cpu.get(f"instance_{SERVER_NAMES[i]}") for i, writes in enumerate(writers[:len(SERVER_NAMES)])
           if not writes]
    web = [ms for ms in web if ms is not None]
    writer = [i for i, writes in enumerate(writers[:len(SERVER_NAMES)]) if writes]
    return {
        "web": round(sum(web) / len(web), 2) if web else None,
        "web (writer)": cpu.get(f"instance_{SERVER_NAMES[writer[0]]}") if writer else None,
        "projector": cpu.get("projector"),
    }


# ============================================================================ capacity


def capacity(report: dict[str, Any], *, instance_processes: int = 16, database_cores: int = 16,
             utilisation: float = 0.7) -> dict[str, Any]:
    """What the figures mean for four 4-core instance machines (one `polku serve` per core: a Python
    process uses about one core) and a 16-core database, at `utilisation` of every core.

    Model, per edit: the instance that takes the edit runs the command and answers it, every
    instance with viewers of the plan renders and sends the update (``hub``), and the one
    writer instance runs the projection. From the two PostgreSQL set-ups at the highest rate
    that saturated neither: ``hub = (two - one) / (k2 - 1)``, where k2 is how many instances held viewers of the
    edited plan in the two-instance run; with N processes and viewers spread at random the
    instances' CPU per edit is ``one + hub * (kN - 1)``. The projection's share is what the
    writer of the two-instance run spent more than the other (each took half the edits and
    half the viewers); the writer does it for every edit of the deployment, in one process.
    PostgreSQL's CPU per edit (its backends and its shared processes) is taken as it is.

    With a postgres-2p run, ``with_projector`` is the same deployment with one of the
    processes a projector (:func:`capacity_with_projector`).
    """
    one, two = _steps_at_one_rate(report, "postgres-1", "postgres-2")
    if one is None or two is None:
        with_projector = capacity_with_projector(report, instance_processes=instance_processes,
                                                 database_cores=database_cores, utilisation=utilisation)
        return {"error": "a PostgreSQL set-up has no step to estimate from", "with_projector": with_projector}
    per_plan = report.get("viewers_per_plan") or {}
    k2 = _mean_instances_with_viewers(per_plan, 2)
    kn = _mean_instances_with_viewers(per_plan, instance_processes)
    one_ms, two_ms = one["cpu_ms_per_edit"]["instances"], two["cpu_ms_per_edit"]["instances"]
    hub_ms = max((two_ms - one_ms) / (k2 - 1), 0.0) if k2 > 1 else 0.0
    instances_ms = one_ms + hub_ms * (kn - 1)
    writers = (report["setups"]["postgres-2"].get("writer") or [])
    projection_ms = _writer_extra_ms(two, writers)
    database_ms = sum((two["cpu_ms_per_edit"].get(name) or 0.0) for name in ("postgres_backends", "postgres_shared"))
    bounds = {
        "instances": instance_processes * utilisation * 1000 / instances_ms if instances_ms else None,
        "the writer process (projection + its share of requests)":
            utilisation * 1000 / (projection_ms + instances_ms / instance_processes)
            if projection_ms is not None else None,
        "database": database_cores * utilisation * 1000 / database_ms if database_ms else None,
    }
    known = {name: value for name, value in bounds.items() if value}
    return {
        "from_steps": {"postgres-1": one["label"], "postgres-2": two["label"]},
        "instances_cpu_ms_per_edit": {"one instance": one_ms, "two instances": two_ms},
        "mean_instances_with_viewers_of_a_plan": {"2": round(k2, 2), str(instance_processes): round(kn, 2)},
        "hub_ms_per_extra_instance": round(hub_ms, 2),
        f"instances_cpu_ms_per_edit_at_{instance_processes}": round(instances_ms, 2),
        "projection_ms_per_edit_on_the_writer": None if projection_ms is None else round(projection_ms, 2),
        "postgres_cpu_ms_per_edit": round(database_ms, 2),
        "utilisation": utilisation,
        "instance_processes": instance_processes,
        "database_cores": database_cores,
        "edits_per_s_each_bound": {name: round(value) if value else None for name, value in bounds.items()},
        "estimate_edits_per_s": round(min(known.values())) if known else None,
        "bound_by": min(known, key=known.__getitem__) if known else None,
        "with_projector": capacity_with_projector(report, instance_processes=instance_processes,
                                                  database_cores=database_cores, utilisation=utilisation),
    }


def capacity_with_projector(report: dict[str, Any], *, instance_processes: int = 16, database_cores: int = 16,
                            utilisation: float = 0.7) -> dict[str, Any] | None:
    """The deployment of :func:`capacity` with one of its processes a projector (``polku project``)
    and the rest web instances; None without a postgres-2p run.

    From postgres-2p (two web instances and the projector) and postgres-1, at the highest
    rate that saturated neither: the projector's CPU per edit is the projection's whole cost,
    in one process of its own; the web instances' is ``web2`` (neither writes). Each further
    web instance with viewers of the plan costs ``hub = (web2 + projector - one) / (k2 - 1)``
    (postgres-1's one instance also projects). With N - 1 web processes:
    ``web2 + hub * (k(N-1) - k2)`` per edit; the projector's core bounds the deployment at
    ``utilisation * 1000 / projector`` edits a second.
    """
    one, two = _steps_at_one_rate(report, "postgres-1", "postgres-2p")
    if two is None:
        return None
    if one is None:
        return {"error": "no postgres-1 step to estimate the hub's cost from"}
    cpu = two["cpu_ms_per_edit"]
    projector_ms, web2_ms, one_ms = cpu.get("projector"), cpu["instances"], one["cpu_ms_per_edit"]["instances"]
    if not projector_ms:
        return {"error": "postgres-2p has no CPU of the projector"}
    per_plan = report.get("viewers_per_plan") or {}
    web_processes = instance_processes - 1
    k2 = _mean_instances_with_viewers(per_plan, 2)
    kn = _mean_instances_with_viewers(per_plan, web_processes)
    hub_ms = max((web2_ms + projector_ms - one_ms) / (k2 - 1), 0.0) if k2 > 1 else 0.0
    web_ms = web2_ms + hub_ms * (kn - k2)
    database_ms = sum((cpu.get(name) or 0.0) for name in ("postgres_backends", "postgres_shared"))
    bounds = {
        "web instances": web_processes * utilisation * 1000 / web_ms if web_ms else None,
        "the projector": utilisation * 1000 / projector_ms,
        "database": database_cores * utilisation * 1000 / database_ms if database_ms else None,
    }
    known = {name: value for name, value in bounds.items() if value}
    return {
        "from_steps": {"postgres-1": one["label"], "postgres-2p": two["label"]},
        "cpu_ms_per_edit": {"one instance (postgres-1)": one_ms, "two web instances (postgres-2p)": web2_ms,
                            "projector (postgres-2p)": projector_ms},
        "cpu_ms_per_edit_by_role": two.get("cpu_ms_per_edit_by_role"),
        "mean_instances_with_viewers_of_a_plan": {"2": round(k2, 2), str(web_processes): round(kn, 2)},
        "hub_ms_per_extra_instance": round(hub_ms, 2),
        f"web_cpu_ms_per_edit_at_{web_processes}": round(web_ms, 2),
        "postgres_cpu_ms_per_edit": round(database_ms, 2),
        "utilisation": utilisation,
        "web_processes": web_processes,
        "database_cores": database_cores,
        "edits_per_s_each_bound": {name: round(value) if value else None for name, value in bounds.items()},
        "estimate_edits_per_s": round(min(known.values())) if known else None,
        "bound_by": min(known, key=known.__getitem__) if known else None,
    }


def _writer_extra_ms(step: dict[str, Any], writers: list[bool | None]) -> float | None:
    """CPU ms per edit that the writer instance spent more than the other one (None without one writer)."""
    if writers.count(True) != 1 or len(writers) != 2:
        return None
    cpu = step["cpu_ms_per_edit"]
    writer = f"instance_{SERVER_NAMES[writers.index(True)]}"
    other = f"instance_{SERVER_NAMES[writers.index(False)]}" if False in writers else None
    if other is None or cpu.get(writer) is None or cpu.get(other) is None:
        return None
    return max(cpu[writer] - cpu[other], 0.0)


def _steps_at_one_rate(report: dict[str, Any], first: str, second: str
                       ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The steps of two set-ups at the highest rate that saturated neither (the CPU per edit falls
    as the rate rises, the fixed costs shared by more edits); else each one's busiest."""
    def usable(name: str) -> dict[float, dict[str, Any]]:
        steps = (report.get("setups", {}).get(name) or {}).get("steps") or []
        return {s["offered_per_s"]: s for s in steps
                if not s["saturated"] and (s.get("cpu_ms_per_edit") or {}).get("instances")}

    one, two = usable(first), usable(second)
    common = sorted(set(one) & set(two))
    if common:
        return one[common[-1]], two[common[-1]]
    return _busiest_step(report, first), _busiest_step(report, second)


def _busiest_step(report: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The step with the most edits answered that did not saturate (else the first step)."""
    steps = (report.get("setups", {}).get(name) or {}).get("steps") or []
    usable = [s for s in steps if not s["saturated"] and (s.get("cpu_ms_per_edit") or {}).get("instances")]
    if usable:
        return max(usable, key=lambda s: s["achieved_per_s"])
    return steps[0] if steps and (steps[0].get("cpu_ms_per_edit") or {}).get("instances") else None


def _mean_instances_with_viewers(viewers_per_plan: dict[str, int], instances: int) -> float:
    """How many instances, on average, hold at least one viewer of an edited plan, with each
    viewer on an instance of its own until there are more viewers than instances (the
    benchmark deals them that way with two) or, past that, at random."""
    plans = sum(viewers_per_plan.values())
    if not plans:
        return 1.0
    total = 0.0
    for viewers, count in viewers_per_plan.items():
        n = int(viewers)
        total += count * (min(n, instances) if instances <= 2 else instances * (1 - (1 - 1 / instances) ** n))
    return total / plans


# ================================================================================ report


def print_step(name: str, step: dict[str, Any]) -> None:
    every = step.get("edit_to_all_viewers_ms") or {}
    across = step.get("edit_to_viewers_across_ms") or {}
    cpu = step.get("cpu_ms_per_edit") or {}
    others = (step.get("cpu_seconds") or {}).get("other_processes_percent")
    gc = step.get("gc_pauses") or {}
    log(f"{name:<10} {step['label']:<8} answered {step['achieved_per_s']:>6}/s  every viewer p50 {every.get('p50')}"
        f" p99 {every.get('p99')}  across p50 {across.get('p50')} p99 {across.get('p99')} ms  statuses"
        f" {step['statuses']} not sent {step['not_sent_generator_backlog']} undelivered"
        f" {step.get('undelivered_after_wait')}  CPU ms/edit {cpu}  others {others}%  GC pauses"
        f" {gc.get('over_20_ms')}, slow edits {gc.get('edits_over_target')} of which in a pause"
        f" {gc.get('of_which_during_a_pause')}")


def log_refusals(name: str, label: str, refusals: dict[str, Any], connections: dict[str, int] | None) -> None:
    """Say how many edits of a step were refused, and what the server said the first time per status
    (a 422 "the plan is busy" for every edit has been the shared PostgreSQL out of connections)."""
    if refusals["count"]:
        log(f"{name:<10} {label:<8} REFUSED {refusals['count']} edits {refusals['by_status']}; PostgreSQL"
            f" connections {connections}; first answers: {refusals['first_body']}")


def refusal_lines(report: dict[str, Any]) -> list[str]:
    """The steps whose edits were refused, with the first answer of each status, for the Markdown."""
    lines = []
    for name, setup in report.get("setups", {}).items():
        for step in [{"label": "warm-up", **(setup.get("warm_up") or {})}, *(setup.get("steps") or [])]:
            refusals = step.get("refusals") or {}
            if refusals.get("count"):
                lines.append(f"- {name} {step['label']}: {refusals['count']} refused {refusals['by_status']},"
                             f" PostgreSQL connections {step.get('postgres_connections')};"
                             f" first answer: {json.dumps(refusals['first_body'], ensure_ascii=False)[:400]}")
        failures = (setup.get("connect") or {}).get("failures")
        if failures:
            lines.append(f"- {name}: viewers refused at connect {failures}")
    if lines:
        lines.insert(0, "**Refused** (the figures of these steps are not measurements of the edit path):")
    return lines


def markdown_table(report: dict[str, Any]) -> str:
    lines = [
        "| set-up | edits/s offered | answered/s | edit → every viewer p50 / p99 ms | across instances p50 / p99 ms"
        " | instances CPU ms/edit | PostgreSQL CPU ms/edit (backends + shared)"
        " | other processes (not the run's), % of a core | GC pauses over 20 ms (longest ms)"
        " | edits over 150 ms across (in a GC pause) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, setup in report.get("setups", {}).items():
        for step in setup.get("steps", []):
            every = step.get("edit_to_all_viewers_ms") or {}
            across = step.get("edit_to_viewers_across_ms") or {}
            cpu = step.get("cpu_ms_per_edit") or {}
            database = "—" if setup["store"] == "sqlite" else (
                f"{cpu.get('postgres_backends')} + {cpu.get('postgres_shared')}")
            mark = "*" if step["saturated"] else ""
            lines.append(
                f"| {name} | {step['offered_per_s']} | {step['achieved_per_s']}{mark}"
                f" | {every.get('p50')} / {every.get('p99')} | "
                + (f"{across.get('p50')} / {across.get('p99')}" if setup["instances"] > 1 else "—")
                + f" | {cpu.get('instances')}" + (f" + {cpu['projector']} projector" if cpu.get("projector") else "")
                + f" | {database} | {step['cpu_seconds'].get('other_processes_percent')}"
                + f" | {_gc_cell(step)} |")
    return "\n".join(lines)


def _gc_cell(step: dict[str, Any]) -> str:
    gc = step.get("gc_pauses") or {}
    instances = (gc.get("over_20_ms") or {}).values()
    pauses = sum(i["pauses"] for i in instances)
    longest = max((i["longest_ms"] for i in instances), default=0)
    return (f"{pauses}" + (f" ({longest:.0f})" if pauses else "")
            + f" | {gc.get('edits_over_target')} ({gc.get('of_which_during_a_pause')})")


def markdown_report(report: dict[str, Any]) -> str:
    """The run, the table of steps, memory, the capacity estimate and the target, for docs/performance.md."""
    machine = report["machine"]
    load = [round(x, 2) for x in machine.get("load_average_at_start", ())], [
        round(x, 2) for x in machine.get("load_average_at_end", ())]
    commit = machine.get("app_commit") or machine.get("git_commit")
    lines = [
        f"`{report['command']}`, {machine['date']}, {report.get('seconds')} s; commit {str(commit)[:7]}"
        + ("" if machine.get("app_commit") else f" ({machine.get('git_uncommitted_paths')} uncommitted paths)")
        + f"; {machine['cpu_count']} x {machine['cpu_model']}; load average {load[0]} at the start, {load[1]} at"
        " the end.",
        "",
        markdown_table(report),
        "",
        "\\* saturated: under 90 % of the offered rate answered, the p99 over 2 s, or over 1 % undelivered.",
        "",
        "| set-up | instance | RSS idle | with its viewers | most at a step's end | peak (VmHWM) | viewers |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, setup in report.get("setups", {}).items():
        writers = setup.get("writer") or []
        for index in range(setup["instances"]):
            def mib(key: str, i: int = index, s: dict[str, Any] = setup) -> Any:
                return (s.get(key) or [None] * s["instances"])[i]
            role = " (writer)" if index < len(writers) and writers[index] and setup["instances"] > 1 else ""
            lines.append(f"| {name} | {SERVER_NAMES[index]}{role} | {mib('rss_mib_idle')} MiB |"
                         f" {mib('rss_mib_connected')} MiB | {mib('rss_mib_most_at_a_step_end')} MiB |"
                         f" {mib('peak_rss_mib')} MiB | {mib('viewers_per_instance')} |")
        if setup.get("projector_peak_rss_mib") is not None:
            steps = setup.get("steps") or []
            most = max((step.get("projector_rss_mib") or 0 for step in steps), default=None)
            lines.append(f"| {name} | projector (writer: {(setup.get('writer') or [None])[-1]}) | — | — | {most} MiB |"
                         f" {setup['projector_peak_rss_mib']} MiB | 0 |")
    refused = refusal_lines(report)
    if refused:
        lines += ["", *refused]
    lines += ["", *capacity_lines(report.get("capacity") or {}), "", f"Target: {json.dumps(report.get('target'))}"]
    if report.get("target_with_projector"):
        lines.append(f"Target with a projector: {json.dumps(report['target_with_projector'])}")
    return "\n".join(lines)


def capacity_lines(estimate: dict[str, Any]) -> list[str]:
    """The capacity estimate as Markdown bullets, each with its arithmetic (and with a projector)."""
    with_projector = projector_capacity_lines(estimate.get("with_projector"))
    if "error" in estimate or not estimate:
        return [f"Capacity: no estimate ({estimate.get('error', 'no figures')}).", *with_projector]
    steps, cpu = estimate["from_steps"], estimate["instances_cpu_ms_per_edit"]
    k = estimate["mean_instances_with_viewers_of_a_plan"]
    n, cores = estimate["instance_processes"], estimate["database_cores"]
    k2, kn = k["2"], k[str(n)]
    instances_ms = estimate[f"instances_cpu_ms_per_edit_at_{n}"]
    bounds = estimate["edits_per_s_each_bound"]
    writer = "the writer process (projection + its share of requests)"
    u = estimate["utilisation"]
    projection = estimate["projection_ms_per_edit_on_the_writer"]
    return [
        f"- **Instances**: {cpu['one instance']} ms of CPU per edit with one instance (postgres-1 at"
        f" {steps['postgres-1']}), {cpu['two instances']} ms with two (postgres-2 at {steps['postgres-2']}), where an"
        f" edited plan had viewers on {k2} instances on average: each further instance with viewers of the plan"
        f" costs ({cpu['two instances']} - {cpu['one instance']}) / ({k2} - 1) ="
        f" {estimate['hub_ms_per_extra_instance']} ms (its hub renders and sends the update). With {n} processes"
        f" (four 4-core machines, one `polku serve` a core) and viewers spread at random, a plan's 1-5 viewers are"
        f" on {kn} of them: {cpu['one instance']} + {estimate['hub_ms_per_extra_instance']} x ({kn} - 1) ="
        f" {instances_ms} ms per edit; {n} x {u} x 1000 / {instances_ms} = **{bounds['instances']} edits/s**.",
        f"- **The writer**: it spent {projection} ms per edit more than the other instance (each took half the"
        f" edits and half the viewers): the projection, which one process runs for every edit of the deployment,"
        f" beside its 1/{n} of the requests: {u} x 1000 / ({projection} + {instances_ms} / {n}) ="
        f" **{bounds[writer]} edits/s**.",
        f"- **PostgreSQL**: {estimate['postgres_cpu_ms_per_edit']} ms of CPU per edit (postgres-2 at"
        f" {steps['postgres-2']}: the run's backends and the shared processes); {cores} x {u} x 1000 /"
        f" {estimate['postgres_cpu_ms_per_edit']} = **{bounds['database']} edits/s**.",
        f"- **Estimate: about {estimate['estimate_edits_per_s']} edits/s**, bound by {estimate['bound_by']}.",
        *with_projector,
    ]


def projector_capacity_lines(estimate: dict[str, Any] | None) -> list[str]:
    """:func:`capacity_with_projector` as Markdown bullets, each with its arithmetic."""
    if estimate is None:
        return []
    if "error" in estimate:
        return [f"With a projector: no estimate ({estimate['error']})."]
    steps, cpu = estimate["from_steps"], estimate["cpu_ms_per_edit"]
    one, web2, projector = (cpu["one instance (postgres-1)"], cpu["two web instances (postgres-2p)"],
                            cpu["projector (postgres-2p)"])
    n, cores, u = estimate["web_processes"], estimate["database_cores"], estimate["utilisation"]
    k = estimate["mean_instances_with_viewers_of_a_plan"]
    k2, kn = k["2"], k[str(n)]
    hub, web_ms = estimate["hub_ms_per_extra_instance"], estimate[f"web_cpu_ms_per_edit_at_{n}"]
    bounds = estimate["edits_per_s_each_bound"]
    return [
        f"- **With a projector** (`polku project` on one of the {n + 1} cores, {n} web instances; postgres-2p at"
        f" {steps['postgres-2p']}, postgres-1 at {steps['postgres-1']}). CPU per edit by process role:"
        f" {estimate.get('cpu_ms_per_edit_by_role')}.",
        f"  - **The projector**: {projector} ms of CPU per edit, the projection's whole cost in a process that"
        f" serves nobody; {u} x 1000 / {projector} = **{bounds['the projector']} edits/s**.",
        f"  - **Web instances**: {web2} ms per edit for two that do not project; each further one with viewers"
        f" of the plan ({web2} + {projector} - {one}) / ({k2} - 1) = {hub} ms; with {n} of them a plan's viewers"
        f" are on {kn}: {web2} + {hub} x ({kn} - {k2}) = {web_ms} ms; {n} x {u} x 1000 / {web_ms} ="
        f" **{bounds['web instances']} edits/s**.",
        f"  - **PostgreSQL**: {estimate['postgres_cpu_ms_per_edit']} ms per edit; {cores} x {u} x 1000 /"
        f" {estimate['postgres_cpu_ms_per_edit']} = **{bounds['database']} edits/s**.",
        f"  - **Estimate with a projector: about {estimate['estimate_edits_per_s']} edits/s**, bound by"
        f" {estimate['bound_by']}.",
    ]


def target(report: dict[str, Any], setup: str = "postgres-2") -> dict[str, Any]:
    steps = (report.get("setups", {}).get(setup) or {}).get("steps") or []
    at = next((s for s in steps if s["offered_per_s"] == TARGET_RATE), None)
    best = [s["offered_per_s"] for s in steps if not s["saturated"]
            and ((s.get("edit_to_viewers_across_ms") or {}).get("p99") or 1e9) < TARGET_P99_MS]
    p99 = (at.get("edit_to_viewers_across_ms") or {}).get("p99") if at else None
    met = bool(at and not at["saturated"] and p99 is not None and p99 < TARGET_P99_MS)
    if at:
        answered: Any = at["achieved_per_s"]
    else:
        answered = "not run: a lower rate saturated" if any(s["saturated"] for s in steps) else "not run"
    return {
        f"p99 across instances at {TARGET_RATE}/s (ms)": p99,
        f"answered/s at {TARGET_RATE}/s offered": answered,
        f"highest rate with p99 across < {TARGET_P99_MS:g} ms": max(best, default=None),
        "target": "met" if met else "MISSED",
    }


# ================================================================================== run


async def orchestrate(args: argparse.Namespace, sizes: Sizes, work: Path, report: dict[str, Any],
                      cleanup: list[Any]) -> None:
    database = Database(args.pg_host, args.pg_port, args.pg_user)
    database.create()
    cleanup.append(database)
    report["database"] = database.name
    for store in ("sqlite", "postgres"):
        (work / store).mkdir()
    log(f"building {sizes.plans} plans twice, side by side: SQLite in {work / 'sqlite'}, PostgreSQL in database"
        f" {database.name}")
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as builders:
        sqlite_world, postgres_world = await asyncio.gather(
            loop.run_in_executor(builders, build_world, work / "sqlite", sizes),
            loop.run_in_executor(builders, build_world, work / "postgres", sizes,
                                 database.settings(work / "postgres" / "build")),
        )
    worlds = {"sqlite": sqlite_world, "postgres": postgres_world}
    report["setup"] = {store: {"events": w.events, "create_seconds": w.create_seconds,
                               "rebuild_read_model_seconds": w.rebuild_seconds} for store, w in worlds.items()}
    counts = spread_viewers(sizes.plans, sizes.viewers, random.Random(3))
    report["viewers_per_plan"] = {str(n): counts.count(n) for n in range(1, 6)}
    log(f"built: {report['setup']}")
    for setup in SETUPS:
        if args.only and setup.name not in args.only:
            continue
        await run_setup(setup, worlds[setup.store], database if setup.store == "postgres" else None, sizes, work,
                        report, cleanup)
    report["capacity"] = capacity(report)


def release(cleanup: list[Any]) -> None:
    """Stop what this run started and drop its database, whatever happened."""
    for thing in reversed(cleanup):
        try:
            if isinstance(thing, Server):
                thing.stop()
            elif isinstance(thing, Database):
                thing.drop()
        except Exception as error:  # noqa: BLE001 - clean up the rest anyway, and say so
            print(f"cleanup of {thing!r} failed: {error}", file=sys.stderr)
    cleanup.clear()


@contextmanager
def terminated_as_interrupt() -> Iterator[None]:
    """SIGTERM as Ctrl-C, so that the clean-up runs when the run is stopped."""
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_loop(coroutine: Any) -> None:
    """On uvloop when it is installed (as `polku serve` runs), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coroutine)
    else:
        uvloop.run(coroutine)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Several instances benchmark (issue 5).")
    parser.add_argument("--quick", action="store_true", help="100 plans, 200 viewers, two short steps")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results (default {DEFAULT_OUT})")
    parser.add_argument("--only", nargs="+", choices=[s.name for s in SETUPS], help="run only these set-ups")
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="postgres")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (data, logs)")
    parser.add_argument("--app-root", type=Path,
                        help="import the application from this folder, e.g. a `git archive` of one commit"
                             " (default: this checkout)")
    args = parser.parse_args(argv)
    if args.app_root:
        live_timeline.APP_ROOT = args.app_root.resolve()
        os.environ["LIVE_TIMELINE_APP_ROOT"] = str(live_timeline.APP_ROOT)
        sys.path.insert(0, str(live_timeline.APP_ROOT))
    sizes = QUICK if args.quick else FULL
    report: dict[str, Any] = {
        "benchmark": "instances",
        "command": "python benchmarks/instances.py" + (" --quick" if args.quick else "")
                   + (f" --only {' '.join(args.only)}" if args.only else "")
                   + (f" --app-root {args.app_root}" if args.app_root else ""),
        "machine": machine_info(),
        "sizes": {"plans": sizes.plans, "viewers": sizes.viewers, "rates": sizes.rates,
                  "step_seconds": sizes.step_seconds},
        "setups": {},
    }
    work = Path(tempfile.mkdtemp(prefix="polku-instances-"))
    cleanup: list[Any] = []
    started = time.monotonic()
    try:
        with terminated_as_interrupt():
            run_loop(orchestrate(args, sizes, work, report, cleanup))
    finally:
        release(cleanup)
        report["target"] = target(report)
        if "postgres-2p" in report["setups"]:
            report["target_with_projector"] = target(report, "postgres-2p")
        finish_report(report, args, work, started)
    markdown = markdown_report(report)
    args.out.with_suffix(".md").write_text(markdown + "\n")
    print(f"\n{markdown}\n\nWritten to {args.out} and {args.out.with_suffix('.md')} ({report['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
