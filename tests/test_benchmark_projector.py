"""The capacity arithmetic of `benchmarks/instances.py` with a dedicated projector (postgres-2p)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import instances  # noqa: E402


def _step(cpu: dict[str, float], backends: float, shared: float, **extra: object) -> dict:
    instances_ms = sum(ms for name, ms in cpu.items() if name.startswith("instance_"))
    return {"label": "50/s", "offered_per_s": 50, "saturated": False, "achieved_per_s": 50.0,
            "cpu_ms_per_edit": {**cpu, "instances": instances_ms, "postgres_backends": backends,
                                "postgres_shared": shared}, **extra}


def test_the_projector_bounds_the_deployment_by_its_own_cpu_per_edit_and_the_web_instances_by_theirs() -> None:
    report = {
        "viewers_per_plan": {"1": 1, "2": 1},  # two instances: 1.5 with viewers
        "setups": {
            "postgres-1": {"writer": [True], "steps": [_step({"instance_a": 10.0}, 3.0, 1.0)]},
            "postgres-2p": {"writer": [False, False, True],
                            "steps": [_step({"instance_a": 5.5, "instance_b": 5.5, "projector": 2.5}, 4.0, 1.0)]},
        },
    }
    estimate = instances.capacity(report, instance_processes=16, database_cores=16, utilisation=0.5)
    assert "error" in estimate  # no postgres-2 run: no estimate with the writer inside a web instance
    projected = estimate["with_projector"]
    hub = (11.0 + 2.5 - 10.0) / (1.5 - 1)
    k15 = (1 + 15 * (1 - (14 / 15) ** 2)) / 2
    assert projected["hub_ms_per_extra_instance"] == pytest.approx(hub)
    web_ms = 11.0 + hub * (k15 - 1.5)
    bounds = projected["edits_per_s_each_bound"]
    assert bounds["the projector"] == round(0.5 * 1000 / 2.5)
    assert bounds["web instances"] == round(15 * 0.5 * 1000 / web_ms)
    assert bounds["database"] == round(16 * 0.5 * 1000 / 5.0)
    assert projected["estimate_edits_per_s"] == min(bounds.values())
    assert projected["bound_by"] == "the projector"
    assert any("With a projector" in line for line in instances.capacity_lines(estimate))


def test_cpu_by_role_tells_the_writing_web_instance_from_the_others_and_the_projector() -> None:
    step = _step({"instance_a": 6.0, "instance_b": 9.0}, 1.0, 0.0)
    assert instances.cpu_by_role(step, [False, True]) == {"web": 6.0, "web (writer)": 9.0, "projector": None}
    step = _step({"instance_a": 6.0, "instance_b": 7.0, "projector": 3.0}, 1.0, 0.0)
    assert instances.cpu_by_role(step, [False, False, True]) == {"web": 6.5, "web (writer)": None, "projector": 3.0}


def test_without_a_projector_run_there_is_no_estimate_with_one() -> None:
    report = {"viewers_per_plan": {"1": 1}, "setups": {
        "postgres-1": {"writer": [True], "steps": [_step({"instance_a": 10.0}, 3.0, 1.0)]},
        "postgres-2": {"writer": [False, True], "steps": [_step({"instance_a": 5.0, "instance_b": 7.0}, 3.0, 1.0)]},
    }}
    assert instances.capacity(report)["with_projector"] is None
