"""The read-model tables of plans and caseloads, on SQLite or PostgreSQL.

They live apart from the event store: their own SQLite file, or their own
PostgreSQL schema. Each row is written in the same transaction as the
projection's tracking record, so every event is applied exactly once, even
across restarts. The tables hold decrypted text (read models may: they are
disposable), drop a plan's rows when its key is erased, and are rebuilt from
the event log whenever needed; only `plan_seen`, which remembers what each
person last looked at, is not derived from events and survives a rebuild.

Pages that list many plans read summary columns and rows, never a plan's whole
state: the caseload line (`summary`), the statistics' segment and outcome
columns and need counts (`plan_needs`), and the first day of each organisation's
consent (`plan_consents`), which the organisation's caseload asks instead of
`domain.access` (see `organisation_caseload`). A store written by another shape
of these tables (`READ_MODEL_VERSION`) is emptied at start and refilled from the
event log by the follower. The version is stored in the read model, and every write
checks it in its own transaction: a writer of another version still running (an
instance of the earlier release, during an upgrade) is refused
(:class:`ReadModelSuperseded`) instead of writing rows the new shape cannot read.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import date
from typing import Any

import msgspec
from eventsourcing.persistence import PersistenceError, Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteTrackingRecorder

from domain.sqlite import _SingleStatement

TABLES = {
    "plan_views": (
        "plan_id TEXT PRIMARY KEY, version INTEGER NOT NULL, position BIGINT NOT NULL, "
        "search_name TEXT NOT NULL, is_closed INTEGER NOT NULL, segment TEXT NOT NULL, closing_outcome TEXT, "
        "updated_at TEXT NOT NULL, summary TEXT NOT NULL, state TEXT NOT NULL"
    ),
    "plan_people": (
        "plan_id TEXT NOT NULL, person_id TEXT NOT NULL, organisation_id TEXT NOT NULL, "
        "role TEXT NOT NULL, PRIMARY KEY (plan_id, person_id)"
    ),
    "plan_needs": (
        "plan_id TEXT NOT NULL, category TEXT NOT NULL, needs INTEGER NOT NULL, open_needs INTEGER NOT NULL, "
        "PRIMARY KEY (plan_id, category)"
    ),
    "plan_consents": (
        "plan_id TEXT NOT NULL, organisation_id TEXT NOT NULL, valid_from TEXT NOT NULL, "
        "PRIMARY KEY (plan_id, organisation_id)"
    ),
    "plan_seen": (
        "person_id TEXT NOT NULL, plan_id TEXT NOT NULL, version INTEGER NOT NULL, "
        "seen_at TEXT NOT NULL, PRIMARY KEY (person_id, plan_id)"
    ),
    "read_model_version": "name TEXT PRIMARY KEY, version INTEGER NOT NULL",
}
INDEXES = {
    "plan_people_person": "plan_people (person_id)",
    "plan_people_organisation": "plan_people (organisation_id)",
    "plan_views_position": "plan_views (position)",
}
DERIVED_TABLES = ("plan_views", "plan_people", "plan_needs", "plan_consents")
SUMMARY_KEYS = {"plan_people": "person_id", "plan_needs": "category", "plan_consents": "organisation_id"}
"""The tables of a plan's rows written with its row, each with the column that tells its rows apart."""
SUMMARY_COLUMNS = {
    "plan_people": ("person_id", "organisation_id", "role"),
    "plan_needs": ("category", "needs", "open_needs"),
    "plan_consents": ("organisation_id", "valid_from"),
}
"""The columns of those tables besides ``plan_id`` (as in ``TABLES``)."""
PLAN_COLUMNS = (
    "plan_id", "version", "position", "search_name", "is_closed", "segment", "closing_outcome", "updated_at",
    "summary", "state",
)
"""The columns of ``plan_views`` (as in ``TABLES``)."""
PLAN_TABLES = (*DERIVED_TABLES, "plan_seen")
"""Every table with rows of a plan: what erasing the plan's key deletes."""
READ_MODEL_VERSION = 6
"""The shape of the derived tables. Raise it whenever they change: a store at another
version has its derived tables recreated empty and its position forgotten at start, so
the follower refills them from the start of the event log (version 2: the summary
columns and rows of the caseload and statistics; version 3: the plan's document typed
JSON by msgspec, ``projections.codec``; version 4: on PostgreSQL, the function that
writes a plan's rows in one call; version 5: every write checks this version against
the one stored in the read model, ``ReadModelSuperseded``; version 6: a plan's opening day,
and its opening consent's first day, are the day in Finland, not in UTC)."""
COLLEAGUE_ROLES = ("expert", "counterpart")
"""The roles that make a plan one of its organisation's (``domain.access``: colleagues of the
named expert and the counterpart)."""


logger = logging.getLogger(__name__)


