"""A timeline with every kind of element and text that needs escaping, for the golden test."""

from timeline import TimelineMarker
from tests.timeline.helpers import TODAY, days, goal, plan, step


def sample():
    return plan(
        steps=[
            step("s1", TODAY - days(40), TODAY - days(10), status="done", title='Kuntoutus <b>"A&B"</b>'),
            step("s2", TODAY - days(20), TODAY + days(30), status="started", category="work_and_employment"),
            step("s3", TODAY + days(5), TODAY + days(60), category="everyday_life", title="x" * 80),
            step("s4", TODAY - days(5), TODAY + days(2), status="cancelled", category="skills_and_competence"),
            step("s5", TODAY - days(20), TODAY + days(25), category="work_and_employment", title="Päällekkäin\x01"),
        ],
        goals=[
            goal("g1", TODAY + days(45), "health", "everyday_life", title="Työkyky <3 & enemmän"),
            goal("g2", TODAY - days(3), "work_and_employment", status="achieved"),
            goal("g3", TODAY + days(10), status="dropped"),
            goal("g4", TODAY + days(10), "skills_and_competence", status="revised"),
        ],
        markers=[
            TimelineMarker(kind="opened", on=TODAY - days(50)),
            TimelineMarker(kind="handover_proposed", on=TODAY - days(2)),
            TimelineMarker(kind="handover_withdrawn", on=TODAY - days(1), label="Vedetty <pois>"),
        ],
        opened_on=TODAY - days(50),
    )
