"""Access log benchmark (issue 4): what recording a read adds to reading a plan.

Every read of a plan waits until its access log entry is durable (``web.accesslog``).
This measures that wait, as the web application has it: asyncio "readers" (one task per
concurrent request), each recording one entry per read, back to back, at increasing
concurrency, on SQLite (a file on the real disk: WAL, ``synchronous=FULL``) and on
PostgreSQL (a fresh schema, dropped afterwards), two ways in the same run:

- ``group``: :meth:`AccessLog.arecord`: the log's writer thread commits whatever entries
  are waiting in one transaction (group commit); a read waits for its batch's commit;
- ``baseline``: one durable transaction per read, without batching: the same chained
  insert (lock, read the head, hash, insert, commit) of one entry, run in a worker thread
  (``anyio.to_thread``, as a sync handler would); SQLite through one connection behind a
  lock, PostgreSQL through a pool of connections (the table lock orders them).

Reported per store, mode and concurrency: entries per second (all readers together), the
per-read added latency p50/p95/p99/max in milliseconds, and for ``group`` the mean batch
size; each figure is the median of ``--repeat`` runs (3; every run is kept in the JSON
too), each on a fresh log, the two modes one after the other. Then how fast ``verify``
walks the log (entries per second).

    .venv/bin/python benchmarks/access_log.py            # concurrency 1..256, ~4 minutes
    .venv/bin/python benchmarks/access_log.py --quick    # 1, 8, 64, fewer reads
    .venv/bin/python benchmarks/access_log.py --stores sqlite

Writes every figure, with the machine, versions, date and git commit, to
``benchmarks/results/access_log.json`` (or ``--out``). PostgreSQL settings come from the
``--pg-*`` options, else POLKU_TEST_PG_HOST/PORT/USER/DB (the test suite's), else
127.0.0.1:5432, user postgres, database polku_test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import anyio.to_thread  # noqa: E402
import msgspec  # noqa: E402

from domain.storage import StoreSettings  # noqa: E402
from web.accesslog import (  # noqa: E402
    ACCESSLOG_FILENAME,
    AccessEntry,
    AccessLog,
    _Database,
    _PostgresDatabase,
    _SQLiteDatabase,
    accesslog_schema,
)

RESULTS = REPO_ROOT / "benchmarks" / "results"
FULL_LEVELS = (1, 4, 16, 64, 256)
QUICK_LEVELS = (1, 8, 64)
FULL_READS = 3000
QUICK_READS = 600
#: A read's entry, as the plan page records it (names of realistic length).
PEOPLE = [("aino.virtanen", "Aino Virtanen"), ("mikko.laine", "Mikko Laine"), ("pekka.nieminen", "Pekka Nieminen")]


class StoreUnavailable(RuntimeError):
    pass


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    levels = QUICK_LEVELS if args.quick else FULL_LEVELS
    reads = QUICK_READS if args.quick else FULL_READS
    started = time.perf_counter()
    report: dict[str, Any] = {
        "benchmark": "access_log",
        "mode": "quick" if args.quick else "full",
        "command": " ".join([Path(sys.executable).name, *sys.argv]) if argv is None else None,
        "machine": machine_info(),
        "sizes": {"concurrency": list(levels), "reads_per_level": reads, "repeats": args.repeat},
        "stores": {},
    }
    for store in args.stores:
        print(f"\n=== {store} ===", flush=True)
        try:
            report["stores"][store] = run_store(store, args, levels, reads)
        except StoreUnavailable as error:
            print(f"  skipped: {error}", flush=True)
            report["stores"][store] = {"skipped": str(error)}
    report["duration_s"] = round(time.perf_counter() - started, 1)
    report["machine"]["load_average_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print_report(report)
    print(f"\nResults written to {out} ({report['duration_s']} s)")
    return 0


# ------------------------------------------------------------------------------ stores


def run_store(store: str, args: argparse.Namespace, levels: tuple[int, ...], reads: int) -> dict[str, Any]:
    results: dict[str, Any] = {"group": {}, "baseline": {}, "runs": {"group": {}, "baseline": {}}}
    with open_target(store, args) as (open_log, open_database):
        for level in levels:
            runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "group": []}
            for _ in range(args.repeat):
                # Each mode on a fresh log of its own, one after the other, and again: the
                # median of the repeats evens out what else the machine was doing.
                with _fresh(open_log, open_database) as (log, baseline):
                    runs["baseline"].append(asyncio.run(drive(baseline.arecord, level, reads)))
                    before = (log.batches, log.committed)
                    measured = asyncio.run(drive(log.arecord, level, reads))
                    batches, committed = log.batches - before[0], log.committed - before[1]
                    measured["mean_batch"] = round(committed / batches, 1) if batches else None
                    runs["group"].append(measured)
            for mode in ("baseline", "group"):
                results[mode][str(level)] = _median_of(runs[mode])
                results["runs"][mode][str(level)] = runs[mode]
            _print_level(level, results["baseline"][str(level)], results["group"][str(level)])
        with _fresh(open_log, open_database) as (log, _baseline):
            asyncio.run(drive(log.arecord, 64, reads * 10))
            started = time.perf_counter()
            report = log.verify()
            elapsed = time.perf_counter() - started
            assert report.ok, report
            results["verify"] = {"entries": report.checked, "seconds": round(elapsed, 3),
                                 "entries_per_s": round(report.checked / elapsed)}
            print(f"  verify: {report.checked} entries in {elapsed:.2f} s "
                  f"({results['verify']['entries_per_s']:,} entries/s)", flush=True)
    return results


def _median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over the repeats."""
    merged: dict[str, Any] = {}
    for key in runs[0]:
        values = sorted(run[key] for run in runs if run[key] is not None)
        merged[key] = values[len(values) // 2] if values else None
    return merged


@contextmanager
def open_target(store: str, args: argparse.Namespace) -> Iterator[tuple[Callable[[str], AccessLog], Callable[[str], _Database]]]:
    """(open a log named x, open a bare database named x) on the store, cleaned up after."""
    if store == "sqlite":
        RESULTS.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="access-log-", dir=RESULTS))  # the real disk, not a tmpfs
        try:
            yield (lambda name: AccessLog.sqlite(folder / name / ACCESSLOG_FILENAME),
                   lambda name: _SQLiteDatabase(folder / name / ACCESSLOG_FILENAME, busy_timeout_s=30))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    import psycopg
    from psycopg import sql

    conninfo = {"host": args.pg_host, "port": args.pg_port, "dbname": args.pg_db, "user": args.pg_user,
                "password": args.pg_password or None}
    try:
        with psycopg.connect(**conninfo, connect_timeout=3, autocommit=True) as connection:
            connection.execute("SELECT 1")
    except psycopg.Error as error:
        raise StoreUnavailable(str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__) from None
    schemas: list[str] = []

    def settings(name: str) -> StoreSettings:
        schema = f"bench_{uuid.uuid4().hex[:10]}"
        settings = StoreSettings(kind="postgres", pg_host=args.pg_host, pg_port=args.pg_port, pg_db=args.pg_db,
                                 pg_user=args.pg_user, pg_password=args.pg_password, pg_schema=schema)
        schemas.append(accesslog_schema(settings))
        return settings

    def bare(name: str) -> _Database:
        store_settings = settings(name)
        return _PostgresDatabase(store_settings.pg_conninfo, accesslog_schema(store_settings), lock_timeout_s=30)

    try:
        yield (lambda name: AccessLog.open(settings(name)), bare)
    finally:
        with psycopg.connect(**conninfo, autocommit=True) as connection:
            for schema in schemas:
                connection.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@contextmanager