class StaleRow(Exception):
    """The plan's row is not at the version a write was folded onto (another writer, a rebuild, an erasure)."""


class ReadModelSuperseded(Exception):
    """The read model is at another version than this writer's: an instance of another
    release recreated it. Nothing was written; this writer must stop writing it."""


_SUPERSEDED = "read model superseded"
"""How the PostgreSQL save function's refusal begins (the library keeps only the message)."""


class PlanRow(msgspec.Struct, frozen=True, kw_only=True):
    plan_id: str
    version: int
    position: int
    search_name: str
    is_closed: bool
    updated_at: str
    summary: dict[str, Any]
    state: str


class Person(msgspec.Struct, frozen=True, kw_only=True):
    person_id: str
    organisation_id: str
    role: str


class CaseloadEntry(msgspec.Struct, frozen=True, kw_only=True):
    plan_id: str
    version: int
    role: str
    summary: dict[str, Any]
    seen_version: int | None

    @property
    def changed_since_seen(self) -> bool:
        return self.seen_version is None or self.version > self.seen_version


class PlanCount(msgspec.Struct, frozen=True, kw_only=True):
    segment: str
    is_closed: bool
    closing_outcome: str | None
    plans: int


class NeedCount(msgspec.Struct, frozen=True, kw_only=True):
    category: str
    needs: int
    open_needs: int


class PlanStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """Counts over every plan in the read model, from its summary columns and rows."""

    plans: list[PlanCount]
    needs: list[NeedCount]


