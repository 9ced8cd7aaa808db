from datetime import date

import msgspec
import pytest

from timeline import CATEGORIES, TimelineGoal, TimelineInput, TimelineStep
from tests.timeline.helpers import goal, step


def test_the_four_categories_in_lane_order():
    assert CATEGORIES == ("health", "work_and_employment", "everyday_life", "skills_and_competence")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"category": "finances"}, "unknown category"),
        ({"status": "late"}, "unknown step status"),
        ({"end": date(2026, 1, 1)}, "ends before it starts"),
    ],
)
def test_a_step_refuses_what_a_timeline_cannot_show(kwargs, message):
    fields = dict(id="s", title="t", category="health", start=date(2026, 2, 1),
                  end=date(2026, 2, 2), status="planned") | kwargs
    with pytest.raises(ValueError, match=message):
        TimelineStep(**fields)


def test_a_goal_needs_known_categories_and_status():
    with pytest.raises(ValueError, match="no category"):
        TimelineGoal(id="g", title="t", categories=(), target=date(2026, 1, 1))
    with pytest.raises(ValueError, match="unknown category"):
        goal("g", date(2026, 1, 1), "finances")
    with pytest.raises(ValueError, match="unknown goal status"):
        goal("g", date(2026, 1, 1), status="maybe")


def test_a_plan_cannot_close_before_it_opens():
    with pytest.raises(ValueError, match="closes before"):
        TimelineInput(today=date(2026, 1, 1), opened_on=date(2026, 1, 2), closed_on=date(2026, 1, 1))


def test_convert_builds_an_input_from_plain_data():
    data = {
        "today": "2026-11-23",
        "opened_on": "2026-10-01",
        "steps": [{"id": "a", "title": "Kela", "category": "health", "start": "2026-10-02",
                   "end": "2026-10-09", "status": "done"}],
        "goals": [{"id": "g", "title": "Työ", "categories": ["work_and_employment"],
                   "target": "2027-03-01"}],
        "markers": [{"kind": "opened", "on": "2026-10-01"}],
    }
    converted = msgspec.convert(data, TimelineInput)
    assert converted.steps == (step("a", date(2026, 10, 2), date(2026, 10, 9), status="done", title="Kela"),)
    assert converted.goals[0].status == "set"


def test_convert_refuses_an_unknown_status():
    data = {"id": "a", "title": "x", "category": "health", "start": "2026-10-02",
            "end": "2026-10-09", "status": "late"}
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(data, TimelineStep)


def test_the_timeline_package_imports_no_other_part_of_polku():
    import ast
    from pathlib import Path

    import timeline

    for path in Path(timeline.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            for module in modules:
                assert module.split(".")[0] not in {"domain", "projections", "web"}, (path, module)
