"""Per-plan encryption keys, kept apart from the event store.

Each plan's events and snapshots are encrypted with the plan's own key
(`domain.crypto`). The keys live in their own store — a separate SQLite file
or a separate PostgreSQL schema — wrapped with a master key that comes from
the environment or a key file outside the repository. Erasing a plan's key
at the end of its retention period leaves that plan's events unreadable in
the event store and in every backup of it, while the rest stays intact; an
erased key leaves a tombstone so the plan is known as erased, not missing.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections import OrderedDict
from datetime import UTC, datetime

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from domain.errors import ConfigurationError, PlanErased

MASTER_KEY_BYTES = 32
"""A master key is an AES-256 key."""

KEY_CACHE_SIZE = 10_000
KEY_CACHE_SECONDS = 60.0
"""How long an unwrapped key is trusted before it is looked up again.

A key erased through another instance stops being usable here at the latest
after this long.
"""


class Keyring(ABC):
    """Creates, looks up and erases plan keys; caches unwrapped keys briefly."""

    def __init__(self, master_key: bytes):
        if len(master_key) != MASTER_KEY_BYTES:
            raise ConfigurationError("The master key must be 32 bytes (256 bits).")
        self._master = AESGCM(master_key)
        self._cache: OrderedDict[str, tuple[AESGCM, float]] = OrderedDict()
        self._erased: set[str] = set()
        """Plans known to be erased: an erasure is for ever, so this is never stale."""
        self._lock = threading.Lock()

    def create(self, plan_id: uuid.UUID) -> None:
        """Make a key for a new plan; a key that exists already is kept.

        A key made here is cached at once: the plan's first event is encrypted with it
        right after, and looking it up again was one more query (on PostgreSQL one more
        round trip) for every plan opened.
        """
        key = AESGCM.generate_key(bit_length=256)
        nonce = os.urandom(12)
        wrapped = nonce + self._master.encrypt(nonce, key, plan_id.bytes)
        if self._insert(str(plan_id), wrapped, datetime.now(UTC).isoformat()):
            self._remember(str(plan_id), AESGCM(key), time.monotonic())

    def cipher_for(self, plan_id: uuid.UUID) -> AESGCM | None:
        """The plan's cipher, or None if the plan has no key (not a plan).

        Raises `PlanErased` for a plan whose key was erased.
        """
        name = str(plan_id)
        now = time.monotonic()
        with self._lock:
            if name in self._erased:
                raise PlanErased(plan_id)
            cached = self._cache.get(name)
            if cached and now - cached[1] < KEY_CACHE_SECONDS:
                self._cache.move_to_end(name)
                return cached[0]
        found, wrapped = self._select(name)
        if not found:
            return None
        if wrapped is None:
            with self._lock:
                self._erased.add(name)
            raise PlanErased(plan_id)
        cipher = AESGCM(self._master.decrypt(wrapped[:12], wrapped[12:], plan_id.bytes))
        self._remember(name, cipher, now)
        return cipher

    def _remember(self, name: str, cipher: AESGCM, now: float) -> None:
        with self._lock:
            self._cache[name] = (cipher, now)
            if len(self._cache) > KEY_CACHE_SIZE:
                self._cache.popitem(last=False)

    def is_erased(self, plan_id: uuid.UUID) -> bool:
        """Whether the plan's key was erased, answered from the cache like `cipher_for`.

        Every command asks this first; a query each time was one more round trip per
        command. A plan erased through this keyring is known at once; one erased
        through another instance, within `KEY_CACHE_SECONDS` (as its events stop
        decrypting here).
        """
        try:
            self.cipher_for(plan_id)
        except PlanErased:
            return True
        return False

    def erase(self, plan_id: uuid.UUID) -> None:
        """Forget the key here at once, then in the store; if the store's write fails, the
        key is still there, and this process must not go on treating the plan as erased."""
        name = str(plan_id)
        with self._lock:
            self._cache.pop(name, None)
            was_erased = name in self._erased
            self._erased.add(name)
        try:
            self._tombstone(name, datetime.now(UTC).isoformat())
        except BaseException:
            if not was_erased:
                with self._lock:
                    self._erased.discard(name)
            raise

    @abstractmethod
    def _insert(self, plan_id: str, wrapped: bytes, created_at: str) -> bool:
        """Store the wrapped key unless the plan has a row already; whether it stored it."""

    @abstractmethod
    def _select(self, plan_id: str) -> tuple[bool, bytes | None]:
        """(whether a row exists, the wrapped key or None once erased)."""

    @abstractmethod
    def _tombstone(self, plan_id: str, erased_at: str) -> None: ...

    def close(self) -> None:
        """Release the store's connections."""


