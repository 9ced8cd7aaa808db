"""The benchmarks' own arithmetic: percentiles, CPU accounting over processes that come and go,
and the capacity estimate of `benchmarks/instances.py` (no timing is asserted here)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import closed_loop  # noqa: E402
import instances  # noqa: E402
from live_load import Sent, StepLoad, cpu_spent, merge_loads, percentile  # noqa: E402


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([], 99) is None
    assert percentile([7.0], 99) == 7.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert percentile(list(range(101)), 99) == 99
    assert percentile([0.0, 10.0], 99) == pytest.approx(9.9)


def test_cpu_spent_counts_differences_newcomers_whole_and_the_departed_as_lost() -> None:
    before = {1: 1.0, 2: 2.0, 3: 5.0}
    after = {1: 1.5, 2: 0.5, 4: 0.25}  # 2 went down: a new process reusing the pid
    spent, ended = cpu_spent(before, after)
    assert spent == pytest.approx(0.5 + 0.5 + 0.25)
    assert ended == 1


def test_closed_loop_charges_each_thread_group_what_it_spent_between_two_readings(monkeypatch) -> None:
    monkeypatch.setattr(closed_loop.os, "sysconf", lambda name: 100)  # 10 ms a clock tick
    before = {"python": [100, 40], "AnyIO worker th": [10, 2], "idle": [5, 5]}
    after = {"python": [130, 50], "AnyIO worker th": [12, 2], "idle": [5, 5], "new thread": [1, 0]}
    assert closed_loop.spent_ms(before, after) == {
        "python": {"user": 300, "system": 100},
        "AnyIO worker th": {"user": 20, "system": 0},
        "new thread": {"user": 10, "system": 0},
    }


def test_closed_loop_reads_its_own_threads_from_proc() -> None:
    ticks = closed_loop.thread_ticks(os.getpid())
    assert ticks and all(len(pair) == 2 and min(pair) >= 0 for pair in ticks.values())


def test_loads_run_side_by_side_merge_into_one_step() -> None:
    first = StepLoad(sent=[Sent(0, 0, 1, 1.0, 1.0, 1.1, 200)], not_sent=1, started=1.0, finished_sending=5.0,
                     finished=6.0)
    second = StepLoad(sent=[Sent(1, 0, 1, 1.5, 1.5, 1.6, 200)], not_sent=2, started=0.5, finished_sending=5.5,
                      finished=5.8)
    merged = merge_loads([first, second])
    assert [s.plan for s in merged.sent] == [0, 1]
    assert (merged.not_sent, merged.started, merged.finished_sending, merged.finished) == (3, 0.5, 5.5, 6.0)


def test_viewers_dealt_over_two_instances_and_spread_at_random_over_many() -> None:
    per_plan = {"1": 2, "2": 1, "5": 1}
    assert instances._mean_instances_with_viewers(per_plan, 1) == 1.0
    assert instances._mean_instances_with_viewers(per_plan, 2) == pytest.approx((1 + 1 + 2 + 2) / 4)
    assert instances._mean_instances_with_viewers({"2": 1}, 16) == pytest.approx(16 * (1 - (15 / 16) ** 2))


def _step(label: str, instances_ms: dict[str, float], backends: float, shared: float) -> dict:
    cpu = {**instances_ms, "instances": sum(instances_ms.values()), "postgres_backends": backends,
           "postgres_shared": shared}
    return {"label": label, "offered_per_s": 50, "saturated": False, "achieved_per_s": 50.0, "cpu_ms_per_edit": cpu}


def test_capacity_charges_each_extra_instance_its_hub_and_the_writer_its_projection() -> None:
    report = {
        "viewers_per_plan": {"1": 1, "2": 1},  # two instances: 1.5 instances with viewers; sixteen: ~1.47
        "setups": {
            "postgres-1": {"writer": [True], "steps": [_step("50/s", {"instance_a": 10.0}, 3.0, 1.0)]},
            "postgres-2": {"writer": [False, True],
                           "steps": [_step("50/s", {"instance_a": 5.0, "instance_b": 7.0}, 3.0, 1.0)]},
        },
    }
    estimate = instances.capacity(report, instance_processes=16, database_cores=16, utilisation=0.5)
    k16 = (1 + 16 * (1 - (15 / 16) ** 2)) / 2
    instances_ms = 10.0 + 4.0 * (k16 - 1)  # hub = (12 - 10) / (1.5 - 1)
    assert estimate["hub_ms_per_extra_instance"] == 4.0
    assert estimate["projection_ms_per_edit_on_the_writer"] == 2.0
    bounds = estimate["edits_per_s_each_bound"]
    assert bounds["instances"] == round(16 * 0.5 * 1000 / instances_ms)
    assert bounds["database"] == round(16 * 0.5 * 1000 / 4.0)
    assert bounds["the writer process (projection + its share of requests)"] == round(
        0.5 * 1000 / (2.0 + instances_ms / 16))
    assert estimate["estimate_edits_per_s"] == min(bounds.values())
