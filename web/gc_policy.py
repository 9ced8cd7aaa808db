"""How ``polku serve`` runs Python's garbage collector: freeze the long-lived heap, reclaim it rarely.

Why. With 1,000-2,000 websocket viewers, thousands of plans in the aggregate cache and the
read side's caches, the heap holds millions of container objects that live for the whole
process. Python's own policy runs a full (generation 2) collection whenever the long-lived
objects have grown by a quarter, and each one walks all of them: 200-460 ms during which
the event loop stands still, and the cause of most p99 spikes of edit-to-viewer latency
(docs/performance.md, "Live timeline" and "Several instances").

The policy (``POLKU_GC=freeze``, the default):

- **Every** ``freeze_seconds`` (``POLKU_GC_FREEZE_SECONDS``, default 10) a *freeze step*:
  ``gc.collect()`` and then ``gc.freeze()``. The collection walks only the objects not yet
  frozen (those allocated since the previous step, which survived), so it is short; it
  frees the cyclic garbage among them *before* they are frozen. ``gc.freeze()`` then moves
  every surviving object into the permanent generation, which no collection walks: the
  automatic collections between two steps (Python's thresholds, unchanged) only ever see
  the few seconds' worth of new objects.
- **Every** ``reclaim_seconds`` (``POLKU_GC_RECLAIM_SECONDS``, default 600) a *reclaim
  step*: ``gc.unfreeze()``, one full ``gc.collect()`` over the whole heap, ``gc.freeze()``
  again. This is what keeps memory bounded: an object frozen while alive that later
  becomes part of unreachable cycles (a closed websocket's tasks and protocol objects, a
  plan evicted from a cache with cycles inside it) is not freed by a freeze step, only by
  this one. Objects freed by reference counting (most garbage) are freed at once, frozen
  or not; only cyclic garbage waits. The reclaim step costs one pause as long as Python's
  own full collections (it walks the same heap), but once per ``reclaim_seconds`` instead
  of every few tens of seconds under load. It waits for a *quiet moment*: once due, it
  runs in the first second in which the process used under ``QUIET_CPU_SHARE`` of a
  core, and at the latest ``reclaim_seconds / 2`` after it became due.

``POLKU_GC=python`` leaves Python's collector as it is (no freezing, no steps).

Trade-off: memory held by cyclic garbage of frozen objects grows until the next reclaim
(``benchmarks/gc_soak.py`` measures it); a longer ``reclaim_seconds`` means fewer long
pauses and more such memory; a shorter ``freeze_seconds`` means shorter automatic
collections between steps and more frequent (short) steps.

Watching it: ``gc.get_freeze_count()`` is no counter but a walk of the whole permanent
generation, holding the GIL (0.1-0.7 s with about 550,000 frozen objects in a loaded
instance). A probe calling it every second (a benchmark harness did) costs about a tenth of
a core and a pause a second that only this policy pays; the reclaim step calls it once,
after its own full collection, where it adds little.

The steps run on the event loop (a task started after the application's start-up, so
the demo, templates and caches loaded at start-up are frozen by the first step). A
collection holds the GIL wherever it runs, so another thread would not make it cheaper.
On shutdown the task stops and the heap is unfrozen, so an in-process server (the tests)
leaves the collector as it found it.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from litestar import Litestar

__all__ = ("GcPolicy", "GcSteps", "QUIET_CPU_SHARE")

logger = logging.getLogger(__name__)

QUIET_CPU_SHARE = 0.2
"""A second in which the process used less than this share of one core is quiet enough for
the reclaim step's long pause."""

_MODES = ("freeze", "python")


@dataclass(frozen=True, slots=True)
class GcPolicy:
    """The collector's policy of one ``polku serve`` process (see the module's docstring)."""

    mode: str = "freeze"
    freeze_seconds: float = 10.0
    reclaim_seconds: float = 600.0

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise ValueError(f"POLKU_GC must be one of {', '.join(_MODES)}; got {self.mode!r}")
        if not self.freeze_seconds > 0 or not self.reclaim_seconds > 0:
            raise ValueError("POLKU_GC_FREEZE_SECONDS and POLKU_GC_RECLAIM_SECONDS must be over 0")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> GcPolicy:
        """``POLKU_GC``, ``POLKU_GC_FREEZE_SECONDS``, ``POLKU_GC_RECLAIM_SECONDS`` (unset: the defaults)."""
        env = os.environ if environ is None else environ
        default = cls()
        return cls(
            mode=(env.get("POLKU_GC") or default.mode).strip().lower(),
            freeze_seconds=_seconds(env, "POLKU_GC_FREEZE_SECONDS", default.freeze_seconds),
            reclaim_seconds=_seconds(env, "POLKU_GC_RECLAIM_SECONDS", default.reclaim_seconds),
        )

    def install(self, app: Litestar) -> None:
        """Run the policy while ``app`` runs: started after its other start-up work, stopped on shutdown."""
        if self.mode == "python":
            return
        steps = GcSteps(self)
        app.on_startup.append(steps.start)
        app.on_shutdown.insert(0, steps.stop)


class GcSteps:
    """The freeze and reclaim steps of a :class:`GcPolicy`, and the task that runs them."""

    def __init__(self, policy: GcPolicy, cpu_clock: Callable[[], float] = time.process_time) -> None:
        self.policy = policy
        self.cpu_clock = cpu_clock
        self.task: asyncio.Task[None] | None = None
        self.reclaims = 0

    @staticmethod
    def freeze_step() -> None:
        """Collect what is not frozen yet (short: only the objects since the last step), then freeze the rest."""
        gc.collect()
        gc.freeze()

    def reclaim_step(self) -> None:
        """Unfreeze, collect the whole heap (one long pause: the frozen cyclic garbage goes), freeze again."""
        began = time.perf_counter()
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        self.reclaims += 1
        logger.info("garbage collector: reclaimed the frozen heap in %.0f ms (%d objects frozen again)",
                    (time.perf_counter() - began) * 1000, gc.get_freeze_count())

    async def start(self, app: Litestar) -> None:
        self.freeze_step()  # what start-up loaded (the demo, templates, caches) is frozen at once
        self.task = asyncio.get_running_loop().create_task(self._run(), name="polku-gc-policy")

    async def stop(self, app: Litestar) -> None:
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        gc.unfreeze()

    async def _run(self) -> None:
        policy = self.policy
        loop = asyncio.get_running_loop()
        next_freeze = loop.time() + policy.freeze_seconds
        reclaim_due = loop.time() + policy.reclaim_seconds
        while True:
            await asyncio.sleep(min(1.0, policy.freeze_seconds))
            now = loop.time()
            if now >= reclaim_due:
                cpu_before = self.cpu_clock()
                await asyncio.sleep(1.0)
                quiet = self.cpu_clock() - cpu_before < QUIET_CPU_SHARE
                now = loop.time()
                if quiet or now >= reclaim_due + policy.reclaim_seconds / 2:
                    self.reclaim_step()
                    now = loop.time()
                    reclaim_due = now + policy.reclaim_seconds
                    next_freeze = now + policy.freeze_seconds
                    continue
            if now >= next_freeze:
                self.freeze_step()
                next_freeze = now + policy.freeze_seconds


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    value = env.get(name, "").strip()
    if not value:
        return default
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds; got {value!r}") from None
