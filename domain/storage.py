"""Where the event store and the plan keys live, chosen by configuration.

`StoreSettings.from_environ()` reads the documented POLKU_* variables:

    POLKU_STORE         sqlite (default) or postgres
    POLKU_DATA_DIR      folder for the SQLite files and the master key file (./data)
    POLKU_PG_HOST, POLKU_PG_PORT, POLKU_PG_DB, POLKU_PG_USER, POLKU_PG_PASSWORD
    POLKU_PG_SCHEMA     schema of the event store (default: public); keys go to <schema>_keys;
                        lowercase letters, digits and _, at most 53 characters (`check_schema`)
    POLKU_PG_LOCK_TIMEOUT  seconds to wait for a lock before failing (default 5, never 0)
    POLKU_PG_POOL_SIZE  connections each pool keeps open when idle (default 1)
    POLKU_PG_POOL_MAX   connections each pool opens at most under load (default 5, at least 2)
    POLKU_MASTER_KEY    base64 of 32 bytes that wraps the per-plan keys
    POLKU_AGGREGATE_CACHE_SIZE  plans kept in memory by the write side (default 3000; 0: none)

Without POLKU_MASTER_KEY a SQLite store keeps a generated master key in
`<data dir>/master.key` (mode 0600); a PostgreSQL store refuses to start
without it, because its keys must not depend on one machine's disk.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from pathlib import Path
from typing import Literal

import msgspec

from domain.errors import ConfigurationError
from domain.keys import MASTER_KEY_BYTES, Keyring, PostgresKeyring, SQLiteKeyring

PG_NAME_MAX = 63
"""PostgreSQL's longest name (NAMEDATALEN - 1). It cuts a longer one to this length with only
a NOTICE, so two names that differ only after it are one name."""

PG_SCHEMA_MAX = PG_NAME_MAX - len("_accesslog")
"""The longest POLKU_PG_SCHEMA (53): every schema derived from it (``<schema>_keys``,
``_views``, ``_accounts``, and the longest, ``_accesslog``) must fit ``PG_NAME_MAX``
whole. Cut short, ``<schema>_keys`` of a 59-63 character schema was the event store's own
schema (the plan keys in the event store's backups), and deployments whose names shared
their first 57 characters shared one read model and one key schema."""

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]*")
LOCK_TIMEOUT_MAX_S = 2_147_483
"""PostgreSQL's ``lock_timeout`` is at most 2**31 - 1 milliseconds: a longer one fails every connection."""


def check_schema(name: str, setting: str, *, longest: int = PG_NAME_MAX) -> str:
    """``name`` if it is a schema name every store can use, else a ``ValueError`` naming the
    ``setting``: lowercase letters, digits and ``_``, not starting with a digit, at most
    ``longest`` characters.

    The stores quote their schemas as identifiers, but the event store's also goes into the
    dollar-quoted body of its insert function (``domain.postgres``), and the account store
    and access log into a connection's ``search_path`` option, where an unquoted name is
    folded to lowercase: only plain lowercase names mean the same schema everywhere.
    """
    if len(name) > longest or not _SCHEMA_NAME.fullmatch(name) or name.startswith("pg_"):
        msg = (
            f"Invalid {setting} {name!r}: use only lowercase letters, digits and _, "
            f"not starting with a digit or pg_ (PostgreSQL's own), at most {longest} characters."
        )
        raise ConfigurationError(msg)
    return name


_VARIABLES = {
    "kind": "POLKU_STORE",
    "data_dir": "POLKU_DATA_DIR",
    "pg_host": "POLKU_PG_HOST",
    "pg_port": "POLKU_PG_PORT",
    "pg_db": "POLKU_PG_DB",
    "pg_user": "POLKU_PG_USER",
    "pg_password": "POLKU_PG_PASSWORD",
    "pg_schema": "POLKU_PG_SCHEMA",
    "lock_timeout_s": "POLKU_PG_LOCK_TIMEOUT",
    "pg_pool_size": "POLKU_PG_POOL_SIZE",
    "pg_pool_max": "POLKU_PG_POOL_MAX",
    "master_key_b64": "POLKU_MASTER_KEY",
    "aggregate_cache_size": "POLKU_AGGREGATE_CACHE_SIZE",
}
"""Each setting of :class:`StoreSettings` and the environment variable that holds it."""


class StoreSettings(msgspec.Struct, frozen=True, kw_only=True):
    kind: Literal["sqlite", "postgres"] = "sqlite"
    data_dir: str = "data"
    pg_host: str = "127.0.0.1"
    pg_port: int = 5432
    pg_db: str = "polku"
    pg_user: str = "postgres"
    pg_password: str = ""
    pg_schema: str = ""
    lock_timeout_s: int = 5
    pg_pool_size: int = 1
    """Connections each pool of the store (event store, read model, the follower's reading of
    the event store, each plan-key store) keeps open when idle. A pool opens more as threads
    ask (a few ms each on a local server) and closes those after 10 idle minutes; the
    library's default of 5 kept about 26 connections open per idle `polku serve`
    (docs/deployment.md, "Connections to PostgreSQL")."""
    pg_pool_max: int = 5
    """The most connections each of those pools opens. Inserts do not count (one kept
    connection per process, which the table lock serialises anyway), nor do the listeners
    and the leader's lock. At least 2: the follower's LISTEN holds one of its pool for good."""
    master_key_b64: str = ""
    aggregate_cache_size: int = 3_000
    """A county's working set of a few thousand plans. A cached plan holds ~30 KiB at 20
    events, ~100 KiB at 200 and ~1.1 MiB at 10,000, and makes each full garbage collection
    longer (~35-50 ms per 1,000 plans of 20 events, ~85-190 ms per 1,000 of 200;
    `benchmarks/plan_memory.py`): a full cache takes 90-300 MiB and a full collection
    0.1-0.5 s. It was 500 when a plan held megabytes."""

    def __post_init__(self) -> None:
        """Refuse a schema name that some store cannot use (`check_schema`, `PG_SCHEMA_MAX`),
        and pool sizes that a pool cannot have or the follower cannot work with."""
        if self.kind == "postgres" and self.pg_schema:
            check_schema(self.pg_schema, "POLKU_PG_SCHEMA", longest=PG_SCHEMA_MAX)
        if self.lock_timeout_s > LOCK_TIMEOUT_MAX_S:  # 0 or less is taken as 1 (never for ever)
            raise ConfigurationError(
                f"POLKU_PG_LOCK_TIMEOUT {self.lock_timeout_s}: a whole number of seconds up to {LOCK_TIMEOUT_MAX_S}."
            )
        if not 0 <= self.pg_pool_size <= self.pg_pool_max or self.pg_pool_max < 2:
            msg = (
                f"POLKU_PG_POOL_SIZE {self.pg_pool_size} and POLKU_PG_POOL_MAX {self.pg_pool_max}: "
                "need 0 <= POLKU_PG_POOL_SIZE <= POLKU_PG_POOL_MAX and POLKU_PG_POOL_MAX >= 2."
            )
            raise ConfigurationError(msg)
        if self.master_key_b64:
            _decoded_master_key(self.master_key_b64)

    @classmethod
    def from_environ(cls, environ: dict[str, str] | None = None) -> StoreSettings:
        env = os.environ if environ is None else environ
        fields = {field: env.get(variable) for field, variable in _VARIABLES.items()}
        given = {name: value for name, value in fields.items() if value}
        for name, value in given.items():
            if not value.isprintable():  # bytes that are not UTF-8 come as lone surrogates
                raise ConfigurationError(f"{_VARIABLES[name]} must be printable UTF-8 text.")
        try:
            return msgspec.convert(given, cls, strict=False)
        except msgspec.ValidationError as error:
            raise ConfigurationError(f"Invalid store configuration: {error}") from None

    def as_environ(self) -> dict[str, str]:
        """These settings as the POLKU_* variables that `from_environ` reads."""
        return {variable: str(getattr(self, field)) for field, variable in _VARIABLES.items()}

    @property
    def view_store_path(self) -> str:
        return str(Path(self.data_dir) / "views.sqlite3")

    @property
    def event_store_env(self) -> dict[str, str]:
        """The settings in the eventsourcing library's own configuration keys."""
        if self.kind == "sqlite":
            return {
                "PERSISTENCE_MODULE": "domain.sqlite",
                "SQLITE_DBNAME": str(Path(self.data_dir) / "events.sqlite3"),
                "SQLITE_LOCK_TIMEOUT": str(max(self.lock_timeout_s, 1)),
                "AGGREGATE_CACHE_MAXSIZE": self._cache_maxsize,
            }
        return {
            # The library's module, but each save is one call of a stored function
            # (same table lock, NOTIFY and lock timeout; see domain/postgres.py).
            "PERSISTENCE_MODULE": "domain.postgres",
            "POSTGRES_DBNAME": self.pg_db,
            "POSTGRES_HOST": self.pg_host,
            "POSTGRES_PORT": str(self.pg_port),
            "POSTGRES_USER": self.pg_user,
            "POSTGRES_PASSWORD": self.pg_password,
            "POSTGRES_SCHEMA": self.pg_schema,
            "POSTGRES_LOCK_TIMEOUT": str(max(self.lock_timeout_s, 1)),
            "POSTGRES_POOL_SIZE": str(self.pg_pool_size),
            "POSTGRES_MAX_OVERFLOW": str(self.pg_pool_max - self.pg_pool_size),
            "POSTGRES_APPLICATION_NAME": "polku events",
            # A connection that died with a database restart is replaced on checkout
            # (domain.postgres asks the socket first, so a healthy one costs no round trip).
            "POSTGRES_PRE_PING": "y",
            "AGGREGATE_CACHE_MAXSIZE": self._cache_maxsize,
        }

    @property
    def _cache_maxsize(self) -> str:
        """The cache size as the library reads it: it takes 0 for an unbounded cache and
        only an empty value for none, so 0 (or less) here becomes empty."""
        return str(self.aggregate_cache_size) if self.aggregate_cache_size > 0 else ""

    @property
    def pg_conninfo(self) -> str:
        from psycopg.conninfo import make_conninfo

        return make_conninfo(
            host=self.pg_host,
            port=self.pg_port,
            dbname=self.pg_db,
            user=self.pg_user,
            password=self.pg_password or None,
        )

    def open_keyring(self) -> Keyring:
        if self.kind == "sqlite":
            Path(self.data_dir).mkdir(parents=True, exist_ok=True)
            return SQLiteKeyring(str(Path(self.data_dir) / "keys.sqlite3"), self._master_key())
        schema = f"{self.pg_schema or 'polku'}_keys"
        return PostgresKeyring(
            self.pg_conninfo,
            schema,
            self._master_key(),
            max(self.lock_timeout_s, 1),
            pool_size=self.pg_pool_size,
            pool_max=self.pg_pool_max,
        )

    def _master_key(self) -> bytes:
        if self.master_key_b64:
            return _decoded_master_key(self.master_key_b64)
        if self.kind == "postgres":
            raise ConfigurationError("POLKU_MASTER_KEY must be set when the store is PostgreSQL.")
        path = Path(self.data_dir) / "master.key"
        if not path.exists():
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as file:
                file.write(base64.b64encode(secrets.token_bytes(32)).decode())
        return base64.b64decode(path.read_text().strip())


def _decoded_master_key(text: str) -> bytes:
    """The master key that ``POLKU_MASTER_KEY`` holds, or a :class:`ConfigurationError`."""
    try:
        key = base64.b64decode(text)
    except binascii.Error:
        raise ConfigurationError("POLKU_MASTER_KEY must be base64 (e.g. from `openssl rand -base64 32`).") from None
    if len(key) != MASTER_KEY_BYTES:
        raise ConfigurationError(f"POLKU_MASTER_KEY must be the base64 of {MASTER_KEY_BYTES} bytes; it holds {len(key)}.")
    return key
