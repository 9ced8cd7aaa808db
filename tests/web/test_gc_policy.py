"""web.gc_policy: frozen cyclic garbage is kept by the freeze steps and freed by the reclaim step.

Real objects in real reference cycles, and the real collector: no mock of ``gc``.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from litestar import Litestar

from tests.web.conftest import TEST_SECRET_KEY, running
from web.gc_policy import GcPolicy, GcSteps
from web.server import build_server
from web.settings import Settings


class Node:
    """An object in a reference cycle with itself: only the cycle collector frees it."""

    def __init__(self) -> None:
        self.me = self
        self.payload = [bytearray(1024)]


def cyclic_garbage_to_be() -> tuple[Node, weakref.ref[Node]]:
    node = Node()
    return node, weakref.ref(node)


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_the_freeze_step_frees_young_cyclic_garbage_and_freezes_the_living() -> None:
    node, young = cyclic_garbage_to_be()
    del node
    alive, kept = cyclic_garbage_to_be()
    GcSteps.freeze_step()
    assert young() is None  # collected before the freeze, not frozen as garbage
    assert kept() is alive
    assert gc.get_freeze_count() > 0
    assert not any(o is alive for o in gc.get_objects())  # frozen: no collection walks it


def test_frozen_cyclic_garbage_waits_for_the_reclaim_step() -> None:
    node, ref = cyclic_garbage_to_be()
    GcSteps.freeze_step()  # frozen while alive
    del node  # now unreachable, in a cycle
    GcSteps.freeze_step()
    gc.collect()
    assert ref() is not None, "frozen garbage is not freed by freeze steps or ordinary collections"
    steps = GcSteps(GcPolicy())
    steps.reclaim_step()
    assert ref() is None
    assert steps.reclaims == 1
    assert gc.get_freeze_count() > 0  # what lives is frozen again


async def test_the_task_reclaims_on_its_interval_at_a_quiet_moment() -> None:
    steps = GcSteps(GcPolicy(freeze_seconds=0.05, reclaim_seconds=0.3), cpu_clock=lambda: 0.0)  # always quiet
    app = Litestar()
    await steps.start(app)
    try:
        node, ref = cyclic_garbage_to_be()
        await asyncio.sleep(0.2)  # a freeze step or more: the node is frozen
        assert not any(o is node for o in gc.get_objects())
        del node
        for _ in range(40):
            await asyncio.sleep(0.1)
            if steps.reclaims:
                break
        assert steps.reclaims >= 1
        assert ref() is None
    finally:
        await steps.stop(app)
    assert gc.get_freeze_count() == 0


async def test_a_busy_process_gets_its_reclaim_late_but_gets_it() -> None:
    busy = iter(range(0, 10**6, 1))  # one more CPU second at every reading: never quiet
    steps = GcSteps(GcPolicy(freeze_seconds=0.05, reclaim_seconds=0.4), cpu_clock=lambda: float(next(busy)))
    app = Litestar()
    await steps.start(app)
    try:
        for _ in range(40):
            await asyncio.sleep(0.1)
            if steps.reclaims:
                break
        assert steps.reclaims == 1  # at the latest half an interval after it was due
    finally:
        await steps.stop(app)


def test_settings_from_the_environment() -> None:
    assert GcPolicy.from_env({}) == GcPolicy("freeze", 10.0, 600.0)
    assert GcPolicy.from_env({"POLKU_GC": "Python", "POLKU_GC_FREEZE_SECONDS": "5",
                              "POLKU_GC_RECLAIM_SECONDS": "3600"}) == GcPolicy("python", 5.0, 3600.0)
    for bad in ({"POLKU_GC": "sometimes"}, {"POLKU_GC_FREEZE_SECONDS": "soon"}, {"POLKU_GC_RECLAIM_SECONDS": "0"}):
        with pytest.raises(ValueError, match="POLKU_GC"):
            GcPolicy.from_env(bad)


def test_the_python_policy_leaves_the_collector_alone() -> None:
    app = Litestar()
    hooks = (len(app.on_startup), len(app.on_shutdown))
    GcPolicy(mode="python").install(app)
    assert (len(app.on_startup), len(app.on_shutdown)) == hooks


def test_polku_serve_freezes_while_serving_and_unfreezes_on_shutdown(tmp_path: Path) -> None:
    settings = Settings(secret_key=TEST_SECRET_KEY, data_dir=tmp_path)
    server = build_server("127.0.0.1", 0, settings, gc_policy=GcPolicy(), log_level="warning")
    with running(server) as base_url:
        assert httpx.get(f"{base_url}/healthz", timeout=10).status_code == 200
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0
