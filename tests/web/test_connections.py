"""How many PostgreSQL connections one idle `polku serve` holds (docs/deployment.md, "Connections to PostgreSQL").

The server is started as production starts it (``uvicorn --factory web.server:app_factory``,
configured by POLKU_* only) on a fresh schema; once it is ready and has settled, its
connections are the server's backends whose client port is one of that process's TCP
sockets. The shared server's ``max_connections`` (100 by default) ran out when every
instance kept 26 connections idle; a change that keeps more open again fails here.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg import sql

from tests.projections.conftest import _pg_connect, postgres_store_env
from tests.web.conftest import TEST_SECRET_KEY
from tests.web.test_two_instances import REPO_ROOT, start_instance, stop_instance, wait_until_ready, wait_until_serving

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not Path("/proc/self/net/tcp").exists(), reason="counts the server's sockets through /proc"),
]

IDLE_BY_ROLE = {
    "polku events": 3,
    "polku views": 2,
    "polku keys": 2,
    "polku listen": 1,
    "polku leader": 1,
    "polku accounts": 1,
}
"""What one idle `polku serve` may hold, by the name its connections show (docs/deployment.md):
the event store's pool 1 and the follower's reading of the event store 2 (its LISTEN and a
reader), the read model's pool 1-2, the two plan-key pools 1 each, the read model's listener
and the leader's lock, the accounts' pool 1 (its size; it opened one more before it waited
for its first). Measured 10; with the library's pool size of 5 it was 26."""
IDLE_MOST = sum(IDLE_BY_ROLE.values())


@pytest.fixture
def environ(postgres_env: dict[str, str], pg_schema: str) -> Iterator[dict[str, str]]:
    outside = {name: value for name, value in os.environ.items() if not name.startswith(("POLKU_", "PG"))}
    yield {
        **outside,
        **postgres_store_env(postgres_env, pg_schema),
        "POLKU_SECRET_KEY": TEST_SECRET_KEY,
        "PYTHONPATH": str(REPO_ROOT),
    }
    with _pg_connect(postgres_env) as conn:
        conn.execute("SET lock_timeout = '30s'")
        for suffix in ("_views", "_keys", "_accounts", "_accesslog"):
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(pg_schema + suffix)))


def local_ports_towards(pid: int, server_port: int) -> set[int]:
    """The local ports of the process's established TCP connections to ``server_port``."""
    sockets = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            sockets.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("tcp", "tcp6"):
        lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        for fields in (line.split() for line in lines):
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            if inode in sockets and state == "01" and int(remote.rsplit(":", 1)[1], 16) == server_port:
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


def test_an_idle_instance_holds_only_a_few_connections(
    environ: dict[str, str], postgres_env: dict[str, str], tmp_path: Path
) -> None:
    instance = start_instance("A", environ, tmp_path / "A")
    try:
        wait_until_serving(instance)
        wait_until_ready(instance)
        time.sleep(2)  # whatever start-up opened and gave back has settled
        ports = local_ports_towards(instance.process.pid, int(postgres_env["POLKU_PG_PORT"]))
        with _pg_connect(postgres_env) as conn:
            backends = conn.execute(
                "SELECT application_name, left(query, 60) FROM pg_stat_activity WHERE client_port = ANY(%s)"
                " AND datname = current_database()",
                (list(ports),),
            ).fetchall()
    finally:
        stop_instance(instance)
    assert len(backends) == len(ports), "every socket of the process towards the server is a backend of it"
    assert len(backends) <= IDLE_MOST, f"{len(backends)} connections idle: {sorted(backends)}"
    roles = Counter(name for name, _ in backends)
    assert all(roles[role] <= most for role, most in IDLE_BY_ROLE.items()), roles
    assert set(roles) <= set(IDLE_BY_ROLE), f"every connection names its role: {roles}"
