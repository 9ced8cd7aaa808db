"""Who may sign in: organisations, accounts, passwords, first sign-in links and sessions;
and the region's service catalogue, which the administrator keeps beside its organisations.

One store, :class:`AccountStore`, kept apart from the event store and the read models:

- SQLite: ``<data_dir>/accounts.sqlite3`` (the default);
- PostgreSQL: the schema ``<POLKU_PG_SCHEMA or polku>_accounts`` when ``StoreSettings.kind``
  is ``"postgres"``, so that several web instances share accounts and sessions.

Both run the same SQL, written with ``%(name)s`` placeholders (converted to ``:name`` for
``sqlite3``).

Passwords are hashed with argon2id (``argon2.PasswordHasher``); nothing else about a password
is kept. A new account gets a first sign-in link instead of a password: a random token that
is shown once (only its SHA-256 is stored), expires after :data:`LINK_LIFETIME`, and lets
its holder set the password once. After :data:`MAX_FAILED_ATTEMPTS` failed sign-ins in a row
a username is locked for :data:`LOCK_DURATION`; unknown usernames are counted and locked in
exactly the same way, and get the same answers (and take as long), so that the sign-in page
does not tell which usernames exist.

Sessions (see :mod:`web.identity`) live in the ``sessions`` table of the same store, keyed
by the SHA-256 of the session id in the cookie, with a sliding expiry (inactivity) and an
absolute one.

Times are seconds since the epoch from the store's ``clock`` (``time.time`` unless a test
gives a fake one).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

import msgspec
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from domain.errors import StoreUnavailable
from domain.inputs import has_forbidden_character, plain_text
from domain.storage import check_schema
from web.identity import Account

if TYPE_CHECKING:
    from domain.storage import StoreSettings

__all__ = (
    "ACCOUNTS_FILENAME",
    "LINK_LIFETIME",
    "LOCK_DURATION",
    "MAX_FAILED_ATTEMPTS",
    "MAX_PASSWORD_LENGTH",
    "MIN_PASSWORD_LENGTH",
    "AccountError",
    "AccountKind",
    "AccountStore",
    "Organisation",
    "OrganisationType",
    "PasswordRejected",
    "SignInResult",
    "accounts_schema",
    "demo_password",
    "ensure_demo_accounts",
    "normalise_username",
)

ACCOUNTS_FILENAME: Final = "accounts.sqlite3"
DEMO_PASSWORD_FILENAME: Final = "demo-password.txt"
#: How long a first sign-in link works.
LINK_LIFETIME: Final = 72 * 60 * 60
#: Failed sign-ins in a row that lock a username...
MAX_FAILED_ATTEMPTS: Final = 5
#: ...for this many seconds.
LOCK_DURATION: Final = 15 * 60
#: Failures older than this are forgotten (so are unknown usernames' counters).
FAILURE_MEMORY: Final = 24 * 60 * 60
MIN_PASSWORD_LENGTH: Final = 12
#: Longer passwords are refused before hashing (argon2 of a huge input is a cheap attack).
MAX_PASSWORD_LENGTH: Final = 256

_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{1,63}$")
_IDENTIFIER = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_NO_USERNAME = "(not a username)"
"""What a sign-in with a name no account can have counts as: refused and locked like any other
unknown name. No NUL in it (PostgreSQL text holds none), nor a name ``_USERNAME`` matches."""
_PLACEHOLDER = re.compile(r"%\((\w+)\)s")
#: What the store's PostgreSQL connections show in ``pg_stat_activity`` (docs/deployment.md).
_APPLICATION_NAME: Final = "polku accounts"

logger = logging.getLogger(__name__)
_T = TypeVar("_T")


class OrganisationType(StrEnum):
    WELLBEING_SERVICES_COUNTY = "wellbeing_services_county"
    KELA = "kela"
    EMPLOYMENT_SERVICES = "employment_services"
    THIRD_SECTOR = "third_sector"
    PRIVATE_PROVIDER = "private_provider"
    OTHER = "other"


class AccountKind(StrEnum):
    PROFESSIONAL = "professional"
    CLIENT = "client"
    ADMIN = "admin"


class Organisation(msgspec.Struct, frozen=True, kw_only=True):
    organisation_id: str
    name: str
    type: OrganisationType


class SignInResult(msgspec.Struct, frozen=True, kw_only=True):
    """The answer to a sign-in attempt: the account, or refused (and locked until when, if locked).

    A refusal never says whether the username exists.
    """

    account: Account | None = None
    locked_until: float | None = None

    @property
    def ok(self) -> bool:
        return self.account is not None


class AccountError(ValueError):
    """A refused administrative change (unknown organisation, taken username...)."""


class PasswordRejected(ValueError):
    """A new password that does not meet the rules; ``code`` names the rule."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def normalise_username(username: str) -> str:
    """Usernames are compared in lower case without surrounding spaces."""
    return username.strip().lower()


def accounts_schema(settings: StoreSettings) -> str:
    """The PostgreSQL schema of the account store for ``settings``."""
    return f"{settings.pg_schema or 'polku'}_accounts"