class PlanViewTables:
    """Queries shared by both stores, written once with %(name)s placeholders.

    ``read_model_version``: the shape this store writes, ``READ_MODEL_VERSION`` when it
    was opened (a test opens a writer of another version by changing the constant).
    ``superseded``: why this store refused a write, once the read model was found at another
    version (it stays so: the stored version only changes by recreating the read model).
    """

    _locks_version_row = ""
    """What a write's read of the stored version adds, so that a recreate waits for it."""

    def __init__(self, *args: Any, **kwargs: Any):
        self.read_model_version = READ_MODEL_VERSION
        self.superseded: str | None = None
        super().__init__(*args, **kwargs)

    def _qualified(self, table: str) -> str:
        return table

    def _sql(self, statement: str) -> str:
        return statement

    @contextmanager
    def _cursor(self, *, commit: bool) -> Iterator[Any]:
        with self.datastore.transaction(commit=commit) as cursor:  # type: ignore[attr-defined]
            yield cursor

    def _statement(self, *, writes: bool = True) -> AbstractContextManager[Any]:
        """A cursor for one statement that is a transaction by itself, in autocommit: no
        ``BEGIN`` and no ``COMMIT`` or ``ROLLBACK`` around it. On PostgreSQL one round trip
        where three were made; on SQLite one call into the library where three were made,
        each of which let go of the GIL and took it back (a plan read, three of them an edit,
        and ``mark_seen``). A single statement sees one snapshot and commits or fails whole,
        as in its own transaction. ``writes``: it changes rows (on SQLite, a writer's connection)."""
        raise NotImplementedError

    def _table_statements(self, tables: Iterable[str] = tuple(TABLES)) -> list[str]:
        """CREATE statements of ``tables`` and of their indexes."""
        statements = [f"CREATE TABLE IF NOT EXISTS {self._qualified(name)} ({TABLES[name]})" for name in tables]
        for name, target in INDEXES.items():
            table, columns = target.split(" ", 1)
            if table in tables:
                statements.append(f"CREATE INDEX IF NOT EXISTS {name} ON {self._qualified(table)} {columns}")
        return statements

    def _version_is_current(self, cursor: Any) -> bool:
        cursor.execute(
            self._sql(f"SELECT version FROM {self._qualified('read_model_version')} WHERE name = %(name)s"),
            {"name": "plan_views"},
        )
        row = cursor.fetchone()
        return row is not None and row["version"] == self.read_model_version

    def _check_version(self, cursor: Any) -> None:
        """Refuse a write (:class:`ReadModelSuperseded`) unless the stored version is this writer's.

        Called first in the write's transaction (or asked by its first statement,
        :meth:`_write_plan_row`). On PostgreSQL it also share-locks the
        version row until the write commits, so a recreate (which updates that row first)
        waits for the write, and a write that comes after reads the new version.
        """
        cursor.execute(
            self._sql(
                f"SELECT version FROM {self._qualified('read_model_version')} WHERE name = %(name)s"
                f"{self._locks_version_row}"
            ),
            {"name": "plan_views"},
        )
        row = cursor.fetchone()
        stored = None if row is None else row["version"]
        if stored != self.read_model_version:
            raise self._superseded(f"the read model is at version {stored}")

    def _superseded(self, found: str) -> ReadModelSuperseded:
        error = ReadModelSuperseded(
            f"{_SUPERSEDED}: {found}, this writer writes version {self.read_model_version};"
            " an instance of another release recreated it. This instance no longer writes the read model:"
            " stop every instance of the other release (docs/deployment.md, \"Database set-up at start\")."
        )
        if self.superseded is None:
            logger.error("plan views: %s", error)
        self.superseded = str(error)
        return error

    def _reset_if_outdated(self) -> bool:
        """Recreate the derived tables empty, and forget the position, if another version wrote them.

        Returns whether it did. The tables are dropped rather than altered, so a column
        added, removed or changed is all the same; the follower then refills them from the
        start of the event log, as ``polku projections rebuild`` would.

        The new version is stored first, in the same transaction: a writer of the earlier
        version still running then finds it at its next write and is refused
        (:meth:`_check_version`), instead of writing its rows into the new tables and
        moving the position past plans that nobody refilled.
        """
        with self._cursor(commit=True) as cursor:
            if self._version_is_current(cursor):
                return False
            cursor.execute(
                self._sql(
                    f"INSERT INTO {self._qualified('read_model_version')} (name, version) VALUES (%(name)s, %(version)s)"
                    " ON CONFLICT (name) DO UPDATE SET version = excluded.version"
                ),
                {"name": "plan_views", "version": self.read_model_version},
            )
            for table in DERIVED_TABLES:
                cursor.execute(self._sql(f"DROP TABLE IF EXISTS {self._qualified(table)}"))
            for statement in self._table_statements(DERIVED_TABLES):
                cursor.execute(self._sql(statement))
            cursor.execute(
                self._sql(f"DELETE FROM {self._tracking_table()} WHERE application_name <> %(migration)s"),
                {"migration": self.table_migration_identifier},  # type: ignore[attr-defined]
            )
        return True

    def save_plan(
        self,
        row: PlanRow,
        people: list[Person],
        tracking: Tracking,
        *,
        onto: int | None = None,
        written: tuple[dict[str, Any], list[Person]] | None = None,
    ) -> None:
        """Write a plan's row, its people and its summary rows, with the tracking record, atomically.

        ``onto``: the version of the row that the plan was folded onto; the row is then
        only updated if it is still at that version, else :class:`StaleRow` is raised and
        nothing is written (the follower folds again from the row). Without it (a new plan)
        the row is inserted or replaced. ``written``: the summary and people that this
        writer itself wrote with version ``onto``; then only the people, need and consent
        rows that differ are written, else all of them are replaced.
        """
        if written is None:
            before: tuple[dict[str, dict[str, Any]], ...] = ({}, {}, {})
        else:
            summary, old_people = written
            before = (_people_rows(old_people), _need_rows(summary), _consent_rows(summary))
        after = (_people_rows(people), _need_rows(row.summary), _consent_rows(row.summary))
        changes = {
            table: _row_changes(old, new) for table, old, new in zip(SUMMARY_KEYS, before, after, strict=True)
        }
        self._save(_plan_columns(row), onto, changes, written is None, tracking)

    def _save(
        self,
        columns: dict[str, Any],
        onto: int | None,
        changes: dict[str, tuple[list[str], list[dict[str, Any]]]],
        replace: bool,
        tracking: Tracking,
    ) -> None:
        """:meth:`save_plan`'s writes: the row's ``columns``; per summary table, the keys of
        rows gone and the rows new or changed (all of them, the others deleted, if
        ``replace``); the tracking record and the notice."""
        plan_id = columns["plan_id"]
        with self._cursor(commit=True) as cursor:
            self._write_plan_row(cursor, columns, onto)
            for table, (gone, changed) in changes.items():
                if replace:
                    cursor.execute(
                        self._sql(f"DELETE FROM {self._qualified(table)} WHERE plan_id = %(plan_id)s"),
                        {"plan_id": plan_id},
                    )
                self._write_changed_rows(cursor, table, plan_id, gone, changed)
            self._insert_tracking(cursor, tracking)  # type: ignore[attr-defined]
            self._notify(cursor, plan_id, tracking.notification_id)

    def _write_plan_row(self, cursor: Any, columns: dict[str, Any], onto: int | None) -> None:
        """The first write of :meth:`_save`'s transaction, which checks the stored version
        (:meth:`_check_version`) before anything is written. The update onto ``onto``, the
        follower's write of nearly every event, asks the version in its own ``WHERE``: one
        statement where two were made; only when it wrote nothing is it asked why."""
        if onto is None:
            self._check_version(cursor)
            updates = ", ".join(f"{name} = excluded.{name}" for name in columns if name != "plan_id")
            cursor.execute(
                self._sql(
                    f"INSERT INTO {self._qualified('plan_views')} ({', '.join(columns)})"
                    f" VALUES ({', '.join(f'%({name})s' for name in columns)})"
                    f" ON CONFLICT (plan_id) DO UPDATE SET {updates}"
                ),
                columns,
            )
            return
        updates = ", ".join(f"{name} = %({name})s" for name in columns if name != "plan_id")
        cursor.execute(
            self._sql(
                f"UPDATE {self._qualified('plan_views')} SET {updates}"
                " WHERE plan_id = %(plan_id)s AND version = %(onto)s"
                f" AND (SELECT version FROM {self._qualified('read_model_version')} WHERE name = %(name)s"
                f"{self._locks_version_row}) = %(read_model_version)s RETURNING version"
            ),
            {**columns, "onto": onto, "name": "plan_views", "read_model_version": self.read_model_version},
        )
        if cursor.fetchone() is None:
            self._check_version(cursor)
            raise StaleRow(f"the row of plan {columns['plan_id']} is not at version {onto}")

    def _write_changed_rows(
        self, cursor: Any, table: str, plan_id: str, gone_keys: list[str], changed_rows: list[dict[str, Any]]
    ) -> None:
        """Delete the plan's rows of ``table`` with ``gone_keys``, insert or update ``changed_rows``."""
        key = SUMMARY_KEYS[table]
        gone = [{"plan_id": plan_id, "key": name} for name in gone_keys]
        if gone:
            cursor.executemany(
                self._sql(f"DELETE FROM {self._qualified(table)} WHERE plan_id = %(plan_id)s AND {key} = %(key)s"), gone
            )
        changed = [{"plan_id": plan_id, **values} for values in changed_rows]
        if changed:
            names = list(changed[0])
            updates = ", ".join(f"{name} = excluded.{name}" for name in names if name not in ("plan_id", key))
            cursor.executemany(
                self._sql(
                    f"INSERT INTO {self._qualified(table)} ({', '.join(names)})"
                    f" VALUES ({', '.join(f'%({name})s' for name in names)})"
                    f" ON CONFLICT (plan_id, {key}) DO UPDATE SET {updates}"
                ),
                changed,
            )

    def drop_plan(self, plan_id: str, tracking: Tracking) -> None:
        with self._cursor(commit=True) as cursor:
            self._check_version(cursor)
            for table in PLAN_TABLES:
                cursor.execute(
                    self._sql(f"DELETE FROM {self._qualified(table)} WHERE plan_id = %(plan_id)s"),
                    {"plan_id": plan_id},
                )
            self._insert_tracking(cursor, tracking)  # type: ignore[attr-defined]
            self._notify(cursor, plan_id, tracking.notification_id)

    def skip(self, tracking: Tracking) -> None:
        """Record that an event needed no change, so it is not looked at again."""
        with self._cursor(commit=True) as cursor:
            self._check_version(cursor)
            self._insert_tracking(cursor, tracking)  # type: ignore[attr-defined]
            self._notify(cursor, None, tracking.notification_id)

    def _notify(self, cursor: Any, plan_id: str | None, position: int) -> None:
        """Tell the other instances, on commit, that the read model reached ``position``."""

    def plans_changed_after(self, position: int) -> list[tuple[str, int]]:
        """(plan id, position of its latest applied event) of every plan changed after ``position``."""
        with self._statement(writes=False) as cursor:
            cursor.execute(
                self._sql(
                    f"SELECT plan_id, position FROM {self._qualified('plan_views')}"
                    " WHERE position > %(position)s ORDER BY position"
                ),
                {"position": position},
            )
            return [(r["plan_id"], r["position"]) for r in cursor.fetchall()]

    def plan_state(self, plan_id: str, known: int | None = None) -> tuple[int, int, str | None] | None:
        """(version, position of its latest event, state) of the plan's row, or None if there is none.

        The state is None when the row is at version ``known``: the caller has that
        version decoded already, and the document is neither read nor sent.
        """
        with self._statement(writes=False) as cursor:
            cursor.execute(
                self._sql(
                    "SELECT version, position, CASE WHEN version = %(known)s THEN NULL ELSE state END AS state"
                    f" FROM {self._qualified('plan_views')} WHERE plan_id = %(plan_id)s"
                ),
                {"plan_id": plan_id, "known": known},
            )
            row = cursor.fetchone()
        return (row["version"], row["position"], row["state"]) if row else None

    def people_of(self, plan_id: str) -> list[Person]:
        with self._statement(writes=False) as cursor:
            cursor.execute(
                self._sql(
                    f"SELECT person_id, organisation_id, role FROM {self._qualified('plan_people')}"
                    " WHERE plan_id = %(plan_id)s ORDER BY person_id"
                ),
                {"plan_id": plan_id},
            )
            return [Person(person_id=r["person_id"], organisation_id=r["organisation_id"], role=r["role"]) for r in cursor.fetchall()]

    def caseload(
        self,
        *,
        person_id: str,
        organisation_id: str | None = None,
        search: str = "",
        limit: int = 200,
    ) -> list[CaseloadEntry]:
        """Plans of a person (or of their whole organisation), newest change first.

        `seen_version` is the version the person last looked at, so the page
        can show what changed since.
        """
        views, people, seen = (self._qualified(t) for t in ("plan_views", "plan_people", "plan_seen"))
        scope = "p.organisation_id = %(organisation_id)s" if organisation_id else "p.person_id = %(person_id)s"
        matching, words = _name_matches(search)
        with self._statement(writes=False) as cursor:
            cursor.execute(
                self._sql(
                    "SELECT v.plan_id, v.version, v.summary, MIN(p.role) AS role, MAX(s.version) AS seen_version"
                    f" FROM {people} p JOIN {views} v ON v.plan_id = p.plan_id"
                    f" LEFT JOIN {seen} s ON s.plan_id = v.plan_id AND s.person_id = %(person_id)s"
                    f" WHERE {scope}{matching}"
                    " GROUP BY v.plan_id, v.version, v.summary, v.updated_at"
                    " ORDER BY v.updated_at DESC LIMIT %(limit)s"
                ),
                {
                    "person_id": person_id,
                    "organisation_id": organisation_id,
                    "limit": limit,
                    **words,
                },
            )
            return _caseload_entries(cursor.fetchall())

    def organisation_caseload(
        self,
        *,
        person_id: str,
        organisation_id: str,
        today: date,
        search: str = "",
        limit: int = 200,
    ) -> list[CaseloadEntry]:
        """The other plans of the person's organisation that they may see ``today``, newest change first.

        ``domain.access.relation_to``, asked of the summary rows: someone who is not in
        the plan is a colleague (and may view it) when their organisation is the named
        expert's or the counterpart's and the client's consent for that organisation is
        valid today (``projections.summary.consent_from``). ``role`` is the first role of
        the organisation's people in the plan, as in :meth:`caseload`. The plans the
        person is in themselves are left out: they are in their own caseload.
        """
        views, people, seen, consents = (
            self._qualified(t) for t in ("plan_views", "plan_people", "plan_seen", "plan_consents")
        )
        matching, words = _name_matches(search)
        with self._statement(writes=False) as cursor:
            cursor.execute(
                self._sql(
                    "SELECT v.plan_id, v.version, v.summary, MIN(p.role) AS role, MAX(s.version) AS seen_version"
                    f" FROM {people} p JOIN {views} v ON v.plan_id = p.plan_id"
                    f" LEFT JOIN {seen} s ON s.plan_id = v.plan_id AND s.person_id = %(person_id)s"
                    " WHERE p.organisation_id = %(organisation_id)s AND p.role IN (%(expert)s, %(counterpart)s)"
                    f" AND EXISTS (SELECT 1 FROM {consents} c WHERE c.plan_id = v.plan_id"
                    " AND c.organisation_id = %(organisation_id)s AND c.valid_from <= %(today)s)"
                    f" AND NOT EXISTS (SELECT 1 FROM {people} m WHERE m.plan_id = v.plan_id"
                    f" AND m.person_id = %(person_id)s){matching}"
                    " GROUP BY v.plan_id, v.version, v.summary, v.updated_at"
                    " ORDER BY v.updated_at DESC LIMIT %(limit)s"
                ),
                {
                    "person_id": person_id,
                    "organisation_id": organisation_id,
                    "expert": COLLEAGUE_ROLES[0],
                    "counterpart": COLLEAGUE_ROLES[1],
                    "today": today.isoformat(),
                    "limit": limit,
                    **words,
                },
            )
            return _caseload_entries(cursor.fetchall())

    def statistics(self) -> PlanStatistics:
        """Plans by segment, open or closed, and outcome; needs by category: counts only."""
        views, needs = self._qualified("plan_views"), self._qualified("plan_needs")
        with self._cursor(commit=False) as cursor:
            cursor.execute(
                f"SELECT segment, is_closed, closing_outcome, COUNT(*) AS plans FROM {views}"
                " GROUP BY segment, is_closed, closing_outcome"
            )
            plans = [
                PlanCount(
                    segment=r["segment"], is_closed=bool(r["is_closed"]), closing_outcome=r["closing_outcome"], plans=r["plans"]
                )
                for r in cursor.fetchall()
            ]
            cursor.execute(
                f"SELECT category, SUM(needs) AS needs, SUM(open_needs) AS open_needs FROM {needs} GROUP BY category"
            )
            need_counts = [
                NeedCount(category=r["category"], needs=int(r["needs"]), open_needs=int(r["open_needs"]))
                for r in cursor.fetchall()
            ]
        return PlanStatistics(plans=plans, needs=need_counts)

    def mark_seen(self, person_id: str, plan_id: str, version: int, seen_at: str) -> None:
        """Remember that the person has seen ``version`` of the plan (at ``seen_at``).

        A version not newer than the one remembered changes nothing: pages that render an
        older version after a newer one (a slow request, another instance) do not take the
        mark back, and a repeat writes no row.
        """
        with self._statement() as cursor:
            cursor.execute(
                self._sql(
                    f"INSERT INTO {self._qualified('plan_seen')} AS seen (person_id, plan_id, version, seen_at)"
                    " VALUES (%(person_id)s, %(plan_id)s, %(version)s, %(seen_at)s)"
                    " ON CONFLICT (person_id, plan_id) DO UPDATE SET version = excluded.version, seen_at = excluded.seen_at"
                    " WHERE seen.version < excluded.version"
                ),
                {"person_id": person_id, "plan_id": plan_id, "version": version, "seen_at": seen_at},
            )

    def clear(self, application_name: str) -> None:
        """Forget everything derived from events, and the position, for a rebuild."""
        with self._cursor(commit=True) as cursor:
            for table in DERIVED_TABLES:
                cursor.execute(self._sql(f"DELETE FROM {self._qualified(table)}"))
            cursor.execute(
                self._sql(f"DELETE FROM {self._tracking_table()} WHERE application_name = %(name)s"),
                {"name": application_name},
            )

    def _tracking_table(self) -> str:
        return "tracking"