def _fresh(open_log: Callable[[str], AccessLog], open_database: Callable[[str], _Database]) -> Iterator[tuple[AccessLog, Baseline]]:
    name = uuid.uuid4().hex[:8]
    log = open_log(f"group-{name}")
    baseline = Baseline(open_database, f"baseline-{name}")
    try:
        yield log, baseline
    finally:
        log.close()
        baseline.close()


class Baseline:
    """One durable transaction per read, no batching: the log's own chained insert of one entry.

    SQLite: one connection behind a lock (a second writer would only wait on the file lock).
    PostgreSQL: a pool of 10 connections, used from worker threads; the table lock orders them.
    """

    def __init__(self, open_database: Callable[[str], _Database], name: str) -> None:
        first = open_database(name)
        self.sqlite = isinstance(first, _SQLiteDatabase)
        self.databases: queue.Queue[_Database] = queue.Queue()
        self.databases.put(first)
        if not self.sqlite:
            for _ in range(9):
                self.databases.put(open_database_same(first))
        self.clock_lock = threading.Lock()

    def record(self, entry: AccessEntry) -> None:
        database = self.databases.get()
        try:
            with self.clock_lock:
                at = _now()
            database.append([(entry, at)])
        finally:
            self.databases.put(database)

    async def arecord(self, entry: AccessEntry) -> None:
        await anyio.to_thread.run_sync(self.record, entry)

    def close(self) -> None:
        while not self.databases.empty():
            self.databases.get().close()


def open_database_same(database: _Database) -> _Database:
    assert isinstance(database, _PostgresDatabase)
    return _PostgresDatabase(database.conninfo, database.schema, lock_timeout_s=30)


def _now() -> str:
    from web.accesslog import format_time

    return format_time(datetime.now(UTC))


# ------------------------------------------------------------------------------ driving


