"""``polku serve``, plus a sampling profiler that only the benchmark switches on.

    python benchmarks/live_server.py --host 127.0.0.1 --port 8123

runs exactly ``polku serve --host ... --port ...`` (``web.cli.main``). When the variable
``LIVE_TIMELINE_PROFILE_DIR`` names a folder, a daemon thread watches it: while a file
``start`` exists there it samples the Python stacks of every thread of the server every
``LIVE_TIMELINE_PROFILE_INTERVAL_MS`` (default 3) ms (``sys._current_frames``), and when
``stop`` appears it writes ``profile.json`` there (then removes both files). Nothing of
the application changes; with the variable unset this is ``polku serve``. With
``LIVE_TIMELINE_GC_FILE`` set, the garbage collector's pauses are written to that file
every second (:class:`GcPauses`).

Each sample charges a thread's stack with the CPU time the thread used since the previous
sample (its own CPU clock), so waiting threads cost nothing however often they are seen.
The sampler runs when it gets the GIL, i.e. at a running thread's switch points (every
5 ms by default): a coarse but fair picture of where the CPU goes, by thread group and by
part of the edit's path (``BUCKETS``).
"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path

REPO_ROOT = Path(os.environ.get("LIVE_TIMELINE_APP_ROOT") or Path(__file__).resolve().parents[1])
"""The application's code: this checkout, or the benchmark's ``--app-root``."""
sys.path.insert(0, str(REPO_ROOT))

# Frames that mean "this thread waits for work" (leaf function names, per file ending).
_IDLE_LEAVES = {
    ("threading.py", "wait"),
    ("queue.py", "get"),
    ("selectors.py", "select"),
    ("runners.py", "run"),
    ("base_events.py", "run_forever"),
    ("base_events.py", "_run_once"),
    ("concurrent/futures/thread.py", "_worker"),
}


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _task_cpu() -> dict[int, tuple[str, int]]:
    """CPU ticks (user + system) of every thread of this process, by kernel thread id, from /proc."""
    tasks = {}
    for path in Path("/proc/self/task").iterdir():
        try:
            text = (path / "stat").read_text()
        except OSError:
            continue
        comm = text[text.index("(") + 1:text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        tasks[int(path.name)] = (comm, int(fields[11]) + int(fields[12]))
    return tasks


_KEYS: dict[object, tuple[str, bool]] = {}
"""Per code object: its "file:function" key and whether it is an idle leaf (cached: sampling is hot)."""


def _key(code: object) -> tuple[str, bool]:
    known = _KEYS.get(code)
    if known is not None:
        return known
    filename = code.co_filename  # type: ignore[attr-defined]
    name = code.co_name  # type: ignore[attr-defined]
    root = str(REPO_ROOT) + "/"
    if filename.startswith(root):
        filename = filename[len(root):]
    elif "site-packages/" in filename:
        filename = filename.split("site-packages/", 1)[1]
    elif "/lib/python3" in filename:
        filename = filename.split("/lib/python3", 1)[1].split("/", 1)[-1]
    idle = any(filename.endswith(end) and name == fn for end, fn in _IDLE_LEAVES)
    _KEYS[code] = known = (f"{filename}:{name}", idle)
    return known


# Where CPU goes, by the first of these found anywhere in a stack (checked in this order).
BUCKETS = (
    ("permessage-deflate compression (websocket sends)", ("websockets/extensions/permessage_deflate.py",)),
    ("access log", ("logging/__init__.py", "uvicorn/logging.py")),
    ("render: the HTTP answer of the edit (_saved, every panel)", ("web/controllers/plans.py:_saved",)),
    # The hub's renders run in a worker thread whose stack starts at the render itself
    # (PlanPanels.render), not at the hub: matched by the panels' own frame too.
    ("render: live hub, once per language (render_plan_fragments)",
     ("web/live/hub.py:_render", "web/plan_page.py:render")),
    ("render: presence", ("web/live/presence.py",)),
    ("projection: fold + save the plan row", ("projections/plans.py:_fold", "projections/plans.py:process_event")),
    ("read model: mark_seen write", ("projections/plans.py:mark_seen",)),
    ("read model: load a plan (PlanViews.plan)", ("projections/plans.py:load",)),
    ("domain command + event store append", ("domain/application.py:_change",)),
    ("sessions and accounts", ("web/accounts.py", "web/identity.py:authenticate_request")),
    ("websocket framing and send", ("websockets/", "uvicorn/protocols/websockets/")),
    ("HTTP, Litestar, middleware, form parsing", ("litestar/", "uvicorn/protocols/http/", "multipart")),
    ("event store / projection runner (other)", ("eventsourcing/",)),
)


IDLE_BUCKET = "(not seen mid-flight: short work finished between two samples, mostly event-loop plumbing)"
SAMPLING_SWITCH_INTERVAL_S = 0.0005


_BUCKET_OF: dict[tuple[str, ...], str] = {}


def _bucket(keys: list[str]) -> str:
    stack = tuple(keys)
    known = _BUCKET_OF.get(stack)
    if known is None:
        known = next((name for name, needles in BUCKETS
                      if any(needle in key for key in keys for needle in needles)), "other")
        _BUCKET_OF[stack] = known
    return known


class Sampler:
    """Samples every thread's stack and charges it the CPU time the thread used since the last sample.

    CPU per thread comes from its own CPU clock (``pthread_getcpuclockid``), so a thread that
    waits (a SQLite commit, a lock, ``stat``) is charged nothing however often it is seen;
    those waits are counted separately, as wall-time samples of busy-but-blocked threads.
    """

    def __init__(self, folder: Path, interval: float) -> None:
        self.folder = folder
        self.interval = interval
        self.me = 0
        self.rounds = 0

    def watch(self) -> None:
        self.me = threading.get_ident()
        start, stop = self.folder / "start", self.folder / "stop"
        while True:
            if start.exists():
                report = self.sample_until(stop)
                (self.folder / "profile.json").write_text(json.dumps(report))
                for path in (start, stop):
                    path.unlink(missing_ok=True)
            time.sleep(0.1)

    def sample_until(self, stop: Path) -> dict:
        names: dict[int, str] = {}
        clocks: dict[int, int] = {}
        last_cpu: dict[int, float] = {}
        cpu_by_group: Counter[str] = Counter()
        cpu_inclusive: dict[str, Counter[str]] = {}
        cpu_leaves: dict[str, Counter[str]] = {}
        cpu_paths: dict[str, Counter[str]] = {}
        buckets: Counter[str] = Counter()
        blocked: dict[str, Counter[str]] = {}
        began = time.monotonic()
        own_cpu = time.thread_time()
        tasks_before = _task_cpu()
        switch_interval = sys.getswitchinterval()
        # A shorter GIL switch interval while sampling: the sampler then also catches work that
        # holds the GIL for under 5 ms (restored when sampling stops).
        sys.setswitchinterval(SAMPLING_SWITCH_INTERVAL_S)
        try:
            self._loop(stop, names, clocks, last_cpu, cpu_by_group, cpu_inclusive, cpu_leaves, cpu_paths, buckets,
                       blocked)
        finally:
            sys.setswitchinterval(switch_interval)
        seconds = time.monotonic() - began
        own_cpu = time.thread_time() - own_cpu
        tasks_after = _task_cpu()
        native = {t.native_id: t.name for t in threading.enumerate()}
        per_task: Counter[str] = Counter()
        for tid, (comm, ticks) in tasks_after.items():
            spent = (ticks - tasks_before.get(tid, (comm, 0))[1]) / CLOCK_TICKS
            if spent > 0:
                name = native.get(tid) or f"(not a Python thread: {comm})"
                per_task[_group(name) if tid in native else name] += spent

        def top(counter: Counter[str], n: int) -> list[tuple[str, float]]:
            return [(key, round(value, 3)) for key, value in counter.most_common(n)]

        total = sum(cpu_by_group.values())
        return {
            "seconds": round(seconds, 2),
            "rounds": self.rounds,
            "interval_ms": self.interval * 1000,
            "switch_interval_ms_while_sampling": SAMPLING_SWITCH_INTERVAL_S * 1000,
            "cpu_seconds": round(total, 2),
            "sampler_own_cpu_seconds": round(own_cpu, 2),
            "cpu_percent_of_one_core": round(100 * total / seconds, 1) if seconds else None,
            "cpu_seconds_by_thread_group": {g: round(v, 2) for g, v in cpu_by_group.items()},
            "cpu_seconds_by_thread_group_from_proc": {g: round(v, 2) for g, v in per_task.most_common()},
            "cpu_share_by_part": {k: round(v / total, 3) for k, v in buckets.most_common()} if total else {},
            "cpu_inclusive": {g: top(c, 50) for g, c in cpu_inclusive.items()},
            "cpu_leaves": {g: top(c, 30) for g, c in cpu_leaves.items()},
            "cpu_own_paths": {g: top(c, 25) for g, c in cpu_paths.items()},
            "blocked_samples": {g: c.most_common(15) for g, c in blocked.items()},
        }

    def _loop(self, stop, names, clocks, last_cpu, cpu_by_group, cpu_inclusive, cpu_leaves, cpu_paths, buckets,
              blocked) -> None:  # type: ignore[no-untyped-def]
        self.rounds = 0
        next_check = time.monotonic()
        natives: dict[int, int | None] = {}
        while True:
            now = time.monotonic()
            if now >= next_check:
                if stop.exists():
                    break
                threads = [t for t in threading.enumerate() if t.ident is not None]
                names = {t.ident: t.name for t in threads}
                natives = {t.ident: t.native_id for t in threads}
                next_check = now + 0.2
            self.rounds += 1
            for ident, frame in sys._current_frames().items():
                if ident == self.me:
                    continue
                # A thread's ident (its pthread_t) is reused by a later thread once it ends (anyio's
                # workers end after 10 s idle): key the CPU clock by the kernel thread id as well.
                thread_key = (ident, natives.get(ident))
                clock = clocks.get(thread_key)
                if clock is None:
                    try:
                        clocks[thread_key] = clock = time.pthread_getcpuclockid(ident)
                    except (OSError, AttributeError):
                        continue
                try:
                    cpu = time.clock_gettime(clock)
                except OSError:
                    clocks.pop(thread_key, None)
                    last_cpu.pop(thread_key, None)
                    continue
                spent = cpu - last_cpu.get(thread_key, cpu)
                last_cpu[thread_key] = cpu
                leaf, idle = _key(frame.f_code)
                if spent <= 0:
                    if not idle:
                        blocked.setdefault(_group(names.get(ident, "?")), Counter())[leaf] += 1
                    continue
                group = _group(names.get(ident, "?"))
                cpu_by_group[group] += spent
                if idle:
                    buckets[IDLE_BUCKET] += spent
                    continue
                keys = []
                while frame is not None:
                    keys.append(_key(frame.f_code)[0])
                    frame = frame.f_back
                buckets[_bucket(keys)] += spent
                cpu_leaves.setdefault(group, Counter())[keys[0]] += spent
                inclusive = cpu_inclusive.setdefault(group, Counter())
                for key in dict.fromkeys(keys):
                    inclusive[key] += spent
                own = [k for k in reversed(keys) if k.startswith(("web/", "domain/", "projections/", "timeline/"))]
                if own:
                    cpu_paths.setdefault(group, Counter())[" > ".join(own[-4:])] += spent
            time.sleep(self.interval)


def _group(name: str) -> str:
    if name == "MainThread":
        return "event loop (main thread)"
    if name.startswith("AnyIO worker"):
        return "anyio worker threads"
    return "other threads"


GC_LONG_PAUSE_MS = 20.0


class GcPauses:
    """How long the garbage collector stopped the process, per generation (gc.callbacks), written to a
    JSON file every second: the totals, and every pause over ``GC_LONG_PAUSE_MS`` with its moment
    (time.monotonic), so that a benchmark can tell whether a slow edit met a collection.

    It does not count the frozen objects: ``gc.get_freeze_count()`` walks the permanent generation
    holding the GIL (0.1-0.7 s a call in a loaded instance, see ``web.gc_policy``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.generations = {str(g): {"count": 0, "ms": 0.0, "longest_ms": 0.0} for g in range(3)}
        self.long: list[tuple[float, int, float]] = []
        self._began = 0.0

    def callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._began = time.perf_counter()
            return
        pause = (time.perf_counter() - self._began) * 1000
        totals = self.generations[str(info["generation"])]
        totals["count"] += 1
        totals["ms"] += pause
        totals["longest_ms"] = max(totals["longest_ms"], pause)
        if pause > GC_LONG_PAUSE_MS:
            self.long.append((round(time.monotonic(), 3), info["generation"], round(pause, 1)))

    def write_every_second(self) -> None:
        while True:
            generations = {name: dict(totals) for name, totals in self.generations.items()}
            self.path.write_text(json.dumps({"generations": generations, "long_pauses": list(self.long)}))
            time.sleep(1)


def run_process() -> None:
    folder = os.environ.get("LIVE_TIMELINE_PROFILE_DIR")
    if folder:
        interval = float(os.environ.get("LIVE_TIMELINE_PROFILE_INTERVAL_MS", "3")) / 1000
        sampler = Sampler(Path(folder), interval)
        threading.Thread(target=sampler.watch, name="live-timeline-sampler", daemon=True).start()
    gc_file = os.environ.get("LIVE_TIMELINE_GC_FILE")
    if gc_file:
        pauses = GcPauses(Path(gc_file))
        gc.callbacks.append(pauses.callback)
        threading.Thread(target=pauses.write_every_second, name="live-timeline-gc", daemon=True).start()
    from web.cli import main as polku

    sys.exit(polku(["serve", *sys.argv[1:]]))


if __name__ == "__main__":
    run_process()
