"""The access log: who read which plan, when, and what of it. Append-only and tamper-evident.

Every read of a plan by a professional (the plan page, the history page, an export, the
live socket's first load) is recorded **before** the data is sent: the route calls
:meth:`AccessLog.record` (or :meth:`AccessLog.arecord` in an async handler), which returns
only when the entry is durably committed, and raises :class:`AccessLogUnavailable` when it
cannot be; the page is then refused (503), never sent unlogged.

**Where it lives.** Apart from everything else, because it says who read whose plan:

- SQLite: ``<data_dir>/accesslog.sqlite3`` (WAL, ``synchronous=FULL``);
- PostgreSQL: the schema ``<POLKU_PG_SCHEMA or polku>_accesslog``.

Both run the same SQL (``%(name)s`` placeholders, turned into ``:name`` for ``sqlite3``).
Triggers in the database refuse ``UPDATE``, ``DELETE`` (and, on PostgreSQL, ``TRUNCATE``)
of the table, and this class has no method that changes or removes an entry.

**The chain** runs through the whole log, not per plan: entry ``seq`` (1, 2, 3, ... with no
gaps) carries ``prev_hash``, the ``hash`` of entry ``seq - 1`` (64 zeros for the first),
and its own ``hash`` is the SHA-256 of the canonical encoding: msgspec JSON of
:class:`_Canonical` (the entry's fields in a fixed order, ``seq`` and ``at`` included, and
``prev_hash``). One chain for the log means that removing, changing or reordering *any*
entry, of any plan, breaks a link that :meth:`AccessLog.verify` (``polku accesslog
verify``) finds; chains per plan would let all of one plan's entries, or the last ones of
each plan, vanish without a trace, and could not tell the order of reads across plans. The
price is one sequence point for all writers, which the group commit below makes cheap.
Whoever can write to the database can still rewrite the whole chain from some entry to the
end, or cut its end off: that is what an *anchor* catches — note the head (``seq`` and
``hash``, shown by ``verify`` and on the admin page) somewhere else now and then, and give
it to ``verify(anchor=...)`` (``polku accesslog verify --anchor SEQ:HASH``).

**Erasure.** An entry names the professional (their person id, name and organisation) and
the plan by its id only: never the client's name, contact details or anything else from
the plan. A plan id is a random UUID that says nothing about the client by itself; when a
plan is erased (its key destroyed, its read-model rows dropped), nothing links that id to a
person any more, so the log keeps its entries unchanged and its chain intact. The client's
own link to the plan (their account) is the account store's to remove.

**Durability and speed (group commit).** One writer thread per :class:`AccessLog` takes
whatever entries are waiting (up to :attr:`AccessLog.max_batch`), and writes them in one
transaction: take the write lock (SQLite ``BEGIN IMMEDIATE``; PostgreSQL ``LOCK TABLE ...
IN EXCLUSIVE MODE``, which readers pass), read the head, chain and insert the batch,
commit. Each request waits only for the commit of the batch holding its entry. While one
commit is on its way to the disk the next entries queue up, so under load one ``fsync``
serves many reads; an idle log commits a lone entry at once (no waiting for company).
The head is read inside every transaction, so several processes may write one log (several
web instances over PostgreSQL). A failed batch fails its waiters only; the next batch
starts afresh (on a new connection for PostgreSQL). A full queue (:attr:`max_queue`)
refuses new entries at once rather than letting waits grow without bound.

Times are UTC, written ``2026-11-23T12:34:56.123456Z`` (text, so that the hash does not
depend on how a database stores times); ``clock`` (seconds since the epoch) is
``time.time`` unless a test gives another.

This module does not depend on the web framework: it needs only the standard library,
msgspec and (for PostgreSQL) psycopg.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import csv
import hashlib
import io
import logging
import queue
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from datetime import time as dt_time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

import msgspec

from domain.values import FINLAND

if TYPE_CHECKING:
    from domain.storage import StoreSettings

__all__ = (
    "ACCESSLOG_FILENAME",
    "GENESIS_HASH",
    "AccessEntry",
    "AccessLog",
    "AccessLogUnavailable",
    "LoggedEntry",
    "VerifyReport",
    "accesslog_schema",
    "day_start",
    "entry_hash",
    "format_time",
)

ACCESSLOG_FILENAME: Final = "accesslog.sqlite3"
#: The ``prev_hash`` of the first entry.
GENESIS_HASH: Final = "0" * 64
#: The kinds of read: the plan page (also its live socket's first load), the history page
#: (a past version), an export of the plan.
What = Literal["page", "history", "export"]
#: How the data went out: an HTTP response or the live socket.
Via = Literal["http", "websocket"]

_TABLE: Final = "access_log"
_COLUMNS: Final = (
    "seq", "at", "plan_id", "what", "person_id", "person_name", "organisation_id", "organisation_name",
    "version", "moment", "via", "prev_hash", "hash",
)
_SELECT: Final = f"SELECT {', '.join(_COLUMNS)} FROM {_TABLE}"
_INSERT: Final = (
    f"INSERT INTO {_TABLE} ({', '.join(_COLUMNS)}) VALUES ({', '.join(f'%({c})s' for c in _COLUMNS)})"
)
_HEAD: Final = f"SELECT seq, hash FROM {_TABLE} ORDER BY seq DESC LIMIT 1"
_PLACEHOLDER = re.compile(r"%\((\w+)\)s")
#: What the log's PostgreSQL connections show in ``pg_stat_activity`` (docs/deployment.md).
_APPLICATION_NAME: Final = "polku access log"
_APPEND_ONLY_MESSAGE: Final = "the access log is append-only"
_TIME_FORMAT: Final = "%Y-%m-%dT%H:%M:%S.%fZ"
_TEXT_LIMIT: Final = 200
#: Days (``day_start``) are Finland's.

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- entries


class AccessEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One read of a plan, as the route describes it; the log adds ``seq``, ``at`` and the hashes.

    ``version`` is the version of the plan that was read (the history page: the version
    chosen); ``moment`` is the moment the reader asked the history for, if they asked by
    time (ISO 8601), else None.
    """

    plan_id: str
    what: What
    person_id: str
    person_name: str
    organisation_id: str
    organisation_name: str
    version: int | None = None
    moment: str | None = None
    via: Via = "http"


