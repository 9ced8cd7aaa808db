"""The read-model tables of plans and caseloads, on SQLite or PostgreSQL.

They live apart from the event store: their own SQLite file, or their own
PostgreSQL schema. Each row is written in the same transaction as the
projection's tracking record, so every event is applied exactly once, even
across restarts. The tables hold decrypted text (read models may: they are
disposable), drop a plan's rows when its key is erased, and are rebuilt from
the event log whenever needed; only `plan_seen`, which remembers what each
person last looked at, is not derived from events and survives a rebuild.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.sqlite import SQLiteTrackingRecorder

TABLES = {
    "plan_views": (
        "plan_id TEXT PRIMARY KEY, version INTEGER NOT NULL, position BIGINT NOT NULL, "
        "search_name TEXT NOT NULL, is_closed INTEGER NOT NULL, updated_at TEXT NOT NULL, "
        "summary TEXT NOT NULL, state TEXT NOT NULL"
    ),
    "plan_people": (
        "plan_id TEXT NOT NULL, person_id TEXT NOT NULL, organisation_id TEXT NOT NULL, "
        "role TEXT NOT NULL, PRIMARY KEY (plan_id, person_id)"
    ),
    "plan_seen": (
        "person_id TEXT NOT NULL, plan_id TEXT NOT NULL, version INTEGER NOT NULL, "
        "seen_at TEXT NOT NULL, PRIMARY KEY (person_id, plan_id)"
    ),
}
INDEXES = {
    "plan_people_person": "plan_people (person_id)",
    "plan_people_organisation": "plan_people (organisation_id)",
    "plan_views_position": "plan_views (position)",
}
DERIVED_TABLES = ("plan_views", "plan_people")


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


class PlanViewTables:
    """Queries shared by both stores, written once with %(name)s placeholders."""

    def _qualified(self, table: str) -> str:
        return table

    def _sql(self, statement: str) -> str:
        return statement

    @contextmanager
    def _cursor(self, *, commit: bool) -> Iterator[Any]:
        with self.datastore.transaction(commit=commit) as cursor:  # type: ignore[attr-defined]
            yield cursor

    def _table_statements(self) -> list[str]:
        statements = [f"CREATE TABLE IF NOT EXISTS {self._qualified(name)} ({columns})" for name, columns in TABLES.items()]
        statements += [
            f"CREATE INDEX IF NOT EXISTS {name} ON {self._qualified(target.split(' ')[0])} {target.split(' ', 1)[1]}"
            for name, target in INDEXES.items()
        ]
        return statements

    def save_plan(self, row: PlanRow, people: Iterable[Person], tracking: Tracking) -> None:
        """Write a plan's row and its people, with the tracking record, atomically."""
        views, plan_people = self._qualified("plan_views"), self._qualified("plan_people")
        with self._cursor(commit=True) as cursor:
            cursor.execute(
                self._sql(
                    f"INSERT INTO {views} (plan_id, version, position, search_name, is_closed, updated_at, summary, state)"
                    " VALUES (%(plan_id)s, %(version)s, %(position)s, %(search_name)s, %(is_closed)s, %(updated_at)s,"
                    " %(summary)s, %(state)s) ON CONFLICT (plan_id) DO UPDATE SET version = excluded.version,"
                    " position = excluded.position, search_name = excluded.search_name,"
                    " is_closed = excluded.is_closed, updated_at = excluded.updated_at,"
                    " summary = excluded.summary, state = excluded.state"
                ),
                {
                    "plan_id": row.plan_id,
                    "version": row.version,
                    "position": row.position,
                    "search_name": row.search_name,
                    "is_closed": int(row.is_closed),
                    "updated_at": row.updated_at,
                    "summary": msgspec.json.encode(row.summary).decode(),
                    "state": row.state,
                },
            )
            cursor.execute(self._sql(f"DELETE FROM {plan_people} WHERE plan_id = %(plan_id)s"), {"plan_id": row.plan_id})
            for person in people:
                cursor.execute(
                    self._sql(
                        f"INSERT INTO {plan_people} (plan_id, person_id, organisation_id, role)"
                        " VALUES (%(plan_id)s, %(person_id)s, %(organisation_id)s, %(role)s)"
                    ),
                    {"plan_id": row.plan_id, **msgspec.structs.asdict(person)},
                )
            self._insert_tracking(cursor, tracking)  # type: ignore[attr-defined]
            self._notify(cursor, row.plan_id, tracking.notification_id)

    def drop_plan(self, plan_id: str, tracking: Tracking) -> None:
        with self._cursor(commit=True) as cursor:
            for table in ("plan_views", "plan_people", "plan_seen"):
                cursor.execute(
                    self._sql(f"DELETE FROM {self._qualified(table)} WHERE plan_id = %(plan_id)s"),
                    {"plan_id": plan_id},
                )
            self._insert_tracking(cursor, tracking)  # type: ignore[attr-defined]
            self._notify(cursor, plan_id, tracking.notification_id)

    def skip(self, tracking: Tracking) -> None:
        """Record that an event needed no change, so it is not looked at again."""
        self.insert_tracking(tracking)  # type: ignore[attr-defined]

    def _notify(self, cursor: Any, plan_id: str | None, position: int) -> None:
        """Tell the other instances, on commit, that the read model reached ``position``."""

    def plans_changed_after(self, position: int) -> list[tuple[str, int]]:
        """(plan id, position of its latest applied event) of every plan changed after ``position``."""
        with self._cursor(commit=False) as cursor:
            cursor.execute(
                self._sql(
                    f"SELECT plan_id, position FROM {self._qualified('plan_views')}"
                    " WHERE position > %(position)s ORDER BY position"
                ),
                {"position": position},
            )
            return [(r["plan_id"], r["position"]) for r in cursor.fetchall()]

    def plan_state(self, plan_id: str) -> tuple[int, str] | None:
        with self._cursor(commit=False) as cursor:
            cursor.execute(
                self._sql(f"SELECT version, state FROM {self._qualified('plan_views')} WHERE plan_id = %(plan_id)s"),
                {"plan_id": plan_id},
            )
            row = cursor.fetchone()
        return (row["version"], row["state"]) if row else None

    def people_of(self, plan_id: str) -> list[Person]:
        with self._cursor(commit=False) as cursor:
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
        with self._cursor(commit=False) as cursor:
            cursor.execute(
                self._sql(
                    "SELECT v.plan_id, v.version, v.summary, MIN(p.role) AS role, MAX(s.version) AS seen_version"
                    f" FROM {people} p JOIN {views} v ON v.plan_id = p.plan_id"
                    f" LEFT JOIN {seen} s ON s.plan_id = v.plan_id AND s.person_id = %(person_id)s"
                    f" WHERE {scope} AND v.search_name LIKE %(search)s ESCAPE '\\'"
                    " GROUP BY v.plan_id, v.version, v.summary, v.updated_at"
                    " ORDER BY v.updated_at DESC LIMIT %(limit)s"
                ),
                {
                    "person_id": person_id,
                    "organisation_id": organisation_id,
                    "search": f"%{_escape_like(search.casefold())}%",
                    "limit": limit,
                },
            )
            return [
                CaseloadEntry(
                    plan_id=r["plan_id"],
                    version=r["version"],
                    role=r["role"],
                    summary=msgspec.json.decode(r["summary"]),
                    seen_version=r["seen_version"],
                )
                for r in cursor.fetchall()
            ]

    def mark_seen(self, person_id: str, plan_id: str, version: int, seen_at: str) -> None:
        with self._cursor(commit=True) as cursor:
            cursor.execute(
                self._sql(
                    f"INSERT INTO {self._qualified('plan_seen')} (person_id, plan_id, version, seen_at)"
                    " VALUES (%(person_id)s, %(plan_id)s, %(version)s, %(seen_at)s)"
                    " ON CONFLICT (person_id, plan_id) DO UPDATE SET version = excluded.version, seen_at = excluded.seen_at"
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

    def _sql(self, statement: str) -> str:
        return re.sub(r"%\((\w+)\)s", r":\1", statement)


class PostgresPlanViews(PlanViewTables, PostgresTrackingRecorder):
    """The tables in a PostgreSQL schema of their own, shared by every instance.

    Only the instance that leads (``projections.leader``) writes them. Each write ends
    with a NOTIFY on :attr:`channel` (payload ``"<plan id>:<position>"``, the plan id empty
    for an event that changed no plan) in the same transaction as the rows and the
    tracking record, so a notice is sent exactly when, and only if, the change commits.
    """

    def __init__(self, datastore: Any, **kwargs: Any):
        super().__init__(datastore, **kwargs)
        from psycopg.sql import SQL

        schema = self.datastore.schema or "public"
        self.sql_create_statements.insert(0, SQL(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))  # type: ignore[arg-type]
        self.sql_create_statements.extend(SQL(statement) for statement in self._table_statements())  # type: ignore[arg-type]

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
            if self._tables_exist(cursor):
                return
            super().create_table()

    def _tables_exist(self, cursor: Any) -> bool:
        """Whether every table and index is there already.

        Even ``CREATE INDEX IF NOT EXISTS`` takes its table's lock, in another order than
        the writer's row writes: an instance starting beside a busy writer deadlocked.
        """
        names = [*TABLES, *INDEXES, self.tracking_table_name]
        cursor.execute(
            "SELECT count(to_regclass(name)) AS found FROM unnest(%s::text[]) AS name",
            ([self._qualified(name) for name in names],),
        )
        return cursor.fetchone()["found"] == len(names)

    def skip(self, tracking: Tracking) -> None:
        with self._cursor(commit=True) as cursor:
            self._insert_tracking(cursor, tracking)
            self._notify(cursor, None, tracking.notification_id)

    def _notify(self, cursor: Any, plan_id: str | None, position: int) -> None:
        cursor.execute("SELECT pg_notify(%s, %s)", (self.channel, f"{plan_id or ''}:{position}"))

    def _qualified(self, table: str) -> str:
        return f'"{self.datastore.schema or "public"}".{table}'

    def _tracking_table(self) -> str:
        return self._qualified(self.tracking_table_name)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
