"""The writer's election with a dedicated candidate (``polku project``): the others give way to it.

Elections here run in this process with recording callbacks; the lock is a fresh name per
test. tests/web/test_projector.py runs the same with real processes.
"""

from __future__ import annotations

import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from domain.application import PlanService
from domain.storage import StoreSettings
from projections.leader import LOCK_CLASS, LeaderElection, connect
from projections.plans import PlanViews, rebuild
from tests.projections.helpers import random_commands

pytestmark = pytest.mark.postgres

FAST = {"retry_interval": 0.05, "check_interval": 0.05}


class Candidate:
    """An election whose callbacks note what happened, and whether the lock was held meanwhile."""

    def __init__(self, conninfo: str, name: str, label: str, events: list[str], *, dedicated: bool) -> None:
        self.label = label
        self.events = events
        self.conninfo = conninfo
        self.name = name
        self.election = LeaderElection(
            conninfo, name, on_elected=self._elected, on_held=lambda: None, on_deposed=self._deposed,
            dedicated=dedicated, **FAST,
        )

    def _elected(self) -> None:
        self.events.append(f"{self.label} elected")

    def _deposed(self) -> None:
        time.sleep(0.1)  # work being stopped: nobody else may lead meanwhile
        self.events.append(f"{self.label} deposed")


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


@pytest.fixture
def election(postgres_env: dict[str, str]) -> Iterator[Callable[..., Candidate]]:
    conninfo = StoreSettings.from_environ(postgres_env).pg_conninfo
    name = f"test.{uuid.uuid4().hex}.writer"
    events: list[str] = []
    started: list[Candidate] = []

    def start(label: str, *, dedicated: bool = False) -> Candidate:
        candidate = Candidate(conninfo, name, label, events, dedicated=dedicated)
        candidate.election.start()
        started.append(candidate)
        return candidate

    start.events = events  # type: ignore[attr-defined]
    yield start
    for candidate in started:
        candidate.election.close()


def leaders(*candidates: Candidate) -> list[str]:
    return [c.label for c in candidates if c.election.is_leader]


def test_a_web_instance_that_leads_gives_way_to_a_dedicated_writer_after_stopping_its_work(
    election: Callable[..., Candidate],
) -> None:
    a = election("A")
    assert wait_until(lambda: a.election.is_leader)
    b = election("B")
    time.sleep(0.3)
    assert leaders(a, b) == ["A"]

    p = election("P", dedicated=True)
    assert wait_until(lambda: p.election.is_leader), "the dedicated candidate never took the lock"
    time.sleep(0.5)  # and the web instances do not take it back
    assert leaders(a, b, p) == ["P"]
    events: list[str] = election.events  # type: ignore[attr-defined]
    assert events == ["A elected", "A deposed", "P elected"], "A must stop its work before P leads"


def test_when_the_dedicated_writer_is_gone_a_web_instance_takes_over_and_gives_way_again_to_a_new_one(
    election: Callable[..., Candidate],
) -> None:
    p = election("P", dedicated=True)
    assert wait_until(lambda: p.election.is_leader)
    a, b = election("A"), election("B")
    time.sleep(0.5)
    assert leaders(a, b, p) == ["P"], "a web instance took the lock from a running dedicated writer"

    p.election.close()
    assert wait_until(lambda: len(leaders(a, b)) == 1, 2.0), "no web instance took over"
    time.sleep(0.3)
    assert len(leaders(a, b)) == 1

    again = election("P2", dedicated=True)
    assert wait_until(lambda: leaders(a, b, again) == ["P2"], 2.0), leaders(a, b, again)


def test_two_dedicated_writers_one_leads_the_other_waits_and_the_web_instances_stay_out(
    election: Callable[..., Candidate], postgres_env: dict[str, str]
) -> None:
    p, q = election("P", dedicated=True), election("Q", dedicated=True)
    assert wait_until(lambda: len(leaders(p, q)) == 1)
    a = election("A")
    first = leaders(p, q)[0]
    (p if first == "P" else q).election.close()
    assert wait_until(lambda: leaders(p, q, a) == [("Q" if first == "P" else "P")], 2.0), leaders(p, q, a)

    # the shared lock is what the others see: one session per dedicated candidate
    with connect(StoreSettings.from_environ(postgres_env).pg_conninfo) as conn:
        holders = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s::oid"
            " AND objid = hashtext(%s)::oid AND mode = 'ShareLock'",
            (LOCK_CLASS, f"{p.name}.dedicated"),
        ).fetchone()
    assert holders == (1,)


def test_a_web_instance_does_not_take_the_lock_while_a_dedicated_writer_waits_for_it(
    election: Callable[..., Candidate], postgres_env: dict[str, str]
) -> None:
    """Start-up with a slow hand-over: the lock is free for a moment, but a dedicated one is there."""
    conninfo = StoreSettings.from_environ(postgres_env).pg_conninfo
    a = election("A")
    assert wait_until(lambda: a.election.is_leader)
    name = a.name
    stop = threading.Event()

    def hold_presence() -> None:  # a dedicated candidate that is not trying for the lock
        with connect(conninfo) as conn:
            conn.execute("SELECT pg_advisory_lock_shared(%s, hashtext(%s))", (LOCK_CLASS, f"{name}.dedicated"))
            stop.wait(5)

    thread = threading.Thread(target=hold_presence)
    thread.start()
    try:
        assert wait_until(lambda: not a.election.is_leader), "A kept the lock beside a dedicated writer"
        b = election("B")
        time.sleep(0.4)
        assert leaders(a, b) == []
    finally:
        stop.set()
        thread.join(10)
    assert wait_until(lambda: len(leaders(a, b)) == 1, 2.0)


@pytest.mark.parametrize("store_env", ["postgres"], indirect=True)
def test_the_plan_views_of_a_dedicated_process_take_the_writers_lock_and_a_rebuild_names_both_commands(
    settings: StoreSettings, service: PlanService, open_views: Callable[..., PlanViews]
) -> None:
    """``PlanViews(dedicated=True)`` (``polku project``): the web instance's views give the lock
    to it, hear what it writes, and a rebuild refuses to start while it runs."""
    web = open_views()
    assert wait_until(lambda: web.is_leader), "the web instance never led"
    projector = open_views(dedicated=True)
    assert wait_until(lambda: projector.is_leader and not web.is_leader), "the web instance kept the lock"

    (outcome,) = random_commands(service, random.Random(5), 1, "dedicated")
    assert web.wait_for(outcome.position, timeout=5)
    assert projector.wait_for(outcome.position, timeout=5)
    with pytest.raises(RuntimeError, match=re.escape("stop every `polku serve` and `polku project`")):
        rebuild(settings)
