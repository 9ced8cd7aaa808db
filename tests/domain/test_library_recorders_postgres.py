"""The eventsourcing library's own recorder test cases, on PostgreSQL as Polku configures it.

The recorders are made by the library's factory from exactly the settings Polku's event
store uses (``StoreSettings.event_store_env``: the module, the schema, the lock timeout,
the pool size), in a fresh schema per test, so the store's guarantees (ordered
notification ids that never interleave, tracking that refuses going back, subscriptions
woken by LISTEN/NOTIFY, a process recorder that writes tracking and events atomically) are
checked as configured, not assumed. The application recorder is Polku's
(`domain.postgres.OneTripPostgresApplicationRecorder`: each save one call of a stored
function), so the library's cases, the concurrent and ordering ones included, check that
it keeps the library's guarantees; the aggregate recorder (the snapshots') is Polku's
binary insert (`domain.postgres.BinaryPostgresAggregateRecorder`), checked by the library's
cases too; the process recorder stays the library's. The read model's own store,
`PostgresPlanViews`, is checked as a tracking recorder too.

The SQLite counterparts run in test_sqlite_store.py.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from typing import Any

import pytest
from eventsourcing.persistence import InfrastructureFactory, TrackingRecorder
from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresFactory,
    PostgresProcessRecorder,
    PostgresTrackingRecorder,
)
from eventsourcing.tests import persistence as lib_tests
from eventsourcing.utils import Environment
from psycopg import sql

from domain.postgres import BinaryPostgresAggregateRecorder, OneTripPostgresApplicationRecorder, OneTripPostgresFactory
from domain.storage import StoreSettings
from projections.plans import open_view_store
from projections.views import PostgresPlanViews
from tests.conftest import _connect, _test_pg_settings

pytestmark = pytest.mark.postgres

# Configuration keys the library reads; one left in the environment (bare or prefixed)
# would beat the values these tests pass.
_KEYS = (
    "PERSISTENCE_MODULE",
    "POSTGRES_DBNAME",
    "POSTGRES_HOST",
    "POSTGRES_PORT",
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "POSTGRES_SCHEMA",
    "POSTGRES_LOCK_TIMEOUT",
    "POSTGRES_POOL_SIZE",
    "POSTGRES_MAX_OVERFLOW",
    "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT",
    "CREATE_TABLE",
    "APPLICATION_RECORDER_TOPIC",
    "TRACKING_RECORDER_TOPIC",
    "PROCESS_RECORDER_TOPIC",
)


@pytest.fixture(autouse=True)
def _hermetic_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.endswith(_KEYS):
            monkeypatch.delenv(name)


class PolkuPostgres:
    """Mixin for the library's unittest cases: Polku's settings on a fresh schema per test."""

    settings: StoreSettings

    @pytest.fixture(autouse=True)
    def _fresh_schema(self, postgres_env: dict[str, str], pg_schema: str) -> Iterator[None]:
        self.settings = StoreSettings.from_environ(
            {**postgres_env, "POLKU_PG_SCHEMA": pg_schema, "POLKU_MASTER_KEY": base64.b64encode(os.urandom(32)).decode()}
        )
        self._factories: list[InfrastructureFactory[Any]] = []
        self._views: list[PostgresPlanViews] = []
        yield
        for factory in self._factories:
            factory.close()
        for views in self._views:
            views.datastore.close()
        with _connect(_test_pg_settings()) as conn:
            conn.execute("SET lock_timeout = '30s'")
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(f"{pg_schema}_views")))

    def make_factory(self) -> OneTripPostgresFactory:
        env = self.settings.event_store_env
        assert env["PERSISTENCE_MODULE"] == "domain.postgres"
        assert env["POSTGRES_SCHEMA"] == self.settings.pg_schema
        assert int(env["POSTGRES_LOCK_TIMEOUT"]) >= 1  # never 0, which waits for ever
        factory = InfrastructureFactory.construct(Environment("Polku", env))
        assert type(factory) is OneTripPostgresFactory
        assert factory.datastore.schema == self.settings.pg_schema
        assert factory.datastore.lock_timeout == int(env["POSTGRES_LOCK_TIMEOUT"])
        self._factories.append(factory)
        return factory


class TestAggregateRecorder(PolkuPostgres, lib_tests.AggregateRecorderTestCase):
    def create_recorder(self) -> BinaryPostgresAggregateRecorder:
        recorder = self.make_factory().aggregate_recorder()
        assert type(recorder) is BinaryPostgresAggregateRecorder
        return recorder


class TestApplicationRecorder(PolkuPostgres, lib_tests.ApplicationRecorderTestCase):
    def create_recorder(self) -> OneTripPostgresApplicationRecorder:
        recorder = self.make_factory().application_recorder()
        assert type(recorder) is OneTripPostgresApplicationRecorder
        return recorder

    def test_insert_subscribe(self) -> None:
        self.optional_test_insert_subscribe()


class TestNotificationIdsDoNotInterleave(PolkuPostgres, lib_tests.NonInterleavingNotificationIDsBaseCase):
    def create_recorder(self) -> OneTripPostgresApplicationRecorder:
        recorder = self.make_factory().application_recorder()
        assert type(recorder) is OneTripPostgresApplicationRecorder
        return recorder


class TestProcessRecorderAsApplicationRecorder(PolkuPostgres, lib_tests.ApplicationRecorderTestCase):
    """A process recorder's saves must be ordered and wake subscribers like an application's."""

    def create_recorder(self) -> PostgresProcessRecorder:
        recorder = self.make_factory().process_recorder()
        assert type(recorder) is PostgresProcessRecorder
        return recorder

    def test_insert_subscribe(self) -> None:
        self.optional_test_insert_subscribe()


class TestTrackingRecorder(PolkuPostgres, lib_tests.TrackingRecorderTestCase):
    def create_recorder(self) -> PostgresTrackingRecorder:
        recorder = self.make_factory().tracking_recorder()
        assert type(recorder) is PostgresTrackingRecorder
        return recorder


class TestProcessRecorder(PolkuPostgres, lib_tests.ProcessRecorderTestCase):
    def create_recorder(self) -> PostgresProcessRecorder:
        recorder = self.make_factory().process_recorder()
        assert type(recorder) is PostgresProcessRecorder
        return recorder


class TestPlanViewsAsTrackingRecorder(PolkuPostgres, lib_tests.TrackingRecorderTestCase):
    """The read model's store (its own schema, NOTIFY on each write) keeps the tracking contract."""

    def create_recorder(self) -> TrackingRecorder:
        store = open_view_store(self.settings)
        assert isinstance(store, PostgresPlanViews)
        assert store.datastore.schema == f"{self.settings.pg_schema}_views"
        self._views.append(store)
        return store


class PlanCountView(PostgresTrackingRecorder):
    """A tracking recorder subclass, selected by TRACKING_RECORDER_TOPIC in the factory test."""


class TestFactory(PolkuPostgres, lib_tests.InfrastructureFactoryTestCase[PostgresFactory]):
    """The factory that `PERSISTENCE_MODULE=domain.postgres` selects, with Polku's settings."""

    def setUp(self) -> None:
        self.env = Environment("TestCase", self.settings.event_store_env)
        super().setUp()
        self._factories.append(self.factory)

    def expected_factory_class(self) -> type[PostgresFactory]:
        return OneTripPostgresFactory

    def expected_aggregate_recorder_class(self) -> type[PostgresAggregateRecorder]:
        return BinaryPostgresAggregateRecorder

    def expected_application_recorder_class(self) -> type[PostgresApplicationRecorder]:
        return OneTripPostgresApplicationRecorder

    def expected_tracking_recorder_class(self) -> type[PostgresTrackingRecorder]:
        return PostgresTrackingRecorder

    def tracking_recorder_subclass(self) -> type[PostgresTrackingRecorder]:
        return PlanCountView

    def expected_process_recorder_class(self) -> type[PostgresProcessRecorder]:
        return PostgresProcessRecorder
