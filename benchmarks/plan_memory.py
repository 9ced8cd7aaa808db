"""Memory of a plan held in the write side's aggregate cache (issue 2), for sizing it.

Grows plans with the event store benchmark's realistic workload on a temporary SQLite
store (`PlanWorkload`, saved 100 events at a time), then opens them with a service that
caches nothing (snapshot and the events after it, as the cache would hold them after an
eviction) and measures what holding them costs: the bytes still allocated (tracemalloc) and how
long a full garbage collection takes while they are held (every cached object is
traversed by each generation-2 collection, a pause for every request of the process):

- 1,000 plans of 20 events (the demo's plans have 10-28);
- 200 plans of 200 events (a plan worked on for a year or more);
- one plan of 10,000 events (the largest the issue asks for).

    .venv/bin/python benchmarks/plan_memory.py            # ~1 minute
    .venv/bin/python benchmarks/plan_memory.py --quick    # smaller counts

Prints the bytes per plan and the full collection's time per 1,000 plans of each kind;
the figures are in docs/deployment.md, where POLKU_AGGREGATE_CACHE_SIZE is described.
"""

from __future__ import annotations

import argparse
import base64
import gc
import random
import secrets
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from event_store import PlanWorkload, grow_plan, open_workload_plan  # noqa: E402

from domain.application import PlanService  # noqa: E402
from domain.storage import StoreSettings  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer plans of each kind")
    args = parser.parse_args(argv)
    kinds = [(100, 20), (20, 200), (1, 10_000)] if args.quick else [(1_000, 20), (200, 200), (1, 10_000)]
    with tempfile.TemporaryDirectory() as data_dir:
        settings = StoreSettings(data_dir=data_dir, master_key_b64=base64.b64encode(secrets.token_bytes(32)).decode())
        writer = PlanService(settings)
        uncached = StoreSettings(data_dir=data_dir, master_key_b64=settings.master_key_b64, aggregate_cache_size=0)
        reader = PlanService(uncached)
        try:
            rng = random.Random(2)
            for count, events in kinds:
                plan_ids = [grown_plan(writer, rng, events, f"m{events}-{i}") for i in range(count)]
                writer.flush_snapshots()
                held, collection_s = held_bytes_and_collection(reader, plan_ids)
                print(
                    f"{count:>5} plans of {events:>6,} events: {held / count / 1024:8.1f} KiB a plan held;"
                    f" a full collection {collection_s * 1e6 / count:6.1f} ms longer per 1,000 plans held",
                    flush=True,
                )
        finally:
            writer.close()
            reader.close()
    return 0


def grown_plan(service: PlanService, rng: random.Random, events: int, tag: str) -> str:
    workload = PlanWorkload.new(random.Random(rng.random()), tag)
    open_workload_plan(service, workload)
    grow_plan(service, workload, events)
    return workload.plan_id


def held_bytes_and_collection(service: PlanService, plan_ids: list[str]) -> tuple[int, float]:
    """Bytes still allocated while the plans are held, after opening them one by one, and
    the extra time a full collection takes with them held (median of 5, seconds)."""
    for plan_id in plan_ids[:1]:  # warm the keyring, transcoder and connection first
        service.get_plan(plan_id)
    empty = full_collection_s()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    held = [service.get_plan(plan_id) for plan_id in plan_ids]
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    collection = full_collection_s()
    del held
    return after - before, collection - empty


def full_collection_s() -> float:
    samples = []
    for _ in range(5):
        started = time.perf_counter()
        gc.collect()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


if __name__ == "__main__":
    sys.exit(main())
