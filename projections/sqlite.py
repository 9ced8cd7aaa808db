"""SQLite persistence of the read model: ``domain.sqlite`` with ``synchronous=NORMAL``.

Select it with ``PERSISTENCE_MODULE=projections.sqlite`` (``projections.plans.open_view_store``
does, for the read model's own file). Everything is ``domain.sqlite``'s except that each
pooled connection runs ``PRAGMA synchronous=NORMAL`` instead of ``FULL``.

Why the read model may, and the event store may not: in WAL mode, NORMAL leaves out the
sync of the log at each commit (SQLite syncs it at checkpoints). A commit is still atomic,
and the file is never corrupted; what a power failure or an operating system crash can
take is the last commits before it, never a part of one. The event store must keep every
acknowledged save, so it stays FULL. The read model is derived from it: every write of its
rows commits in one transaction with its tracking position (``projections.views``), so
losing its last commits only takes it back to an earlier position, consistent with its
rows, and the follower applies the events after that position again from the durable
event store, each exactly once. ``plan_seen`` is not derived from events: losing its last
commits means a plan shows as changed to someone who had just seen it. A crash of the
process alone loses nothing (the log is in the operating system's care).

Each commit of the read model cost a sync of the log: with NORMAL the projection's
commit and ``mark_seen`` take a fraction of the time and CPU (docs/architecture.md,
"Storage"; the figures in docs/performance.md).
"""

from __future__ import annotations

from domain import sqlite as _durable


class ReadModelConnectionPool(_durable.DurableSQLiteConnectionPool):
    """``domain.sqlite``'s pool, whose file connections run ``PRAGMA synchronous=NORMAL``."""

    synchronous = "NORMAL"


class ReadModelDatastore(_durable.DurableSQLiteDatastore):
    pool_class = ReadModelConnectionPool


class ReadModelSQLiteFactory(_durable.DurableSQLiteFactory):
    """``domain.sqlite``'s factory, with the read model's pool in its datastore."""

    datastore_class = ReadModelDatastore


Factory = ReadModelSQLiteFactory