async def drive(record: Callable[[AccessEntry], Awaitable[None]], level: int, reads: int) -> dict[str, Any]:
    """``level`` readers record ``reads`` entries in all, each waiting for its own entry."""
    per_reader = max(reads // level, 1)
    latencies: list[float] = []
    plan_ids = [str(uuid.uuid4()) for _ in range(50)]

    async def reader(number: int) -> None:
        person_id, name = PEOPLE[number % len(PEOPLE)]
        for i in range(per_reader):
            entry = AccessEntry(plan_id=plan_ids[(number + i) % len(plan_ids)], what="page", person_id=person_id,
                                person_name=name, organisation_id="pirha-toike",
                                organisation_name="Pirkanmaan hyvinvointialue, työkyvyn tuki", version=i + 1)
            started = time.perf_counter()
            await record(entry)
            latencies.append(time.perf_counter() - started)

    await record(AccessEntry(plan_id=plan_ids[0], what="page", person_id="warm", person_name="Warm Up",
                             organisation_id="o", organisation_name="O"))  # connections open, thread started
    started = time.perf_counter()
    await asyncio.gather(*(reader(n) for n in range(level)))
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "reads": len(ordered),
        "seconds": round(elapsed, 3),
        "entries_per_s": round(len(ordered) / elapsed),
        "p50_ms": _ms(_percentile(ordered, 50)),
        "p95_ms": _ms(_percentile(ordered, 95)),
        "p99_ms": _ms(_percentile(ordered, 99)),
        "max_ms": _ms(ordered[-1]),
    }


def _percentile(ordered: list[float], percent: float) -> float:
    rank = max(1, -(-len(ordered) * percent // 100))
    return ordered[int(rank) - 1]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


# ------------------------------------------------------------------------------ output


def _print_level(level: int, baseline: dict[str, Any], group: dict[str, Any]) -> None:
    print(
        f"  concurrency {level:>3}:"
        f"  baseline {baseline['entries_per_s']:>6,}/s p50 {baseline['p50_ms']:>7.2f} p99 {baseline['p99_ms']:>8.2f} ms"
        f"  | group {group['entries_per_s']:>6,}/s p50 {group['p50_ms']:>6.2f} p99 {group['p99_ms']:>7.2f} ms"
        f" (batch {group['mean_batch']})",
        flush=True,
    )


def print_report(report: dict[str, Any]) -> None:
    machine = report["machine"]
    print(f"\nAccess log, {report['mode']} run: {machine['cpu_count']} CPUs ({machine['cpu_model']}), "
          f"Python {machine['python']}, commit {(machine['git_commit'] or '?')[:10]}")
    for store, results in report["stores"].items():
        if "skipped" in results:
            print(f"\n{store}: skipped ({results['skipped']})")
            continue
        print(f"\n{store}: entries/s and added latency per read (ms), baseline = one durable insert per read")
        print("  readers | baseline /s   p50     p99  | group /s   p50    p99   batch")
        for level, group in results["group"].items():
            base = results["baseline"][level]
            print(f"  {level:>7} | {base['entries_per_s']:>8,} {base['p50_ms']:>7.2f} {base['p99_ms']:>7.2f}"
                  f" | {group['entries_per_s']:>7,} {group['p50_ms']:>6.2f} {group['p99_ms']:>6.2f} {group['mean_batch']!s:>6}")
        verify = results["verify"]
        print(f"  verify: {verify['entries_per_s']:,} entries/s ({verify['entries']} entries)")


def machine_info() -> dict[str, Any]:
    import psycopg

    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "msgspec": msgspec.__version__,
        "psycopg": psycopg.__version__,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty_paths": len((_git("status", "--porcelain") or "").splitlines()),
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="concurrency 1, 8, 64 and fewer reads")
    parser.add_argument("--stores", nargs="+", choices=["sqlite", "postgres"], default=["sqlite", "postgres"])
    parser.add_argument("--repeat", type=int, default=None, help="runs per level, medians reported (default 3; quick: 1)")
    parser.add_argument("--out", default=str(RESULTS / "access_log.json"))
    parser.add_argument("--pg-host", default=os.environ.get("POLKU_TEST_PG_HOST", "127.0.0.1"))
    parser.add_argument("--pg-port", type=int, default=int(os.environ.get("POLKU_TEST_PG_PORT", "5432")))
    parser.add_argument("--pg-db", default=os.environ.get("POLKU_TEST_PG_DB", "polku_test"))
    parser.add_argument("--pg-user", default=os.environ.get("POLKU_TEST_PG_USER", "postgres"))
    parser.add_argument("--pg-password", default=os.environ.get("POLKU_TEST_PG_PASSWORD", ""))
    args = parser.parse_args(argv)
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    return args


if __name__ == "__main__":
    sys.exit(main())