class SQLitePlanViews(PlanViewTables, SQLiteTrackingRecorder):
    def construct_create_table_statements(self) -> list[str]:
        return super().construct_create_table_statements() + self._table_statements()

    def create_table(self) -> None:
        super().create_table()
        self._reset_if_outdated()

    def _sql(self, statement: str) -> str:
        return _named_parameters(statement)

    @contextmanager
    def _statement(self, *, writes: bool = True) -> Iterator[Any]:
        """(See :meth:`PlanViewTables._statement`.) The library's transaction without its
        ``BEGIN`` (``domain.sqlite``), so its translation of sqlite3 errors still applies."""
        with (
            self.datastore.get_connection(commit=writes) as connection,
            _SingleStatement(connection, commit=writes) as cursor,
            cursor,
        ):
            yield cursor


class PostgresPlanViews(PlanViewTables, PostgresTrackingRecorder):
    """The tables in a PostgreSQL schema of their own, shared by every instance.

    Only the instance that leads (``projections.leader``) writes them. Each write ends
    with a NOTIFY on :attr:`channel` (payload ``"<plan id>:<position>"``, the plan id empty
    for an event that changed no plan) in the same transaction as the rows and the
    tracking record, so a notice is sent exactly when, and only if, the change commits.
    """

    _locks_version_row = " FOR SHARE"

    def __init__(self, datastore: Any, **kwargs: Any):
        super().__init__(datastore, **kwargs)
        from psycopg.sql import SQL

        schema = self.datastore.schema or "public"
        self.sql_create_statements.insert(0, SQL(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))  # type: ignore[arg-type]
        self.sql_create_statements.extend(SQL(statement) for statement in self._table_statements())  # type: ignore[arg-type]
        self.sql_create_statements.append(SQL(self._save_function()))  # type: ignore[arg-type]
        arguments = ", ".join(f"%s::{kind}" for kind in (*_PLAN_COLUMN_TYPES, *_SAVE_ARGUMENT_TYPES))
        self._call_save_statement = SQL(f"SELECT {self._qualified('plan_views_save')}({arguments}) AS saved")  # type: ignore[arg-type]

    def _save_function(self) -> str:
        """The function that makes :meth:`save_plan`'s writes in one call (see :meth:`_save`)."""
        views, tracking = self._qualified("plan_views"), self._tracking_table()
        parameters = ", ".join(f"p_{name} {kind}" for name, kind in zip(PLAN_COLUMNS, _PLAN_COLUMN_TYPES, strict=True))
        values = ", ".join(f"p_{name}" for name in PLAN_COLUMNS)
        updates = ", ".join(f"{name} = p_{name}" for name in PLAN_COLUMNS[1:])
        summary = []
        for table, key in SUMMARY_KEYS.items():
            columns = SUMMARY_COLUMNS[table]
            summary.append(
                f"""
    IF p_replace THEN
        DELETE FROM {self._qualified(table)} WHERE plan_id = p_plan_id;
    ELSIF p_gone ? '{table}' THEN
        DELETE FROM {self._qualified(table)} WHERE plan_id = p_plan_id
            AND {key} IN (SELECT jsonb_array_elements_text(p_gone -> '{table}'));
    END IF;
    IF p_changed ? '{table}' THEN
        INSERT INTO {self._qualified(table)} (plan_id, {", ".join(columns)})
            SELECT p_plan_id, {", ".join(f"r.{name}" for name in columns)}
            FROM jsonb_populate_recordset(NULL::{self._qualified(table)}, p_changed -> '{table}') AS r
            ON CONFLICT (plan_id, {key}) DO UPDATE SET {", ".join(f"{name} = excluded.{name}" for name in columns[1:])};
    END IF;"""
            )
        return f"""
CREATE OR REPLACE FUNCTION {self._qualified("plan_views_save")}(
    {parameters}, p_onto integer, p_replace boolean, p_gone jsonb, p_changed jsonb,
    p_application_name text, p_notification_id bigint, p_channel text, p_read_model_version integer
) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    v_stored integer;
BEGIN
    SELECT version INTO v_stored FROM {self._qualified("read_model_version")} WHERE name = 'plan_views' FOR SHARE;
    IF v_stored IS DISTINCT FROM p_read_model_version THEN
        RAISE EXCEPTION '{_SUPERSEDED}: the read model is at version %', v_stored;
    END IF;
    IF p_onto IS NULL THEN
        INSERT INTO {views} ({", ".join(PLAN_COLUMNS)}) VALUES ({values})
            ON CONFLICT (plan_id) DO UPDATE SET {", ".join(f"{name} = excluded.{name}" for name in PLAN_COLUMNS[1:])};
    ELSE
        UPDATE {views} SET {updates} WHERE plan_id = p_plan_id AND version = p_onto;
        IF NOT FOUND THEN
            RETURN false;
        END IF;
    END IF;{"".join(summary)}
    INSERT INTO {tracking} AS t (application_name, notification_id) VALUES (p_application_name, p_notification_id)
        ON CONFLICT (application_name) DO UPDATE SET notification_id = excluded.notification_id
        WHERE t.notification_id < excluded.notification_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'Failed to record tracking for % %', p_application_name, p_notification_id
            USING ERRCODE = 'unique_violation';
    END IF;
    PERFORM pg_notify(p_channel, p_plan_id || ':' || p_notification_id);
    RETURN true;
END
$$"""

    def _save(
        self,
        columns: dict[str, Any],
        onto: int | None,
        changes: dict[str, tuple[list[str], list[dict[str, Any]]]],
        replace: bool,
        tracking: Tracking,
    ) -> None:
        """One call of the save function, in autocommit: one round trip and one transaction.

        The library's transaction took six (``BEGIN``, the row, the summary rows, the
        tracking record, the ``NOTIFY``, ``COMMIT``), most of the writer's CPU per event.
        The function makes the same writes in the same order and keeps their guarantees:
        a row not at ``onto`` writes nothing (:class:`StaleRow`); a position not after the
        tracked one raises the library's ``IntegrityError`` ("Failed to record tracking",
        as the library's single-row tracking does), undoing the call's writes; the notice
        is sent on commit; a read model at another version than this writer's writes
        nothing (:class:`ReadModelSuperseded`, as :meth:`_check_version`).
        """
        if not self.datastore.single_row_tracking:
            super()._save(columns, onto, changes, replace, tracking)
            return
        gone = {table: keys for table, (keys, _rows) in changes.items() if keys}
        changed = {table: rows for table, (_keys, rows) in changes.items() if rows}
        parameters = (
            *(columns[name] for name in PLAN_COLUMNS),
            onto,
            replace,
            msgspec.json.encode(gone).decode(),
            msgspec.json.encode(changed).decode(),
            tracking.application_name,
            tracking.notification_id,
            self.channel,
            self.read_model_version,
        )
        try:
            with self._statement() as cursor:
                saved = self._call_save(cursor, parameters)
        except PersistenceError as error:
            if not str(error).startswith(_SUPERSEDED):
                raise
            raise self._superseded(str(error).removeprefix(f"{_SUPERSEDED}: ")) from error
        if not saved:
            raise StaleRow(f"the row of plan {columns['plan_id']} is not at version {onto}")

    @contextmanager
    def _statement(self, *, writes: bool = True) -> Iterator[Any]:
        with self.datastore.get_connection() as connection, connection.cursor() as cursor:
            yield cursor

    def _call_save(self, cursor: Any, parameters: tuple[Any, ...]) -> bool:
        """Call the save function on ``cursor`` (autocommit); whether the row was written."""
        cursor.execute(self._call_save_statement, parameters, prepare=True)
        return bool(cursor.fetchone()["saved"])

    @property
    def channel(self) -> str:
        """The NOTIFY channel of this read model: one per schema."""
        from projections.leader import channel_name

        return channel_name(f"{self.datastore.schema or 'public'}.plan_views")

    @property
    def writer_lock_name(self) -> str:
        """The advisory lock that the one writer of this read model holds."""
        return f"{self.datastore.schema or 'public'}.plan_views.writer"

    def create_table(self) -> None:
        """Create the schema and tables, one instance at a time (an advisory lock in a transaction).

        Two sessions running ``CREATE SCHEMA/TABLE IF NOT EXISTS`` at the same moment still
        collide on PostgreSQL's catalogue, and the library's first tracking row would be
        inserted twice: instances that start together would fail.
        """
        from projections.leader import LOCK_CLASS

        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                (LOCK_CLASS, f"{self.datastore.schema or 'public'}.plan_views.create"),
            )
            if self._tables_exist(cursor) and self._version_is_current(cursor):
                return
            super().create_table()
            self._reset_if_outdated()

    def _tables_exist(self, cursor: Any) -> bool:
        """Whether every table and index is there already (then, if their version is current, no DDL runs).

        Even ``CREATE INDEX IF NOT EXISTS`` takes its table's lock, in another order than
        the writer's row writes: an instance starting beside a busy writer deadlocked.
        """
        names = [*TABLES, *INDEXES, self.tracking_table_name]
        cursor.execute(
            "SELECT count(to_regclass(name)) AS found FROM unnest(%s::text[]) AS name",
            ([self._qualified(name) for name in names],),
        )
        return cursor.fetchone()["found"] == len(names)

    def _notify(self, cursor: Any, plan_id: str | None, position: int) -> None:
        cursor.execute("SELECT pg_notify(%s, %s)", (self.channel, f"{plan_id or ''}:{position}"))

    def _qualified(self, table: str) -> str:
        return f'"{self.datastore.schema or "public"}".{table}'

    def _tracking_table(self) -> str:
        return self._qualified(self.tracking_table_name)