def check_new_password(password: str) -> None:
    """Raise :class:`PasswordRejected` unless ``password`` may be set."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PasswordRejected("too_short")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise PasswordRejected("too_long")
    if not password.strip():
        raise PasswordRejected("too_short")


# --------------------------------------------------------------------------- the store

NAME_LIMIT: Final = 200
"""The most characters of a person's or an organisation's name, and of a profession."""

_SCHEMA_STATEMENTS: Final = (
    """CREATE TABLE IF NOT EXISTS organisations (
        organisation_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        type TEXT NOT NULL CHECK (type IN ('wellbeing_services_county', 'kela', 'employment_services',
                                           'third_sector', 'private_provider', 'other')),
        created_at DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS accounts (
        account_id TEXT PRIMARY KEY,
        username TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL CHECK (kind IN ('professional', 'client', 'admin')),
        name TEXT NOT NULL,
        person_id TEXT NOT NULL,
        organisation_id TEXT REFERENCES organisations (organisation_id),
        profession TEXT NOT NULL DEFAULT '',
        plan_id TEXT,
        password_hash TEXT,
        password_set_at DOUBLE PRECISION,
        failed_attempts INTEGER NOT NULL DEFAULT 0,
        last_failed_at DOUBLE PRECISION,
        locked_until DOUBLE PRECISION,
        link_token_hash TEXT UNIQUE,
        link_expires_at DOUBLE PRECISION,
        created_at DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS signin_attempts (
        username TEXT PRIMARY KEY,
        failed_attempts INTEGER NOT NULL DEFAULT 0,
        last_failed_at DOUBLE PRECISION,
        locked_until DOUBLE PRECISION)""",
    """CREATE TABLE IF NOT EXISTS sessions (
        session_hash TEXT PRIMARY KEY,
        account_id TEXT,
        data TEXT NOT NULL,
        expires_at DOUBLE PRECISION,
        absolute_expires_at DOUBLE PRECISION)""",
    """CREATE TABLE IF NOT EXISTS services (
        name TEXT PRIMARY KEY,
        created_at DOUBLE PRECISION NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS sessions_by_account ON sessions (account_id)",
    "CREATE INDEX IF NOT EXISTS sessions_by_expiry ON sessions (expires_at)",
)

_ACCOUNT_COLUMNS: Final = (
    "a.account_id, a.kind, a.name, a.person_id, a.organisation_id, o.name, a.profession, a.plan_id"
)
_ACCOUNT_FROM: Final = "accounts a LEFT JOIN organisations o ON o.organisation_id = a.organisation_id"


def _second_professional(person_id: str, organisation_id: str | None) -> AccountError:
    return AccountError(
        f"{person_id!r} has a professional account in {organisation_id!r} already:"
        " a person is one professional of an organisation"
    )


def _count_failure(table: str, key_column: str) -> str:
    """SQL that counts one failed sign-in on a row of ``table`` and returns the new state.

    The counter starts again when the previous lock has run out or the last failure is
    older than :data:`FAILURE_MEMORY`; the row is locked when it reaches the limit.
    """
    stale = (
        f"(({table}.locked_until IS NOT NULL AND {table}.locked_until <= %(now)s)"
        f" OR {table}.last_failed_at IS NULL OR {table}.last_failed_at < %(forget_before)s)"
    )
    counted = f"(CASE WHEN {stale} THEN 1 ELSE {table}.failed_attempts + 1 END)"
    return (
        f"failed_attempts = {counted},"
        f" last_failed_at = %(now)s,"
        f" locked_until = CASE WHEN {counted} >= %(limit)s THEN %(lock_until)s"
        f" WHEN {stale} THEN NULL ELSE {table}.locked_until END"
    )


class _Database(Protocol):
    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]: ...

    def in_transaction(self, work: Callable[[], _T]) -> _T: ...

    def close(self) -> None: ...


def _rows(cursor: Any) -> list[tuple[Any, ...]]:
    return cursor.fetchall() if cursor.description else []


class _SQLiteDatabase:
    """One connection shared by threads behind a lock (like the plan keyring).

    A database that stays locked for ``lock_timeout_s`` (another process writing) raises
    :class:`StoreUnavailable`.
    """

    def __init__(self, path: Path, lock_timeout_s: float = 10) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = path
        self._connection = sqlite3.connect(
            path, check_same_thread=False, isolation_level=None, timeout=max(lock_timeout_s, 0.1)
        )
        self._lock = threading.RLock()
        with self._lock:
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.execute("PRAGMA synchronous=FULL")
            self._connection.execute("PRAGMA foreign_keys=ON")
        try:
            path.chmod(0o600)
        except OSError:  # pragma: no cover - a file we may not own
            pass

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        with self._lock, _locked_as_unavailable():
            return _rows(self._connection.execute(_PLACEHOLDER.sub(r":\1", sql), dict(params or {})))

    def in_transaction(self, work: Callable[[], _T]) -> _T:
        with self._lock:
            with _locked_as_unavailable():
                self._connection.execute("BEGIN IMMEDIATE")
            try:
                result = work()
                with _locked_as_unavailable():
                    self._connection.execute("COMMIT")
            except BaseException:
                if self._connection.in_transaction:
                    self._connection.execute("ROLLBACK")
                raise
            return result

    def close(self) -> None:
        with self._lock:
            self._connection.close()


@contextmanager
def _locked_as_unavailable() -> Iterator[None]:
    """SQLite's "database is locked" (busy after the timeout) as :class:`StoreUnavailable`."""
    try:
        yield
    except sqlite3.OperationalError as error:
        if getattr(error, "sqlite_errorcode", 0) & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            raise StoreUnavailable(str(error)) from error
        raise


class _PostgresDatabase:
    """A small pool in the accounts' schema; every statement (or transaction) is tried again
    once on a fresh connection when its connection dropped (a database restart, a terminated
    backend: the pool's check on checkout cannot see a server that dies after it), and is
    otherwise refused as :class:`StoreUnavailable`.

    Trying again is safe: a statement whose connection dropped was rolled back, unless the
    server committed it just before dying, and every statement here may run twice (upserts,
    deletes, updates to a value) except counting a failed sign-in, which then counts twice.
    The two writes whose second run would see the first one's result recognise it as their
    own: a new account by its new id, a password set with a link by its new (salted) hash.

    The pool keeps ``pool_size`` connections open and opens at most ``pool_max``
    (``POLKU_PG_POOL_SIZE``/``POLKU_PG_POOL_MAX``, as every pool of the event store): no
    thread holds two of its connections at once (a transaction's statements share one), so
    the least that setting allows (2) is enough, and its connections show as ``polku
    accounts`` in ``pg_stat_activity`` unless ``PGAPPNAME`` names the process.
    """

    #: Seconds a statement waits for a free (or new) connection before it is refused.
    CONNECTION_WAIT_S: Final = 5.0

    def __init__(self, conninfo: str, schema: str, lock_timeout_s: int, *, pool_size: int, pool_max: int) -> None:
        import psycopg
        from psycopg_pool import ConnectionPool

        from domain.postgres import KEEPALIVES, check_if_server_spoke

        check_schema(schema, "schema of the account store")
        with psycopg.connect(conninfo, autocommit=True, fallback_application_name=_APPLICATION_NAME) as connection:
            connection.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        self._pool = ConnectionPool(
            conninfo,
            min_size=pool_size,
            max_size=pool_max,
            kwargs={
                "autocommit": True,
                "options": f"-c search_path={schema} -c lock_timeout={max(lock_timeout_s, 1) * 1000}",
                "fallback_application_name": _APPLICATION_NAME,
                **KEEPALIVES,
            },
            open=False,
            timeout=self.CONNECTION_WAIT_S,
            # Replace connections a database restart killed; a healthy idle one costs no ping.
            check=check_if_server_spoke,
        )
        # Wait for the first connections: asked for while they are still being made (the
        # schema's tables are created next), the pool would open one more and keep it for
        # 10 idle minutes.
        self._pool.open(wait=True)
        self._local = threading.local()

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        connection = getattr(self._local, "connection", None)
        if connection is not None:  # inside in_transaction(), which tries again as a whole
            return _rows(connection.execute(sql, dict(params or {})))
        return self._twice(lambda connection: _rows(connection.execute(sql, dict(params or {}))))

    def in_transaction(self, work: Callable[[], _T]) -> _T:
        def transaction(connection: Any) -> _T:
            with connection.transaction():
                self._local.connection = connection
                try:
                    return work()
                finally:
                    self._local.connection = None

        return self._twice(transaction)

    def _twice(self, work: Callable[[Any], _T]) -> _T:
        """``work(connection)``, once more on another connection if the first one dropped."""
        import psycopg
        from psycopg_pool import PoolTimeout

        for attempt in (1, 2):
            connection = None
            try:
                with self._pool.connection() as connection:
                    return work(connection)
            except PoolTimeout as error:
                raise StoreUnavailable(f"no connection to the account store: {error}") from error
            except (psycopg.OperationalError, psycopg.InterfaceError) as error:
                dropped = connection is not None and (connection.closed or connection.broken)
                if dropped and attempt == 1:
                    logger.info("account store connection dropped (%s); trying again on another", error)
                    continue
                raise StoreUnavailable(f"account store: {error}") from error
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._pool.close()


class AccountStore:
    """Organisations, accounts, sign-in and the session table. Thread-safe; open it once.

    ``clock`` gives the time in seconds since the epoch; ``hasher`` is the argon2id
    :class:`~argon2.PasswordHasher` (tests pass a cheaper one; it must be argon2id).
    """

    def __init__(
        self,
        database: _Database,
        *,
        clock: Callable[[], float] = time.time,
        hasher: PasswordHasher | None = None,
    ) -> None:
        self._db = database
        self.clock = clock
        self.hasher = hasher or PasswordHasher()
        if self.hasher.type.name != "ID":
            raise ValueError("passwords are hashed with argon2id")
        self._dummy_hash: str | None = None
        for statement in _SCHEMA_STATEMENTS:
            self._db.execute(statement)
        self._one_professional_account_per_person()

    def _one_professional_account_per_person(self) -> None:
        """A person is one professional of an organisation (a network member is found by the
        pair): a unique index holds the rule. Accounts made before it may break it; then the
        index waits, the start-up says which, and no new such account can be added anyway
        (:meth:`add_account` checks)."""
        twice = self._db.execute(
            "SELECT person_id, organisation_id FROM accounts WHERE kind = 'professional'"
            " GROUP BY person_id, organisation_id HAVING COUNT(*) > 1 ORDER BY person_id, organisation_id"
        )
        if twice:
            logger.error(
                "accounts: %s have two professional accounts or more in one organisation; give each of them"
                " one (docs/deployment.md, 'Accounts'). Until then a plan's member is the oldest of them.",
                ", ".join(f"{person} in {organisation}" for person, organisation in twice),
            )
            return
        self._db.execute(
            "CREATE UNIQUE INDEX IF NOT EXISTS one_professional_account_per_person_and_organisation"
            " ON accounts (person_id, organisation_id) WHERE kind = 'professional'"
        )

    # -- opening ------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        settings: StoreSettings,
        *,
        clock: Callable[[], float] = time.time,
        hasher: PasswordHasher | None = None,
    ) -> AccountStore:
        """The account store that belongs with ``settings`` (SQLite file or PostgreSQL schema)."""
        if settings.kind == "postgres":
            database: _Database = _PostgresDatabase(
                settings.pg_conninfo,
                accounts_schema(settings),
                settings.lock_timeout_s,
                pool_size=settings.pg_pool_size,
                pool_max=settings.pg_pool_max,
            )
        else:
            database = _SQLiteDatabase(Path(settings.data_dir) / ACCOUNTS_FILENAME, max(settings.lock_timeout_s, 1))
        return cls(database, clock=clock, hasher=hasher)

    @classmethod
    def sqlite(
        cls,
        path: Path,
        *,
        clock: Callable[[], float] = time.time,
        hasher: PasswordHasher | None = None,
        lock_timeout_s: float = 10,
    ) -> AccountStore:
        return cls(_SQLiteDatabase(Path(path), lock_timeout_s), clock=clock, hasher=hasher)

    def close(self) -> None:
        self._db.close()

    # -- organisations ------------------------------------------------------------------

    def add_organisation(self, organisation_id: str, name: str, type: OrganisationType | str) -> Organisation:  # noqa: A002
        """Add an organisation, or rename/retype it if it exists (safe to repeat)."""
        organisation = _organisation(organisation_id, name, type)
        self._db.execute(
            "INSERT INTO organisations (organisation_id, name, type, created_at)"
            " VALUES (%(id)s, %(name)s, %(type)s, %(now)s)"
            " ON CONFLICT (organisation_id) DO UPDATE SET name = excluded.name, type = excluded.type",
            {"id": organisation.organisation_id, "name": organisation.name, "type": organisation.type.value,
             "now": self.clock()},
        )
        return organisation

    def create_organisation(self, organisation_id: str, name: str, type: OrganisationType | str) -> Organisation | None:  # noqa: A002
        """Add a new organisation; None (and nothing changed) if its id exists: two people adding
        the same id at once do not rename each other's (:meth:`add_organisation` renames)."""
        organisation = _organisation(organisation_id, name, type)
        rows = self._db.execute(
            "INSERT INTO organisations (organisation_id, name, type, created_at)"
            " VALUES (%(id)s, %(name)s, %(type)s, %(now)s)"
            " ON CONFLICT (organisation_id) DO NOTHING RETURNING organisation_id",
            {"id": organisation.organisation_id, "name": organisation.name, "type": organisation.type.value,
             "now": self.clock()},
        )
        return organisation if rows else None

    def organisation(self, organisation_id: str) -> Organisation | None:
        if not _IDENTIFIER.match(organisation_id):  # none is stored (and PostgreSQL's text holds no NUL)
            return None
        rows = self._db.execute(
            "SELECT organisation_id, name, type FROM organisations WHERE organisation_id = %(id)s",
            {"id": organisation_id},
        )
        return Organisation(organisation_id=rows[0][0], name=rows[0][1], type=OrganisationType(rows[0][2])) if rows else None

    def organisations(self) -> list[Organisation]:
        rows = self._db.execute("SELECT organisation_id, name, type FROM organisations ORDER BY name")
        return [Organisation(organisation_id=r[0], name=r[1], type=OrganisationType(r[2])) for r in rows]

    # -- the service catalogue ------------------------------------------------------------

    def add_service(self, name: str) -> bool:
        """Add a service to the region's catalogue, which the step forms offer; False (and
        nothing changed) if a service of that name, in any case, is in it already."""
        name = plain_text(name)
        if not name or len(name) > NAME_LIMIT or has_forbidden_character(name):
            raise AccountError(f"a service is named, in at most {NAME_LIMIT} characters")
        if name.casefold() in {service.casefold() for service in self.services()}:
            return False
        rows = self._db.execute(
            "INSERT INTO services (name, created_at) VALUES (%(name)s, %(now)s)"
            " ON CONFLICT (name) DO NOTHING RETURNING name",
            {"name": name, "now": self.clock()},
        )
        return bool(rows)

    def remove_service(self, name: str) -> bool:
        """Take a service out of the catalogue (a name mistyped, a service ended); False if it
        was not there. Steps that named it keep the name they were given."""
        if has_forbidden_character(name):  # none is stored (and PostgreSQL's text holds no NUL)
            return False
        rows = self._db.execute("DELETE FROM services WHERE name = %(name)s RETURNING name", {"name": name})
        return bool(rows)

    def services(self) -> list[str]:
        """The catalogue's services, in alphabetical order."""
        rows = self._db.execute("SELECT name FROM services")
        return sorted((row[0] for row in rows), key=str.casefold)

    # -- accounts -----------------------------------------------------------------------

    def add_account(
        self,
        username: str,
        *,
        name: str,
        kind: AccountKind | str = AccountKind.PROFESSIONAL,
        organisation_id: str | None = None,
        profession: str = "",
        person_id: str | None = None,
        plan_id: str | None = None,
    ) -> Account:
        """Create an account (without a password: give it a link with :meth:`issue_link`)."""
        username = normalise_username(username)
        if not _USERNAME.match(username):
            raise AccountError(
                "a username is 2-64 characters: lower-case letters a-z, digits and . _ @ -, "
                f"starting with a letter or digit (got {username!r})"
            )
        kind = _kind(kind)
        name, profession = plain_text(name), plain_text(profession)
        if not name:
            raise AccountError("the account needs the person's name")
        if len(name) > NAME_LIMIT or len(profession) > NAME_LIMIT:
            raise AccountError(f"a name or a profession is at most {NAME_LIMIT} characters")
        if has_forbidden_character(name + profession):
            raise AccountError("a name or profession may not hold a NUL or a lone surrogate")
        if kind is AccountKind.CLIENT:
            if not plan_id:
                raise AccountError("a client account needs the id of the client's plan")
        elif not organisation_id:
            raise AccountError(f"a {kind.value} account needs an organisation")
        elif plan_id:
            raise AccountError("only a client account has a plan id")
        if organisation_id is not None and self.organisation(organisation_id) is None:
            raise AccountError(f"no organisation {organisation_id!r}: add it first")
        account_id = uuid.uuid4().hex
        try:
            self._insert_account(account_id, username, kind, name, person_id, organisation_id, profession, plan_id)
        except Exception as error:
            message = str(error).lower()
            if "unique" not in message and "duplicate" not in message:
                raise
            if "person" in message:  # two administrators at once: the other one's account came first
                raise _second_professional(person_id or username, organisation_id) from None
            raise AccountError(f"the username {username!r} is taken") from None
        account = self.account(account_id)
        assert account is not None
        return account

    def _insert_account(
        self, account_id: str, username: str, kind: AccountKind, name: str, person_id: str | None,
        organisation_id: str | None, profession: str, plan_id: str | None,
    ) -> None:
        def insert() -> None:
            holder = self._db.execute("SELECT account_id FROM accounts WHERE username = %(u)s", {"u": username})
            if holder and holder[0][0] == account_id:
                return  # this very insert, committed before its connection dropped: tried again
            if holder:
                raise AccountError(f"the username {username!r} is taken")
            if kind is AccountKind.PROFESSIONAL and self.professional(person_id or username, organisation_id or ""):
                raise _second_professional(person_id or username, organisation_id)
            self._db.execute(
                "INSERT INTO accounts (account_id, username, kind, name, person_id, organisation_id,"
                " profession, plan_id, created_at) VALUES (%(account_id)s, %(username)s, %(kind)s,"
                " %(name)s, %(person_id)s, %(organisation_id)s, %(profession)s, %(plan_id)s, %(now)s)",
                {"account_id": account_id, "username": username, "kind": kind.value, "name": name,
                 "person_id": person_id or username, "organisation_id": organisation_id,
                 "profession": profession.strip(), "plan_id": plan_id, "now": self.clock()},
            )

        self._db.in_transaction(insert)

    def account(self, account_id: str) -> Account | None:
        rows = self._db.execute(
            f"SELECT {_ACCOUNT_COLUMNS} FROM {_ACCOUNT_FROM} WHERE a.account_id = %(id)s", {"id": account_id}
        )
        return _account(rows[0]) if rows else None

    def account_by_username(self, username: str) -> Account | None:
        rows = self._db.execute(
            f"SELECT {_ACCOUNT_COLUMNS} FROM {_ACCOUNT_FROM} WHERE a.username = %(u)s",
            {"u": normalise_username(username)},
        )
        return _account(rows[0]) if rows else None

    def professional(self, person_id: str, organisation_id: str) -> Account | None:
        """The professional account of ``person_id`` in ``organisation_id``, if there is one."""
        if not (person_id.isprintable() and _IDENTIFIER.match(organisation_id)):  # none is stored
            return None
        rows = self._db.execute(
            f"SELECT {_ACCOUNT_COLUMNS} FROM {_ACCOUNT_FROM} WHERE a.person_id = %(p)s"
            " AND a.organisation_id = %(o)s AND a.kind = 'professional' ORDER BY a.created_at, a.account_id",
            {"p": person_id, "o": organisation_id},
        )
        return _account(rows[0]) if rows else None

    def username_of(self, account_id: str) -> str | None:
        rows = self._db.execute("SELECT username FROM accounts WHERE account_id = %(id)s", {"id": account_id})
        return rows[0][0] if rows else None

    def usernames(self) -> list[str]:
        return [row[0] for row in self._db.execute("SELECT username FROM accounts ORDER BY username")]

    def count_accounts(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM accounts")[0][0])

    # -- passwords and links ------------------------------------------------------------

    def issue_link(self, username: str, *, valid_for: float = LINK_LIFETIME) -> str:
        """A new first sign-in link token for ``username`` (replacing any earlier one).

        Only the token's SHA-256 is stored: show the token once, in the link
        ``/signin/link/<token>``.
        """
        token = secrets.token_urlsafe(32)
        updated = self._db.execute(
            "UPDATE accounts SET link_token_hash = %(hash)s, link_expires_at = %(expires)s"
            " WHERE username = %(u)s RETURNING account_id",
            {"hash": _token_hash(token), "expires": self.clock() + valid_for, "u": normalise_username(username)},
        )
        if not updated:
            raise AccountError(f"no account {normalise_username(username)!r}")
        return token

    def account_for_link(self, token: str) -> Account | None:
        """The account a still-valid link ``token`` belongs to (the link stays valid)."""
        if not token or len(token) > 128:
            return None
        rows = self._db.execute(
            f"SELECT {_ACCOUNT_COLUMNS}, a.link_token_hash FROM {_ACCOUNT_FROM}"
            " WHERE a.link_token_hash = %(hash)s AND a.link_expires_at > %(now)s",
            {"hash": _token_hash(token), "now": self.clock()},
        )
        if not rows or not hmac.compare_digest(rows[0][-1], _token_hash(token)):
            return None
        return _account(rows[0][:-1])

    def set_password_with_link(self, token: str, password: str) -> Account | None:
        """Set the password of the link's account and use the link up; None if it is not valid.

        Raises :class:`PasswordRejected` for a password that breaks the rules (the link
        stays valid then). Ends the account's sessions.
        """
        check_new_password(password)
        linked = self.account_for_link(token)
        if linked is None:
            return None
        password_hash = self.hasher.hash(password)
        now = self.clock()

        def set_and_end_sessions() -> bool:
            rows = self._db.execute(
                "UPDATE accounts SET password_hash = %(hash)s, password_set_at = %(now)s,"
                " link_token_hash = NULL, link_expires_at = NULL, failed_attempts = 0,"
                " last_failed_at = NULL, locked_until = NULL"
                " WHERE link_token_hash = %(token_hash)s AND link_expires_at > %(now)s RETURNING account_id",
                {"hash": password_hash, "now": now, "token_hash": _token_hash(token)},
            )
            if not rows and not self._db.execute(
                "SELECT 1 FROM accounts WHERE account_id = %(id)s AND password_hash = %(hash)s",
                {"id": linked.account_id, "hash": password_hash},
            ):
                return False  # used or expired meanwhile (the update is the one check that counts)
            self.delete_sessions_of(linked.account_id)
            return True

        # One transaction, so the sessions end with the new password. A try again (its
        # connection dropped) after the server committed the first finds the link used up,
        # and the account with this call's hash (salted: no other call makes it): done.
        if not self._db.in_transaction(set_and_end_sessions):
            return None
        return self.account(linked.account_id)

    def set_password(self, username: str, password: str, *, password_hash: str | None = None) -> None:
        """Set a password directly (the demo, tests). ``password_hash`` reuses a hash of it."""
        check_new_password(password)
        if password_hash is None:
            password_hash = self.hasher.hash(password)
        rows = self._db.execute(
            "UPDATE accounts SET password_hash = %(hash)s, password_set_at = %(now)s,"
            " failed_attempts = 0, last_failed_at = NULL, locked_until = NULL"
            " WHERE username = %(u)s RETURNING account_id",
            {"hash": password_hash, "now": self.clock(), "u": normalise_username(username)},
        )
        if not rows:
            raise AccountError(f"no account {normalise_username(username)!r}")
        self.delete_sessions_of(rows[0][0])

    def password_hash_of(self, username: str) -> str | None:
        rows = self._db.execute(
            "SELECT password_hash FROM accounts WHERE username = %(u)s", {"u": normalise_username(username)}
        )
        return rows[0][0] if rows else None

    def password_matches_hash(self, password_hash: str, password: str) -> bool:
        """Whether ``password_hash`` is of ``password`` (no lock-out: for the demo set-up)."""
        try:
            return self.hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    # -- signing in ---------------------------------------------------------------------

    def verify_password(self, username: str, password: str) -> SignInResult:
        """Check a username and password; count failures and lock after too many.

        Unknown usernames, accounts without a password, wrong passwords and locked
        usernames all give the same kind of answer for known and unknown usernames.
        """
        now = self.clock()
        username = normalise_username(username)
        if not _USERNAME.match(username):
            username = _NO_USERNAME
        rows = self._db.execute(
            "SELECT account_id, password_hash, locked_until FROM accounts WHERE username = %(u)s",
            {"u": username},
        )
        if rows:
            account_id, password_hash, locked_until = rows[0]
        else:
            account_id, password_hash = None, None
            attempt = self._db.execute(
                "SELECT locked_until FROM signin_attempts WHERE username = %(u)s", {"u": username}
            )
            locked_until = attempt[0][0] if attempt else None
        if locked_until is not None and locked_until > now:
            return SignInResult(locked_until=locked_until)
        matches = len(password) <= MAX_PASSWORD_LENGTH and self._verify(password_hash, password)
        if matches and account_id is not None:
            self._db.execute(
                "UPDATE accounts SET failed_attempts = 0, last_failed_at = NULL, locked_until = NULL"
                " WHERE account_id = %(id)s",
                {"id": account_id},
            )
            if self.hasher.check_needs_rehash(password_hash):
                self._db.execute(
                    "UPDATE accounts SET password_hash = %(hash)s WHERE account_id = %(id)s",
                    {"hash": self.hasher.hash(password), "id": account_id},
                )
            return SignInResult(account=self.account(account_id))
        return SignInResult(locked_until=self._count_failure(account_id, username, now))

    def _verify(self, password_hash: str | None, password: str) -> bool:
        """argon2 verification; without a hash, the same work against a dummy one."""
        if password_hash is None:
            if self._dummy_hash is None:
                self._dummy_hash = self.hasher.hash(secrets.token_urlsafe(24))
            password_hash = self._dummy_hash
            real = False
        else:
            real = True
        try:
            return self.hasher.verify(password_hash, password) and real
        except VerifyMismatchError:
            return False
        except (VerificationError, InvalidHashError):
            return False

    def _count_failure(self, account_id: str | None, username: str, now: float) -> float | None:
        params = {"now": now, "forget_before": now - FAILURE_MEMORY, "limit": MAX_FAILED_ATTEMPTS,
                  "lock_until": now + LOCK_DURATION}
        if account_id is not None:
            rows = self._db.execute(
                f"UPDATE accounts SET {_count_failure('accounts', 'account_id')}"
                " WHERE account_id = %(id)s RETURNING locked_until",
                {**params, "id": account_id},
            )
        else:
            self._db.execute(
                "DELETE FROM signin_attempts WHERE last_failed_at < %(forget_before)s"
                " AND (locked_until IS NULL OR locked_until <= %(now)s)",
                params,
            )
            rows = self._db.execute(
                "INSERT INTO signin_attempts (username, failed_attempts, last_failed_at, locked_until)"
                " VALUES (%(u)s, 1, %(now)s, NULL) ON CONFLICT (username) DO UPDATE SET"
                f" {_count_failure('signin_attempts', 'username')} RETURNING locked_until",
                {**params, "u": username},
            )
        locked_until = rows[0][0] if rows else None
        return locked_until if locked_until is not None and locked_until > now else None

    # -- sessions (used by web.identity.SessionStore) -----------------------------------

    def session_get(self, session_id: str, renew_for: float | None) -> bytes | None:
        """The data of a live session; with ``renew_for``, its inactivity expiry moves on."""
        now = self.clock()
        key = _token_hash(session_id)
        rows = self._db.execute(
            "SELECT data, expires_at, absolute_expires_at FROM sessions WHERE session_hash = %(k)s", {"k": key}
        )
        if not rows:
            return None
        data, expires_at, absolute_expires_at = rows[0]
        if (expires_at is not None and expires_at <= now) or (
            absolute_expires_at is not None and absolute_expires_at <= now
        ):
            self._db.execute("DELETE FROM sessions WHERE session_hash = %(k)s", {"k": key})
            return None
        # Moving the expiry costs a write: do it at most every few seconds per session.
        if renew_for is not None and expires_at is not None and now + renew_for - expires_at > 15:
            self._db.execute(
                "UPDATE sessions SET expires_at = %(e)s WHERE session_hash = %(k)s", {"e": now + renew_for, "k": key}
            )
        return data.encode()

    def session_set(
        self,
        session_id: str,
        data: bytes,
        *,
        expires_in: float | None,
        absolute_lifetime: float | None = None,
        account_id: str | None = None,
    ) -> None:
        """Store a session; its absolute expiry is fixed when it is first stored."""
        now = self.clock()
        self._db.execute(
            "INSERT INTO sessions (session_hash, account_id, data, expires_at, absolute_expires_at)"
            " VALUES (%(k)s, %(account)s, %(data)s, %(expires)s, %(absolute)s)"
            " ON CONFLICT (session_hash) DO UPDATE SET data = excluded.data,"
            " account_id = excluded.account_id, expires_at = excluded.expires_at",
            {"k": _token_hash(session_id), "account": account_id, "data": data.decode(),
             "expires": None if expires_in is None else now + expires_in,
             "absolute": None if absolute_lifetime is None else now + absolute_lifetime},
        )

    def session_delete(self, session_id: str) -> None:
        self._db.execute("DELETE FROM sessions WHERE session_hash = %(k)s", {"k": _token_hash(session_id)})

    def session_exists(self, session_id: str) -> bool:
        return self.session_get(session_id, None) is not None

    def session_expires_in(self, session_id: str) -> int | None:
        rows = self._db.execute(
            "SELECT expires_at, absolute_expires_at FROM sessions WHERE session_hash = %(k)s",
            {"k": _token_hash(session_id)},
        )
        if not rows:
            return None
        ends = [value for value in rows[0] if value is not None]
        return None if not ends else max(int(min(ends) - self.clock()), 0)

    def live_sessions(self, sessions: Iterable[tuple[str, str]]) -> set[str]:
        """Of the given (session id, account id) pairs, the session ids still alive for that
        account: one query for every ``_SESSIONS_ASKED`` (the live sockets' check, without renewing)."""
        wanted = {_token_hash(session_id): (session_id, account_id) for session_id, account_id in sessions}
        hashes = list(wanted)
        alive: set[str] = set()
        for start in range(0, len(hashes), _SESSIONS_ASKED):
            chunk = hashes[start:start + _SESSIONS_ASKED]
            names = {f"h{n}": value for n, value in enumerate(chunk)}
            rows = self._db.execute(
                "SELECT session_hash, account_id FROM sessions"
                f" WHERE session_hash IN ({', '.join(f'%({name})s' for name in names)})"
                " AND (expires_at IS NULL OR expires_at > %(now)s)"
                " AND (absolute_expires_at IS NULL OR absolute_expires_at > %(now)s)",
                {**names, "now": self.clock()},
            )
            alive.update(wanted[key][0] for key, account_id in rows if wanted[key][1] == account_id)
        return alive

    def delete_sessions_of(self, account_id: str) -> None:
        """End every session of an account (a new password, a removed account)."""
        self._db.execute("DELETE FROM sessions WHERE account_id = %(a)s", {"a": account_id})

    def delete_all_sessions(self) -> None:
        self._db.execute("DELETE FROM sessions")

    def purge_expired_sessions(self) -> int:
        now = self.clock()
        rows = self._db.execute(
            "DELETE FROM sessions WHERE expires_at <= %(now)s OR absolute_expires_at <= %(now)s"
            " RETURNING session_hash",
            {"now": now},
        )
        return len(rows)

    def session_count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM sessions")[0][0])


# --------------------------------------------------------------------------- helpers


_SESSIONS_ASKED: Final = 500
"""Session ids asked about in one query (SQLite allows 32,766 parameters, PostgreSQL 65,535)."""


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _kind(kind: AccountKind | str) -> AccountKind:
    try:
        return AccountKind(kind)
    except ValueError:
        raise AccountError(f"the kind of account is one of {', '.join(k.value for k in AccountKind)}") from None


def _organisation(organisation_id: str, name: str, type: OrganisationType | str) -> Organisation:  # noqa: A002
    if not _IDENTIFIER.match(organisation_id):
        raise AccountError(
            "an organisation id is 1-64 characters: lower-case letters a-z, digits and . _ - "
            f"(got {organisation_id!r})"
        )
    name = plain_text(name)
    if not name:
        raise AccountError("the organisation needs a name")
    if len(name) > NAME_LIMIT:
        raise AccountError(f"an organisation's name is at most {NAME_LIMIT} characters")
    if has_forbidden_character(name):
        raise AccountError("an organisation's name may not hold a NUL or a lone surrogate")
    try:
        kind = OrganisationType(type)
    except ValueError:
        raise AccountError(
            f"the type of organisation is one of {', '.join(t.value for t in OrganisationType)}"
        ) from None
    return Organisation(organisation_id=organisation_id, name=name.strip(), type=kind)


def _account(row: Sequence[Any]) -> Account:
    account_id, kind, name, person_id, organisation_id, organisation_name, profession, plan_id = row
    return Account(
        account_id=account_id,
        kind=kind,
        name=name,
        person_id=person_id,
        organisation_id=organisation_id or "",
        organisation_name=organisation_name or "",
        profession=profession or "",
        plan_id=plan_id,
    )


# --------------------------------------------------------------------------- the demo

#: The kind of each demo organisation of ``domain.demo``.
DEMO_ORGANISATION_TYPES: Final = {
    "pirha-toike": OrganisationType.WELLBEING_SERVICES_COUNTY,
    "kela-pirkanmaa": OrganisationType.KELA,
    "tampere-tyollisyys": OrganisationType.EMPLOYMENT_SERVICES,
    "vire-ry": OrganisationType.THIRD_SECTOR,
    "kuntoutus-oy": OrganisationType.PRIVATE_PROVIDER,
}
#: The demo region's service catalogue: the services its plans name, and a few more.
DEMO_SERVICES: Final = (
    "Fysioterapia", "Kelan ammatillinen kuntoutus", "Psykoterapia", "Talous- ja velkaneuvonta",
    "Toimintaterapia", "Työkokeilu", "Työvalmennus", "Vertaistuki", "Yritysneuvonta",
)


def demo_password(data_dir: Path | str, environ: Mapping[str, str] | None = None) -> str:
    """The one password of the demo accounts.

    ``POLKU_DEMO_PASSWORD`` if set; else the one kept in ``<data_dir>/demo-password.txt``
    (mode 0600), generated the first time. It is never in the repository.
    """
    env = os.environ if environ is None else environ
    if env.get("POLKU_DEMO_PASSWORD"):
        password = env["POLKU_DEMO_PASSWORD"]
        check_new_password(password)
        return password
    folder = Path(data_dir)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / DEMO_PASSWORD_FILENAME
    if not path.exists():
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it a moment ago
            pass
        else:
            with os.fdopen(descriptor, "w", encoding="ascii") as file:
                file.write(secrets.token_urlsafe(12) + "\n")
    if path.stat().st_mode & 0o077:
        logger.warning("%s was readable by others; restricting it to 0600", path)
        path.chmod(0o600)
    password = path.read_text(encoding="ascii").strip()
    check_new_password(password)
    return password


def ensure_demo_accounts(store: AccountStore, password: str) -> list[Account]:
    """The demo organisations, their service catalogue and the 12 demo professionals
    (usernames = their person ids), all with ``password``. Safe to repeat: only what is
    missing or different is written.
    """
    from domain.demo import PEOPLE

    check_new_password(password)
    for service in DEMO_SERVICES:
        store.add_service(service)
    shared_hash: str | None = None
    verified: dict[str, bool] = {}
    accounts = []
    for actor, profession in PEOPLE.values():
        if store.organisation(actor.organisation_id) is None:
            store.add_organisation(
                actor.organisation_id,
                actor.organisation_name,
                DEMO_ORGANISATION_TYPES.get(actor.organisation_id, OrganisationType.OTHER),
            )
        account = store.account_by_username(actor.person_id)
        if account is None:
            account = store.add_account(
                actor.person_id, name=actor.name, organisation_id=actor.organisation_id,
                profession=profession, person_id=actor.person_id,
            )
        current = store.password_hash_of(actor.person_id)
        if current is not None and current not in verified:
            verified[current] = store.password_matches_hash(current, password)
        if current is None or not verified[current]:
            if shared_hash is None:  # one hash for all (the same password): the demo starts fast
                shared_hash = store.hasher.hash(password)
                verified[shared_hash] = True
            store.set_password(actor.person_id, password, password_hash=shared_hash)
        accounts.append(account)
    return accounts