class LoggedEntry(msgspec.Struct, frozen=True, kw_only=True):
    """An entry as the log holds it (``entries_for_plan``, exports); ``at`` is aware (UTC)."""

    seq: int
    at: datetime
    plan_id: str
    what: What
    person_id: str
    person_name: str
    organisation_id: str
    organisation_name: str
    version: int | None
    moment: str | None
    via: Via
    prev_hash: str
    hash: str


class _Canonical(msgspec.Struct, frozen=True, kw_only=True):
    """What an entry's hash is taken over, in this order (never reorder or rename)."""

    seq: int
    at: str
    plan_id: str
    what: str
    person_id: str
    person_name: str
    organisation_id: str
    organisation_name: str
    version: int | None
    moment: str | None
    via: str
    prev_hash: str


_ENCODER = msgspec.json.Encoder()


def entry_hash(entry: LoggedEntry | _Canonical) -> str:
    """The SHA-256 (hex) of an entry's canonical encoding (its own ``hash`` left out)."""
    fields = {name: getattr(entry, name) for name in _Canonical.__struct_fields__}
    if isinstance(fields["at"], datetime):
        fields["at"] = format_time(fields["at"])
    return hashlib.sha256(_ENCODER.encode(_Canonical(**fields))).hexdigest()


def _not_a_formula(value: Any) -> Any:
    """A CSV cell that a spreadsheet would run as a formula (an organisation named
    ``=HYPERLINK(...)``) with an apostrophe before it, as OWASP advises; JSONL keeps the values exact."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def day_start(text: str, *, next_day: bool = False) -> datetime | None:
    """The start of the day ``YYYY-MM-DD`` in Finland (of the day after it with ``next_day``,
    so that an "until" day is included); None for an empty text; ValueError for a bad one."""
    text = text.strip()
    if not text:
        return None
    try:
        day = date.fromisoformat(text)
        if next_day:
            day += timedelta(days=1)
        start = datetime.combine(day, dt_time(0), tzinfo=FINLAND)
        start.astimezone(UTC)  # a day at the calendar's ends has no moment in UTC to read the log from
    except OverflowError as error:
        raise ValueError(f"no day to read the log from: {text}") from error
    return start


def format_time(moment: datetime) -> str:
    """A moment as the log writes it: UTC, microseconds, ``Z``."""
    if moment.tzinfo is None:
        raise ValueError("the access log wants aware datetimes")
    return moment.astimezone(UTC).strftime(_TIME_FORMAT)


class VerifyReport(msgspec.Struct, frozen=True, kw_only=True):
    """What :meth:`AccessLog.verify` found.

    ``ok`` when every entry links to the one before and hashes to its ``hash``. Otherwise
    ``broken_seq`` is the first entry whose link is broken and ``problem`` says how:
    ``missing`` (the entry is not there: removed), ``link`` (its ``prev_hash`` is not the
    hash of the entry before: something before it was changed, removed or reordered),
    ``changed`` (its content no longer hashes to its ``hash``), ``anchor`` (the entry does
    not have the anchored hash, or the log ends before it). ``checked`` entries were read
    up to there; ``head_seq``/``head_hash`` are those of the last good entry.
    """

    ok: bool
    checked: int
    head_seq: int
    head_hash: str
    broken_seq: int | None = None
    problem: Literal["", "missing", "link", "changed", "anchor"] = ""
    message: str = ""


class AccessLogUnavailable(RuntimeError):
    """The entry could not be made durable (or the log is closed or overloaded): refuse the read."""


# --------------------------------------------------------------------------- databases


class _Database(Protocol):
    """Where the entries are kept; one instance is used by one thread at a time."""

    def append(self, entries: Sequence[tuple[AccessEntry, str]]) -> list[LoggedEntry]: ...

    def query(self, sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]: ...

    def stream(self, sql: str, params: Mapping[str, Any], size: int = 1000) -> Iterator[tuple[Any, ...]]: ...

    def close(self) -> None: ...


def _chain(entries: Sequence[tuple[AccessEntry, str]], head: tuple[int, str] | None) -> list[LoggedEntry]:
    """The entries as the next ones after ``head`` (seq, hash), chained."""
    seq, previous = head if head else (0, GENESIS_HASH)
    logged = []
    for entry, at in entries:
        seq += 1
        canonical = _Canonical(
            seq=seq, at=at, plan_id=entry.plan_id, what=entry.what, person_id=entry.person_id,
            person_name=entry.person_name, organisation_id=entry.organisation_id,
            organisation_name=entry.organisation_name, version=entry.version, moment=entry.moment,
            via=entry.via, prev_hash=previous,
        )
        digest = hashlib.sha256(_ENCODER.encode(canonical)).hexdigest()
        logged.append(LoggedEntry(**{**msgspec.structs.asdict(canonical), "at": _parse_time(at)}, hash=digest))
        previous = digest
    return logged


def _row_params(entry: LoggedEntry) -> dict[str, Any]:
    return {**{name: getattr(entry, name) for name in _COLUMNS}, "at": format_time(entry.at)}


class _SQLiteDatabase:
    """``<data_dir>/accesslog.sqlite3``: WAL and ``synchronous=FULL``, so a commit is on disk."""

    _TABLE_SQL: Final = (
        f"CREATE TABLE IF NOT EXISTS {_TABLE} ("
        " seq INTEGER PRIMARY KEY, at TEXT NOT NULL, plan_id TEXT NOT NULL, what TEXT NOT NULL,"
        " person_id TEXT NOT NULL, person_name TEXT NOT NULL, organisation_id TEXT NOT NULL,"
        " organisation_name TEXT NOT NULL, version INTEGER, moment TEXT, via TEXT NOT NULL,"
        " prev_hash TEXT NOT NULL, hash TEXT NOT NULL)"
    )

    def __init__(self, path: Path, *, busy_timeout_s: float) -> None:
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        connection = self._connect()
        try:
            with _sqlite_write(connection):
                connection.execute(self._TABLE_SQL)
                connection.execute(f"CREATE INDEX IF NOT EXISTS access_log_by_plan ON {_TABLE} (plan_id, seq)")
                connection.execute(f"CREATE INDEX IF NOT EXISTS access_log_by_time ON {_TABLE} (at)")
                for event in ("UPDATE", "DELETE"):
                    connection.execute(
                        f"CREATE TRIGGER IF NOT EXISTS access_log_no_{event.lower()} BEFORE {event} ON {_TABLE}"
                        f" BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY_MESSAGE}'); END"
                    )
        finally:
            connection.close()
        try:
            self.path.chmod(0o600)
        except OSError:  # pragma: no cover - a file we may not own
            pass
        self._connection: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        return connection

    @property
    def connection(self) -> sqlite3.Connection:
        if self._connection is None:
            self._connection = self._connect()
        return self._connection

    def append(self, entries: Sequence[tuple[AccessEntry, str]]) -> list[LoggedEntry]:
        connection = self.connection
        with _sqlite_write(connection):
            row = connection.execute(_HEAD).fetchone()
            logged = _chain(entries, (row[0], row[1]) if row else None)
            connection.executemany(_sqlite(_INSERT), [_row_params(entry) for entry in logged])
        return logged

    def query(self, sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        return self.connection.execute(_sqlite(sql), dict(params)).fetchall()

    def stream(self, sql: str, params: Mapping[str, Any], size: int = 1000) -> Iterator[tuple[Any, ...]]:
        connection = self._connect()  # its own: a long read must not hold up anyone else
        try:
            connection.execute("BEGIN")  # one snapshot of the log from the first row to the last
            cursor = connection.execute(_sqlite(sql), dict(params))
            while rows := cursor.fetchmany(size):
                yield from rows
            connection.execute("COMMIT")
        finally:
            connection.close()

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


@contextmanager
def _sqlite_write(connection: sqlite3.Connection) -> Iterator[None]:
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def _sqlite(sql: str) -> str:
    return _PLACEHOLDER.sub(r":\1", sql)


class _PostgresDatabase:
    """The schema ``<schema>_accesslog``; ``synchronous_commit`` stays on (the default)."""

    def __init__(self, conninfo: str, schema: str, *, lock_timeout_s: float) -> None:
        import psycopg

        from domain.storage import check_schema

        check_schema(schema, "schema of the access log")
        self.conninfo = conninfo
        self.schema = schema
        self.options = f"-c search_path={schema} -c lock_timeout={max(int(lock_timeout_s * 1000), 1000)}"
        table = f'"{schema}".{_TABLE}'
        with psycopg.connect(conninfo, autocommit=True, fallback_application_name=_APPLICATION_NAME) as connection:
            connection.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            connection.execute(
                f"CREATE TABLE IF NOT EXISTS {table} ("
                " seq BIGINT PRIMARY KEY, at TEXT NOT NULL, plan_id TEXT NOT NULL, what TEXT NOT NULL,"
                " person_id TEXT NOT NULL, person_name TEXT NOT NULL, organisation_id TEXT NOT NULL,"
                " organisation_name TEXT NOT NULL, version BIGINT, moment TEXT, via TEXT NOT NULL,"
                " prev_hash TEXT NOT NULL, hash TEXT NOT NULL)"
            )
            connection.execute(f"CREATE INDEX IF NOT EXISTS access_log_by_plan ON {table} (plan_id, seq)")
            connection.execute(f"CREATE INDEX IF NOT EXISTS access_log_by_time ON {table} (at)")
            connection.execute(
                f'CREATE OR REPLACE FUNCTION "{schema}".access_log_append_only() RETURNS trigger'
                f" LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION '{_APPEND_ONLY_MESSAGE}'; END $$"
            )
            connection.execute(
                f"CREATE OR REPLACE TRIGGER access_log_no_change BEFORE UPDATE OR DELETE ON {table}"
                f' FOR EACH ROW EXECUTE FUNCTION "{schema}".access_log_append_only()'
            )
            connection.execute(
                f"CREATE OR REPLACE TRIGGER access_log_no_truncate BEFORE TRUNCATE ON {table}"
                f' FOR EACH STATEMENT EXECUTE FUNCTION "{schema}".access_log_append_only()'
            )
        self._connection: Any = None

    def _connect(self) -> Any:
        import psycopg

        from domain.postgres import KEEPALIVES

        return psycopg.connect(
            self.conninfo,
            autocommit=True,
            options=self.options,
            fallback_application_name=_APPLICATION_NAME,
            **KEEPALIVES,
        )

    @property
    def connection(self) -> Any:
        if self._connection is None or self._connection.closed:
            self._connection = self._connect()
        return self._connection

    def append(self, entries: Sequence[tuple[AccessEntry, str]]) -> list[LoggedEntry]:
        try:
            connection = self.connection
            with connection.transaction(), connection.cursor() as cursor:
                # Other writers wait (in order); readers do not.
                cursor.execute(f"LOCK TABLE {_TABLE} IN EXCLUSIVE MODE")
                cursor.execute(_HEAD)
                row = cursor.fetchone()
                logged = _chain(entries, (row[0], row[1]) if row else None)
                cursor.executemany(_INSERT, [_row_params(entry) for entry in logged])
            return logged
        except Exception:
            self.close()  # start the next batch on a fresh connection
            raise

    def query(self, sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        try:
            return self.connection.execute(sql, dict(params)).fetchall()
        except Exception:
            self.close()
            raise

    def stream(self, sql: str, params: Mapping[str, Any], size: int = 1000) -> Iterator[tuple[Any, ...]]:
        connection = self._connect()
        try:
            with connection.transaction():
                connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                with connection.cursor(name="access_log_stream") as cursor:  # server-side: not all in memory
                    cursor.execute(sql, dict(params))
                    while rows := cursor.fetchmany(size):
                        yield from rows
        finally:
            connection.close()

    def close(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            finally:
                self._connection = None


def accesslog_schema(settings: StoreSettings) -> str:
    """The PostgreSQL schema of the access log for ``settings``."""
    return f"{settings.pg_schema or 'polku'}_accesslog"


# --------------------------------------------------------------------------- the log


class _Pending:
    """An entry on its way: a thread waits on a ``concurrent.futures.Future``, a coroutine on an
    ``asyncio.Future`` of its ``loop`` (settled from the loop's own thread)."""

    __slots__ = ("at", "entry", "future", "loop")

    def __init__(self, entry: AccessEntry, loop: asyncio.AbstractEventLoop | None) -> None:
        self.entry = entry
        self.at = ""
        self.loop = loop
        self.future: concurrent.futures.Future[None] | asyncio.Future[None] = (
            concurrent.futures.Future() if loop is None else loop.create_future()
        )


_STOP: Final = object()


class AccessLog:
    """The access log of one store. Thread-safe; open it once per process and close it.

    ``record``/``arecord`` append (blocking until durable); ``entries_for_plan``,
    ``export``, ``head`` and ``verify`` read. Nothing changes or removes an entry.
    ``timeout`` is the longest a read waits for its entry (then it is refused).
    """

    def __init__(
        self,
        writer: _Database,
        reader: _Database,
        *,
        clock: Callable[[], float] = time.time,
        timeout: float = 10.0,
        max_batch: int = 512,
        max_queue: int = 20_000,
    ) -> None:
        self._writer_db = writer
        self._reader_db = reader
        self._reader_lock = threading.Lock()
        self.clock = clock
        self.timeout = timeout
        self.max_batch = max_batch
        self._queue: queue.Queue[_Pending | object] = queue.Queue(maxsize=max_queue)
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        #: Batches committed and entries in them, since opening (for the benchmark and tests).
        self.batches = 0
        self.committed = 0

    # -- opening and closing -------------------------------------------------------------

    @classmethod
    def open(cls, settings: StoreSettings, **options: Any) -> AccessLog:
        """The access log that belongs with ``settings`` (SQLite file or PostgreSQL schema)."""
        lock_timeout = float(max(settings.lock_timeout_s, 1))
        options.setdefault("timeout", lock_timeout + 5)
        if settings.kind == "postgres":
            schema = accesslog_schema(settings)
            return cls(
                _PostgresDatabase(settings.pg_conninfo, schema, lock_timeout_s=lock_timeout),
                _PostgresDatabase(settings.pg_conninfo, schema, lock_timeout_s=lock_timeout),
                **options,
            )
        return cls.sqlite(Path(settings.data_dir) / ACCESSLOG_FILENAME, busy_timeout_s=lock_timeout, **options)

    @classmethod
    def sqlite(cls, path: Path | str, *, busy_timeout_s: float = 5.0, **options: Any) -> AccessLog:
        """The log in the SQLite file ``path``."""
        options.setdefault("timeout", busy_timeout_s + 5)
        return cls(
            _SQLiteDatabase(Path(path), busy_timeout_s=busy_timeout_s),
            _SQLiteDatabase(Path(path), busy_timeout_s=busy_timeout_s),
            **options,
        )

    def close(self) -> None:
        """Write what is queued, stop the writer, close the connections (safe to repeat)."""
        with self._start_lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._queue.put(_STOP)
            thread.join()
        self._fail_queued(AccessLogUnavailable("the access log is closed"))
        self._writer_db.close()
        with self._reader_lock:
            self._reader_db.close()

    @property
    def closed(self) -> bool:
        return self._closed

    # -- writing -------------------------------------------------------------------------

    def record(self, entry: AccessEntry) -> None:
        """Append ``entry`` and return once it is durable; :class:`AccessLogUnavailable` if not."""
        future = self._submit(entry, None).future
        assert isinstance(future, concurrent.futures.Future)
        try:
            future.result(timeout=self.timeout)
        except concurrent.futures.TimeoutError:
            raise AccessLogUnavailable(f"the access log did not commit within {self.timeout:g} s") from None

    async def arecord(self, entry: AccessEntry) -> None:
        """:meth:`record` for async code: the event loop is not blocked while the entry is written."""
        future = self._submit(entry, asyncio.get_running_loop()).future
        try:
            async with asyncio.timeout(self.timeout):
                await future
        except TimeoutError:
            raise AccessLogUnavailable(f"the access log did not commit within {self.timeout:g} s") from None

    def _submit(self, entry: AccessEntry, loop: asyncio.AbstractEventLoop | None) -> _Pending:
        pending = _Pending(_clean(entry), loop)
        with self._start_lock:
            pending.at = format_time(datetime.fromtimestamp(self.clock(), UTC))  # in the order of the queue
            if self._closed:
                raise AccessLogUnavailable("the access log is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="polku-access-log", daemon=True)
                self._thread.start()
            try:
                self._queue.put_nowait(pending)
            except queue.Full:
                raise AccessLogUnavailable("the access log is overloaded") from None
        return pending

    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is _STOP:
                break
            batch = [item]
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            self._write(batch)  # type: ignore[arg-type]

    def _write(self, batch: list[_Pending]) -> None:
        try:
            self._writer_db.append([(pending.entry, pending.at) for pending in batch])
        except Exception as error:
            logger.error("could not write %d access log entries: %s", len(batch), error)
            _settle(batch, AccessLogUnavailable(f"the access log could not be written: {error}"))
            return
        self.batches += 1
        self.committed += len(batch)
        _settle(batch, None)

    def _fail_queued(self, error: Exception) -> None:
        left = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Pending):
                left.append(item)
        _settle(left, error)

    # -- reading -------------------------------------------------------------------------

    def entries_for_plan(self, plan_id: str, limit: int = 100, before: int | None = None) -> list[LoggedEntry]:
        """The plan's entries, newest first (at most ``limit``; only those before the entry
        ``before``, if given). Blocking: call it in a worker thread."""
        older = "" if before is None else " AND seq < %(before)s"
        rows = self._read(
            f"{_SELECT} WHERE plan_id = %(plan_id)s{older} ORDER BY seq DESC LIMIT %(limit)s",
            {"plan_id": str(plan_id), "limit": max(int(limit), 0), "before": before},
        )
        return [_logged(row) for row in rows]

    def head(self) -> tuple[int, str]:
        """The last entry's (seq, hash), or (0, 64 zeros) for an empty log."""
        rows = self._read(_HEAD, {})
        return (int(rows[0][0]), rows[0][1]) if rows else (0, GENESIS_HASH)

    def count(self) -> int:
        return int(self._read(f"SELECT COUNT(*) FROM {_TABLE}", {})[0][0])

    def entries(self, since: datetime | None = None, until: datetime | None = None) -> Iterator[LoggedEntry]:
        """Every entry with ``since <= at < until`` (either may be None), oldest first, streamed."""
        conditions, params = [], {}
        if since is not None:
            conditions.append("at >= %(since)s")
            params["since"] = format_time(since)
        if until is not None:
            conditions.append("at < %(until)s")
            params["until"] = format_time(until)
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        for row in self._reader_db.stream(f"{_SELECT}{where} ORDER BY seq", params):
            yield _logged(row)

    def export(
        self, since: datetime | None = None, until: datetime | None = None, *, format: Literal["csv", "jsonl"] = "csv"  # noqa: A002
    ) -> Iterator[str]:
        """The entries of :meth:`entries` as text, a line at a time: CSV (with a header) or JSON lines.

        Every field is there, hashes included, so an export of the whole log can be checked
        on its own.
        """
        if format == "jsonl":
            for entry in self.entries(since, until):
                yield _ENCODER.encode(_row_params(entry)).decode() + "\n"
            return
        if format != "csv":
            raise ValueError(f"unknown export format {format!r}")
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")

        def line(values: Sequence[Any]) -> str:
            buffer.seek(0)
            buffer.truncate()
            writer.writerow([_not_a_formula(value) for value in values])
            return buffer.getvalue()

        yield line(_COLUMNS)
        for entry in self.entries(since, until):
            yield line(["" if value is None else value for value in _row_params(entry).values()])

    def verify(self, anchor: tuple[int, str] | None = None) -> VerifyReport:
        """Walk the chain from the first entry; report the first broken link.

        With ``anchor`` (seq, hash) — a head noted earlier — also check that entry ``seq``
        is still there with that hash (which catches a cut-off end or a rewritten chain).
        """
        expected, previous, checked = 1, GENESIS_HASH, 0
        anchor_seen = anchor is None or anchor[0] == 0
        for row in self._reader_db.stream(f"{_SELECT} ORDER BY seq", {}):
            values = dict(zip(_COLUMNS, row, strict=True))
            seq = values["seq"]
            if seq != expected:
                return _broken(checked, expected - 1, previous, expected, "missing",
                               f"entry {expected} is missing (the next one is {seq})")
            if values["prev_hash"] != previous:
                return _broken(checked, expected - 1, previous, expected, "link",
                               f"entry {expected} does not follow entry {expected - 1}: an entry before it was "
                               "changed, removed or put in another order")
            if _stored_hash(values) != values["hash"]:
                return _broken(checked, expected - 1, previous, expected, "changed",
                               f"entry {expected} was changed after it was written")
            if anchor is not None and seq == anchor[0]:
                if values["hash"] != anchor[1]:
                    return _broken(checked, expected - 1, previous, expected, "anchor",
                                   f"entry {expected} does not have the anchored hash: the chain was rewritten")
                anchor_seen = True
            checked += 1
            previous = values["hash"]
            expected += 1
        if not anchor_seen:
            assert anchor is not None
            return _broken(checked, expected - 1, previous, anchor[0], "anchor",
                           f"the log ends at entry {expected - 1}, before the anchored entry {anchor[0]}:"
                           " entries were removed from its end")
        return VerifyReport(ok=True, checked=checked, head_seq=expected - 1, head_hash=previous,
                            message=f"all {checked} entries are intact")

    def _read(self, sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        with self._reader_lock:
            if self._closed:
                raise AccessLogUnavailable("the access log is closed")
            return self._reader_db.query(sql, params)


# --------------------------------------------------------------------------- helpers


def _clean(entry: AccessEntry) -> AccessEntry:
    """The entry with its texts trimmed to a sane length (they come from requests and accounts)."""
    if not isinstance(entry, AccessEntry):
        raise TypeError("the access log records AccessEntry values")
    texts = {
        name: value[:_TEXT_LIMIT]
        for name in ("plan_id", "person_id", "person_name", "organisation_id", "organisation_name", "moment")
        if isinstance(value := getattr(entry, name), str) and len(value) > _TEXT_LIMIT
    }
    return msgspec.structs.replace(entry, **texts) if texts else entry


def _parse_time(text: str) -> datetime:
    return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=UTC)


def _logged(row: Sequence[Any]) -> LoggedEntry:
    values = dict(zip(_COLUMNS, row, strict=True))
    values["seq"] = int(values["seq"])
    values["at"] = _parse_time(values["at"])
    if values["version"] is not None:
        values["version"] = int(values["version"])
    return LoggedEntry(**values)


def _stored_hash(values: Mapping[str, Any]) -> str:
    """The hash of a row as stored (its text as it is: a changed type or format changes the hash)."""
    try:
        canonical = _Canonical(**{name: values[name] for name in _Canonical.__struct_fields__})
        return hashlib.sha256(_ENCODER.encode(canonical)).hexdigest()
    except (TypeError, msgspec.EncodeError):
        return ""


def _broken(checked: int, head_seq: int, head_hash: str, seq: int, problem: Any, message: str) -> VerifyReport:
    return VerifyReport(ok=False, checked=checked, head_seq=head_seq, head_hash=head_hash,
                        broken_seq=seq, problem=problem, message=message)


def _settle(batch: Sequence[_Pending], error: BaseException | None) -> None:
    """Tell the waiters: threads directly, each event loop once for all its waiters (one wake-up)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for pending in batch:
        if pending.loop is None:
            _resolve(pending.future, error)
        else:
            by_loop.setdefault(pending.loop, []).append(pending.future)  # type: ignore[arg-type]
    for loop, futures in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve_all, futures, error)
        except RuntimeError:  # the loop has closed: nobody waits any more
            pass


def _resolve_all(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for future in futures:
        _resolve(future, error)


def _resolve(future: concurrent.futures.Future[None] | asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():  # the waiter gave up (timed out, cancelled): nothing to tell
        return
    try:
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
    except (concurrent.futures.InvalidStateError, asyncio.InvalidStateError):
        pass