@functools.lru_cache(maxsize=256)
def _named_parameters(statement: str) -> str:
    """``statement`` with SQLite's ``:name`` for ``%(name)s``: rewritten once per statement (a few dozen)."""
    return re.sub(r"%\((\w+)\)s", r":\1", statement)


_PLAN_COLUMN_TYPES = ("text", "integer", "bigint", "text", "integer", "text", "text", "text", "text", "text")
"""The types of ``PLAN_COLUMNS``, as the save function on PostgreSQL takes them."""
_SAVE_ARGUMENT_TYPES = ("integer", "boolean", "jsonb", "jsonb", "text", "bigint", "text", "integer")
"""The types of the save function's other arguments: onto, replace, gone, changed, the
tracking record's application and position, the channel, the writer's read-model version."""


def _plan_columns(row: PlanRow) -> dict[str, Any]:
    """The plan's row in ``plan_views``, column by column (in the table's order)."""
    return {
        "plan_id": row.plan_id,
        "version": row.version,
        "position": row.position,
        "search_name": row.search_name,
        "is_closed": int(row.is_closed),
        "segment": str(row.summary["segment"]),
        "closing_outcome": row.summary.get("closing_outcome") if row.is_closed else None,
        "updated_at": row.updated_at,
        "summary": msgspec.json.encode(row.summary).decode(),
        "state": row.state,
    }


