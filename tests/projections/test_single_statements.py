"""Reads and marks of the read model that are one statement run without BEGIN and COMMIT,
and the follower's write of a plan's row, which asks the stored version in its update.

On SQLite each call into the library lets go of the GIL and takes it back; a plan read
(three of them an edit) or a mark as one statement in autocommit is one call where a
transaction made three. What must not change: what they read and write, and how a
failure reaches the pages (the library's errors, which the web layer answers 503).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from eventsourcing import sqlite as library_sqlite
from eventsourcing.persistence import OperationalError

from domain.application import PlanService
from domain.storage import StoreSettings
from projections.plans import PlanViews
from tests.projections.helpers import ACTORS, catch_up

WRITER = next(iter(ACTORS.values()))


@pytest.fixture
def sqlite_settings(data_dir: Path) -> StoreSettings:
    return StoreSettings.from_environ({"POLKU_STORE": "sqlite", "POLKU_DATA_DIR": str(data_dir)})


@pytest.fixture
def followed(sqlite_settings: StoreSettings) -> Iterator[tuple[PlanService, PlanViews, str]]:
    service = PlanService(sqlite_settings)
    views = PlanViews(sqlite_settings)
    try:
        plan_id = service.open_plan(
            by=WRITER,
            command_id="open",
            client_name="Yksi Lause",
            segment="unemployed",
            language="fi",
            referring_party="self_referral",
            expert_profession="asiantuntija",
        ).plan_id
        catch_up(views, service)
        yield service, views, plan_id
    finally:
        views.close()
        service.close()


def _statements_of(monkeypatch: pytest.MonkeyPatch, threads: Callable[[threading.Thread], bool]) -> list[str]:
    """Every statement the library's SQLite cursors execute from now on in the ``threads`` chosen."""
    seen: list[str] = []
    execute = library_sqlite.SQLiteCursor.execute

    def recording(cursor: library_sqlite.SQLiteCursor, statement: str, *args: object, **kwargs: object) -> None:
        if threads(threading.current_thread()):
            seen.append(statement.split(None, 1)[0].upper())
        execute(cursor, statement, *args, **kwargs)

    monkeypatch.setattr(library_sqlite.SQLiteCursor, "execute", recording)
    return seen


def test_a_plan_read_a_caseload_and_a_mark_are_one_statement_each_on_sqlite(
    followed: tuple[PlanService, PlanViews, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    service, views, plan_id = followed
    version = service.get_plan(plan_id).version
    views.projection.cache.clear()  # read from the row, not from what the follower kept
    statements = _statements_of(monkeypatch, lambda thread: thread is threading.current_thread())

    plan = views.plan(plan_id)
    assert plan is not None and plan.version == version
    assert views.plan(plan_id) is plan  # the row is at the kept version: the document is not sent again
    [entry] = views.caseload(person_id=WRITER.person_id)
    views.mark_seen(WRITER.person_id, plan_id, plan.version)

    assert statements == ["SELECT", "SELECT", "SELECT", "INSERT"]
    assert views.caseload(person_id=WRITER.person_id)[0].seen_version == plan.version == entry.version


def test_a_mark_on_a_busy_read_model_file_fails_as_the_library_s_error(
    followed: tuple[PlanService, PlanViews, str], sqlite_settings: StoreSettings
) -> None:
    """Another process holding the file's write lock past the busy timeout: the library's
    ``OperationalError`` (a 503 for the page), as from the library's transactions."""
    _service, views, plan_id = followed
    holder = sqlite3.connect(sqlite_settings.view_store_path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(OperationalError):
            views.mark_seen(WRITER.person_id, plan_id, 1)
    finally:
        holder.close()
    views.mark_seen(WRITER.person_id, plan_id, 1)
    assert views.caseload(person_id=WRITER.person_id)[0].seen_version == 1


def test_the_follower_s_write_onto_a_row_asks_the_version_in_the_update_itself(
    followed: tuple[PlanService, PlanViews, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    service, views, plan_id = followed
    statements = _statements_of(monkeypatch, lambda thread: "_process_events_loop" in thread.name)  # the runner's

    edit = service.add_note(plan_id, by=WRITER, command_id="note", text="Yksi lause lisää.")
    assert views.wait_for(edit.position, timeout=5)

    assert statements == ["BEGIN", "UPDATE", "INSERT"]  # the row, the tracking record; COMMIT is the connection's