class SQLiteKeyring(Keyring):
    """Keys in their own SQLite file, beside (not inside) the event store."""

    def __init__(self, path: str, master_key: bytes):
        super().__init__(master_key)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db_lock = threading.Lock()
        with self._db_lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA secure_delete=ON")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS plan_keys ("
                " plan_id TEXT PRIMARY KEY, wrapped_key BLOB, created_at TEXT NOT NULL, erased_at TEXT)"
            )

    def _insert(self, plan_id: str, wrapped: bytes, created_at: str) -> bool:
        with self._db_lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO plan_keys (plan_id, wrapped_key, created_at) VALUES (?, ?, ?)",
                (plan_id, wrapped, created_at),
            )
        return cursor.rowcount == 1

    def _select(self, plan_id: str) -> tuple[bool, bytes | None]:
        with self._db_lock:
            row = self._db.execute("SELECT wrapped_key FROM plan_keys WHERE plan_id = ?", (plan_id,)).fetchone()
        return (row is not None, row[0] if row else None)

    def _tombstone(self, plan_id: str, erased_at: str) -> None:
        """Overwrite the key on disk: secure_delete zeroes the freed page content, and the
        checkpoint moves the change out of the write-ahead log and truncates it."""
        with self._db_lock:
            self._db.execute(
                "UPDATE plan_keys SET wrapped_key = NULL, erased_at = ? WHERE plan_id = ?",
                (erased_at, plan_id),
            )
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        with self._db_lock:
            self._db.close()


class PostgresKeyring(Keyring):
    """Keys in their own PostgreSQL schema, so they can be backed up apart.

    Its pool keeps ``pool_size`` connections open and opens at most ``pool_max``
    (``POLKU_PG_POOL_SIZE``/``POLKU_PG_POOL_MAX``); keys are cached, so it is seldom
    asked for more than one.
    """

    def __init__(
        self, conninfo: str, schema: str, master_key: bytes, lock_timeout_s: int, *, pool_size: int, pool_max: int
    ):
        from psycopg_pool import ConnectionPool

        from domain.postgres import KEEPALIVES, check_if_server_spoke

        super().__init__(master_key)
        self._table = f'"{schema}".plan_keys'
        self._pool = ConnectionPool(
            conninfo,
            min_size=pool_size,
            max_size=pool_max,
            kwargs={
                "autocommit": True,
                "options": f"-c lock_timeout={lock_timeout_s * 1000}",
                "fallback_application_name": "polku keys",
                **KEEPALIVES,
            },
            open=False,
            # Replace connections a database restart killed; a healthy idle one costs no ping.
            check=check_if_server_spoke,
        )
        # Wait for the first connection: asked for while it is still being made, the pool
        # would open a second one (and keep it for 10 idle minutes).
        self._pool.open(wait=True)
        with self._pool.connection() as conn:
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self._table} ("
                " plan_id TEXT PRIMARY KEY, wrapped_key BYTEA, created_at TEXT NOT NULL, erased_at TEXT)"
            )

    def _insert(self, plan_id: str, wrapped: bytes, created_at: str) -> bool:
        with self._pool.connection() as conn:
            cursor = conn.execute(
                f"INSERT INTO {self._table} (plan_id, wrapped_key, created_at) VALUES (%s, %s, %s)"
                " ON CONFLICT (plan_id) DO NOTHING",
                (plan_id, wrapped, created_at),
            )
        return cursor.rowcount == 1

    def _select(self, plan_id: str) -> tuple[bool, bytes | None]:
        with self._pool.connection() as conn:
            row = conn.execute(f"SELECT wrapped_key FROM {self._table} WHERE plan_id = %s", (plan_id,)).fetchone()
        return (row is not None, bytes(row[0]) if row and row[0] is not None else None)

    def _tombstone(self, plan_id: str, erased_at: str) -> None:
        """Erasures are rare (end of retention), so the small key table is rewritten
        at once to leave no dead copy of the key in its data files."""
        with self._pool.connection() as conn:
            conn.execute(
                f"UPDATE {self._table} SET wrapped_key = NULL, erased_at = %s WHERE plan_id = %s",
                (erased_at, plan_id),
            )
            conn.execute(f"VACUUM FULL {self._table}")

    def close(self) -> None:
        self._pool.close()