def _row_changes(
    old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]
) -> tuple[list[str], list[dict[str, Any]]]:
    """From the rows ``old`` to ``new`` (by key): the keys gone, and the rows new or changed."""
    return [name for name in old if name not in new], [values for name, values in new.items() if old.get(name) != values]


def _people_rows(people: Iterable[Person]) -> dict[str, dict[str, Any]]:
    return {person.person_id: msgspec.structs.asdict(person) for person in people}


def _need_rows(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        category: {"category": category, "needs": count["all"], "open_needs": count["open"]}
        for category, count in summary.get("needs_by_category", {}).items()
    }


def _consent_rows(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        organisation_id: {"organisation_id": organisation_id, "valid_from": valid_from}
        for organisation_id, valid_from in summary.get("consent_from", {}).items()
    }


def _caseload_entries(rows: Iterable[Any]) -> list[CaseloadEntry]:
    return [
        CaseloadEntry(
            plan_id=r["plan_id"],
            version=r["version"],
            role=r["role"],
            summary=msgspec.json.decode(r["summary"]),
            seen_version=r["seen_version"],
        )
        for r in rows
    ]


SEARCH_WORDS = 8
"""The most words of a search that are looked for (a name has fewer)."""


def _name_matches(search: str) -> tuple[str, dict[str, str]]:
    """SQL conditions, and their parameters, for names that contain every word of ``search``
    in any order ("esimerkki matti" finds Matti Esimerkki), case-folded, wildcards taken literally.
    A character that cannot be typed (NUL, which PostgreSQL's text cannot hold; a control
    character) separates words."""
    typed = "".join(character if character.isprintable() else " " for character in search)
    words = typed.casefold().split()[:SEARCH_WORDS]
    sql = "".join(f" AND v.search_name LIKE %(word_{n})s ESCAPE '\\'" for n in range(len(words)))
    return sql, {f"word_{n}": f"%{_escape_like(word)}%" for n, word in enumerate(words)}


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
