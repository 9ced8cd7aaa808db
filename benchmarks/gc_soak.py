"""Soak ``polku serve`` under steady edits and viewers: memory over time and the collector's pauses.

    .venv/bin/python benchmarks/gc_soak.py --minutes 5 --policies python freeze

For each policy given (the value of ``POLKU_GC``, see ``web/gc_policy.py``), one after the
other on the same world: ``polku serve`` (through ``live_server.py``, which records the
garbage collector's pauses), the live timeline's plans and signed-in viewers (reused from
``live_timeline.py``: 1,000 plans, 2,000 websocket viewers by default), and the need-edit
form posted at a steady rate (open loop) for ``--minutes``, in windows of ``--window``
seconds. Every ``--reconnect-every`` seconds all viewers disconnect and connect again, as
after a deploy or a network blip: the server's objects of 2,000 closed connections then
become garbage, cyclic garbage among them, which a frozen heap only gives back at its
reclaim step (so the soak shows whether memory stays bounded).

Printed per window and written to ``benchmarks/results/gc_soak.json`` (or ``--out``): the
server's RSS and share of a core, the collector's pauses (count and milliseconds per
generation, the longest, those over 20 ms) and edit-to-every-viewer latency (p50/p99).
Not part of ``make test``: it runs for minutes and needs the machine's cores.

It reports no count of frozen objects: ``gc.get_freeze_count()`` walks the whole permanent
generation holding the GIL (0.1-0.7 s a call with about 550,000 frozen objects in a loaded
server), so a harness that samples it every second adds a pause a second and about a tenth
of a core that only the ``freeze`` policy pays, and the soak would measure its own probe.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
for _path in (os.environ.get("LIVE_TIMELINE_APP_ROOT"), str(HERE)):
    if _path and _path not in sys.path:
        sys.path.insert(0, _path)

import live_timeline  # noqa: E402
from live_load import HttpPool, Items, ProcMeter, open_loop, peak_rss_mib, rss_mib  # noqa: E402
from live_timeline import (  # noqa: E402
    Server,
    build_world,
    edit_answered,
    edit_request,
    finish_report,
    log,
    machine_info,
    measure_step,
    sign_in_sessions,
    spread_viewers,
    start_audience,
    viewer_specs,
)

DEFAULT_OUT = HERE / "results" / "gc_soak.json"
HOST = "127.0.0.1"


def gc_figures(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {"generations": {}, "long_pauses": []}


def pauses_between(before: dict[str, Any], after: dict[str, Any], since: float) -> dict[str, Any]:
    """The collector's work between two readings of live_server.py's GC file."""
    generations = {}
    for name, totals in after["generations"].items():
        then = before["generations"].get(name, {"count": 0, "ms": 0.0})
        generations[name] = {"count": totals["count"] - then["count"], "ms": round(totals["ms"] - then["ms"], 1)}
    long = [p for p in after["long_pauses"] if p[0] >= since]
    return {"generations": generations, "over_20_ms": len(long), "longest_ms": max((p[2] for p in long), default=0.0),
            "long_pauses_ms": [p[2] for p in long]}


async def soak(policy: str, args: argparse.Namespace, world: live_timeline.World, work: Path) -> dict[str, Any]:
    port = live_timeline._free_port()
    gc_file = work / f"gc-{policy}.json"
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("POLKU_", "LIVE_TIMELINE_PROFILE"))}
    env.update({"POLKU_DATA_DIR": str(world.data_dir), "POLKU_STORE": "sqlite", "PYTHONUNBUFFERED": "1",
                "POLKU_GC": policy, "LIVE_TIMELINE_GC_FILE": str(gc_file)})
    if args.reclaim_seconds:
        env["POLKU_GC_RECLAIM_SECONDS"] = str(args.reclaim_seconds)
    command = [sys.executable, str(HERE / "live_server.py"), "--host", HOST, "--port", str(port)]
    server = Server(f"polku-{policy}", command, env, port, work / f"polku-{policy}.log")
    base, host = f"http://{HOST}:{port}", f"{HOST}:{port}"
    result: dict[str, Any] = {"policy": policy, "env": {k: v for k, v in env.items() if k.startswith("POLKU_GC")},
                              "windows": []}
    audience = None
    pool = None
    try:
        server.wait_ready("/healthz")
        sessions = sign_in_sessions(base, world.password, world, 1)
        rng = random.Random(3)
        counts = spread_viewers(args.plans, args.viewers, rng)
        viewers = viewer_specs(world, counts, sessions, rng, bare=False, plan_filter=list(range(args.plans)))
        audience, _connect = await start_audience(viewers, 2, f"ws://{host}", base, work, timeout=600)
        result["rss_mib_connected"] = rss_mib(server.pid)
        log(f"{policy}: {result['rss_mib_connected']} MiB with {len(viewers)} viewers; soaking {args.minutes} min")
        statuses: dict[int, int] = {}
        items = Items(world.items)
        pool = HttpPool(HOST, port, size=128)
        build, answered = edit_request(host, base, sessions, world.allowed), edit_answered(statuses)
        began = time.monotonic()
        last_reconnect = began
        while time.monotonic() - began < args.minutes * 60:
            if time.monotonic() - last_reconnect >= args.reconnect_every:
                await audience.quit()
                audience, connect = await start_audience(viewers, 2, f"ws://{host}", base, work, timeout=600)
                last_reconnect = time.monotonic()
                log(f"{policy}: viewers reconnected ({connect['connected']} in {connect['seconds_to_connect_all']} s)")
            meter = ProcMeter({"server": server.pid, **audience.pids, "load_generator": os.getpid()})
            before = gc_figures(gc_file)
            since = time.monotonic()
            step = await measure_step(
                "soak", lambda: open_loop(pool, items, build, answered, args.rate, args.window), audience, meter,
                statuses, rate=args.rate, seconds=args.window, server=server,
            )
            await asyncio.sleep(1.1)  # the GC file is written every second
            after = gc_figures(gc_file)
            window = {
                "at_s": round(time.monotonic() - began),
                "rss_mib": rss_mib(server.pid),
                "gc": pauses_between(before, after, since),
                "edit_to_all_viewers_ms": step["edit_to_all_viewers_ms"],
                "achieved_per_s": step["achieved_per_s"],
                "statuses": step["statuses"],
                "undelivered": step["undelivered_after_wait"],
                "server_cpu_percent": step["cpu_percent"].get("server"),
                "other_processes_cpu_percent": step["cpu_percent"].get("other_processes"),
                "loadavg": os.getloadavg()[0],
            }
            result["windows"].append(window)
            latency, gc = window["edit_to_all_viewers_ms"], window["gc"]
            print(f"  {policy:>6} t={window['at_s']:>4}s rss {window['rss_mib']:>6} MiB cpu {window['server_cpu_percent']} %"
                  f" | gen2 {gc['generations'].get('2', {}).get('count')} x, {gc['generations'].get('2', {}).get('ms')} ms;"
                  f" >20ms {gc['over_20_ms']} (longest {gc['longest_ms']}) | edit->all p50 {latency['p50']} p99"
                  f" {latency['p99']} ms | {window['achieved_per_s']}/s load {window['loadavg']:.2f}", flush=True)
        result["peak_rss_mib"] = peak_rss_mib(server.pid)
        result["server_errors"] = server.errors()
        result["summary"] = summarise(result["windows"])
    finally:
        if audience is not None:
            await audience.quit()
        if pool is not None:
            pool.close()
        server.stop()
    return result


def summarise(windows: list[dict[str, Any]]) -> dict[str, Any]:
    def median(values: list[float]) -> float | None:
        values = sorted(v for v in values if v is not None)
        return values[len(values) // 2] if values else None

    pauses = [ms for w in windows for ms in w["gc"]["long_pauses_ms"]]
    return {
        "windows": len(windows),
        "median_window_p99_ms": median([w["edit_to_all_viewers_ms"]["p99"] for w in windows]),
        "median_window_p50_ms": median([w["edit_to_all_viewers_ms"]["p50"] for w in windows]),
        "median_server_cpu_percent": median([w["server_cpu_percent"] for w in windows]),
        "worst_window_p99_ms": max((w["edit_to_all_viewers_ms"]["p99"] or 0 for w in windows), default=None),
        "pauses_over_20_ms": len(pauses),
        "longest_pause_ms": max(pauses, default=0.0),
        "gen2_collections": sum(w["gc"]["generations"].get("2", {}).get("count", 0) for w in windows),
        "gen2_ms": round(sum(w["gc"]["generations"].get("2", {}).get("ms", 0.0) for w in windows), 1),
        "rss_mib_first_last_max": [windows[0]["rss_mib"], windows[-1]["rss_mib"], max(w["rss_mib"] for w in windows)]
        if windows else None,
    }


async def orchestrate(args: argparse.Namespace, work: Path, report: dict[str, Any]) -> None:
    sizes = replace(live_timeline.FULL, plans=args.plans, viewers=args.viewers, extra_meeting_needs=0)
    log(f"setting up {args.plans} plans in {work}")
    world = await asyncio.to_thread(build_world, work, sizes)
    report["setup"] = {"plans": args.plans, "viewers": args.viewers, "events": world.events}
    for policy in args.policies:
        report["runs"].append(await soak(policy, args, world, work))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Memory and collector pauses of polku serve over minutes.")
    parser.add_argument("--minutes", type=float, default=5.0, help="soak time per policy (default 5)")
    parser.add_argument("--policies", nargs="+", default=["python", "freeze"], choices=["python", "freeze"],
                        help="POLKU_GC values to run, one after the other (default: python freeze)")
    parser.add_argument("--reclaim-seconds", type=float, default=None,
                        help="POLKU_GC_RECLAIM_SECONDS for the server (default: the application's)")
    parser.add_argument("--plans", type=int, default=1000)
    parser.add_argument("--viewers", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=25.0, help="edits a second (default 25)")
    parser.add_argument("--window", type=float, default=20.0, help="seconds per reported window (default 20)")
    parser.add_argument("--reconnect-every", type=float, default=90.0,
                        help="seconds between reconnections of every viewer (default 90)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"benchmark": "gc_soak", "command": " ".join(["benchmarks/gc_soak.py", *sys.argv[1:]]),
                              "machine": machine_info(), "args": {k: str(v) for k, v in vars(args).items()},
                              "runs": []}
    work = Path(tempfile.mkdtemp(prefix="polku-gc-soak-"))
    started = time.monotonic()
    try:
        asyncio.run(orchestrate(args, work, report))
    finally:
        finish_report(report, args, work, started)
    for run in report["runs"]:
        print(f"{run['policy']}: {json.dumps(run.get('summary'))}; peak RSS {run.get('peak_rss_mib')} MiB")
    print(f"Written to {args.out} ({report['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
