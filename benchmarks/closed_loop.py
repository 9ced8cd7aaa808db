"""Server CPU per edit in a closed loop: the quick A/B measure behind `docs/performance.md`.

    python benchmarks/closed_loop.py [--quick] [--app-root DIR] [--seconds 20] [--editors 32]
        [--plans 300] [--viewers 600] [--runs 1] [--profile CMD] [--out FILE]

Builds ``--plans`` plans (with ``live_timeline.build_world``), starts ``polku serve`` from
``--app-root`` (default: this checkout; a ``git archive`` of another commit compares two
versions), connects ``--viewers`` websocket viewers, warms up, then lets ``--editors``
editors post the real edit form back to back for ``--seconds`` and prints edits/s and the
server's CPU milliseconds per edit (from /proc, all threads), per thread group too. Every
``POLKU_*`` variable of this process reaches the server (``POLKU_WORKER_THREADS=40`` runs
it with 40 worker threads). ``--profile`` runs a shell command during the timed loop, with
``{pid}`` and ``{seconds}`` replaced: e.g. ``py-spy record -p {pid} -d {seconds} -f raw -o
out.txt --gil``. The machine is shared and noisy: run old and new alternately (``--runs``
repeats within one set-up) and compare medians.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def thread_ticks(pid: int) -> dict[str, list[int]]:
    """User and system clock ticks of each thread of ``pid``, by thread name."""
    ticks: dict[str, list[int]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "stat").read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        totals = ticks.setdefault(name, [0, 0])
        totals[0] += int(fields[11])
        totals[1] += int(fields[12])
    return ticks


def spent_ms(before: dict[str, list[int]], after: dict[str, list[int]]) -> dict[str, dict[str, float]]:
    """CPU milliseconds (user, system) each thread group spent between two ``thread_ticks``."""
    tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
    spent = {}
    for name, (user, system) in after.items():
        user0, system0 = before.get(name, [0, 0])
        if user - user0 or system - system0:
            spent[name] = {"user": (user - user0) * tick_ms, "system": (system - system0) * tick_ms}
    return spent


async def measure(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    import live_timeline as lt
    from live_load import HttpPool, Items, closed_loop

    sizes = dataclasses.replace(lt.QUICK, plans=args.plans, viewers=args.viewers)
    world = await asyncio.to_thread(lt.build_world, work, sizes)
    env = {**os.environ, "POLKU_DATA_DIR": str(world.data_dir), "POLKU_STORE": "sqlite", "PYTHONUNBUFFERED": "1",
           **lt.MANY_SOCKETS_PER_ACCOUNT}
    port = lt._free_port()
    command = [lt.PYTHON, str(args.app_root / "benchmarks" / "live_server.py"), "--host", lt.HOST, "--port", str(port)]
    server = lt.Server("polku", command, env, port, work / "serve.log")
    runs = []
    try:
        server.wait_ready("/healthz")
        host, base = f"{lt.HOST}:{port}", f"http://{lt.HOST}:{port}"
        sessions = lt.sign_in_sessions(base, world.password, world, 1)
        rng = random.Random(3)
        counts = lt.spread_viewers(sizes.plans, sizes.viewers, rng)
        viewers = lt.viewer_specs(world, counts, sessions, rng, bare=False, plan_filter=list(range(sizes.plans)))
        audience, _connected = await lt.start_audience(viewers, 1, f"ws://{host}", base, work, timeout=600)
        await audience.collect()
        items = Items(world.items)
        pool = HttpPool(lt.HOST, port, size=2 * args.editors, sessions=1)
        statuses: dict[int, int] = {}
        build, answered = lt.edit_request(host, base, sessions, world.allowed), lt.edit_answered(statuses)
        await closed_loop(pool, items, build, answered, args.editors // 2, 3)  # warm-up
        for _run in range(args.runs):
            statuses.clear()
            profiler = None
            if args.profile:
                profiler = subprocess.Popen(
                    args.profile.format(pid=server.pid, seconds=max(1, int(args.seconds) - 2)), shell=True
                )
            before, started = thread_ticks(server.pid), time.monotonic()
            await closed_loop(pool, items, build, answered, args.editors, args.seconds)
            threads, seconds = spent_ms(before, thread_ticks(server.pid)), time.monotonic() - started
            if profiler is not None:
                profiler.wait()
            edits = sum(count for status, count in statuses.items() if status < 300)
            cpu_ms = sum(t["user"] + t["system"] for t in threads.values())
            runs.append({
                "edits": edits,
                "edits_per_s": round(edits / seconds, 1),
                "statuses": {str(k): v for k, v in statuses.items()},
                "server_cpu_ms_per_edit": round(cpu_ms / max(edits, 1), 2),
                "system_share": round(sum(t["system"] for t in threads.values()) / max(cpu_ms, 1), 3),
                "threads_ms_per_edit": {name: round((t["user"] + t["system"]) / max(edits, 1), 2)
                                        for name, t in threads.items()},
            })
            print(json.dumps(runs[-1]), flush=True)
        await audience.quit()
        pool.close()
    finally:
        server.stop()
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Server CPU per edit in a closed loop (A/B measure).")
    parser.add_argument("--app-root", type=Path, default=HERE.parent, help="the application to serve (default: this checkout)")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--editors", type=int, default=32)
    parser.add_argument("--plans", type=int, default=300)
    parser.add_argument("--viewers", type=int, default=600)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--profile", default="", help="a shell command run during each timed loop ({pid}, {seconds})")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "closed_loop.json")
    parser.add_argument("--quick", action="store_true", help="100 plans, 200 viewers, 16 editors, 5 s")
    args = parser.parse_args(argv)
    if args.quick:
        args.plans, args.viewers, args.editors, args.seconds = 100, 200, 16, 5.0
    args.app_root = args.app_root.resolve()
    os.environ["LIVE_TIMELINE_APP_ROOT"] = str(args.app_root)
    sys.path[:0] = [str(args.app_root / "benchmarks"), str(args.app_root)]
    work = Path(tempfile.mkdtemp(prefix="polku-closed-loop-"))
    try:
        runs = asyncio.run(measure(args, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {"app_root": str(args.app_root), "settings": {k: v for k, v in os.environ.items() if k.startswith("POLKU_")},
              "seconds": args.seconds, "editors": args.editors, "plans": args.plans, "viewers": args.viewers,
              "load_average_at_end": os.getloadavg(), "runs": runs,
              "median_cpu_ms_per_edit": statistics.median(r["server_cpu_ms_per_edit"] for r in runs)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"median server CPU per edit: {report['median_cpu_ms_per_edit']} ms; written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
