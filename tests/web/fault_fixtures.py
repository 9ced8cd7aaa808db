"""A private PostgreSQL cluster for the fault test, which restarts it under load.

The machine's shared PostgreSQL must never be restarted by a test, so the fault test runs a
cluster of its own: Debian's binaries (``/usr/lib/postgresql/<major>/bin``), run as the
``postgres`` OS user (the test runs as root), with its data folder and socket in a temporary
folder, on a free loopback port. It is stopped and removed after the test.

When it cannot be made (not root, no binaries, no ``postgres`` user, initdb or start failing)
the test is skipped with the reason, except in CI (CI=true), where it fails.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

PG_BIN_CANDIDATES = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/17/bin")
DATABASE = "polku_test"


@dataclass
class PrivatePostgres:
    bin_dir: Path
    folder: Path
    port: int

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    @property
    def log(self) -> Path:
        return self.folder / "postgres.log"

    def env(self) -> dict[str, str]:
        """The POLKU_* variables of a store in this cluster (without a schema)."""
        return {
            "POLKU_STORE": "postgres",
            "POLKU_PG_HOST": "127.0.0.1",
            "POLKU_PG_PORT": str(self.port),
            "POLKU_PG_DB": DATABASE,
            "POLKU_PG_USER": "postgres",
            "POLKU_PG_PASSWORD": "",
        }

    def pg_ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return _as_postgres([str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), *args], timeout=timeout)

    def restart(self) -> float:
        """``pg_ctl restart -m fast`` (waits until it accepts connections); returns the seconds taken."""
        started = time.monotonic()
        done = self.pg_ctl("-m", "fast", "-l", str(self.log), "-w", "-t", "30", "restart")
        assert done.returncode == 0, done.stdout + done.stderr + self.log_tail()
        return time.monotonic() - started

    def log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _as_postgres(command: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    # Output to a file, never a pipe: a postmaster started by pg_ctl would keep a pipe open.
    with tempfile.TemporaryFile() as output:
        done = subprocess.run(["runuser", "-u", "postgres", "--", *command], stdin=subprocess.DEVNULL,
                              stdout=output, stderr=subprocess.STDOUT, timeout=timeout, cwd="/")
        output.seek(0)
        text = output.read().decode(errors="replace")
    return subprocess.CompletedProcess(done.args, done.returncode, text, "")


def _unavailable(reason: str) -> None:
    message = f"cannot run a private PostgreSQL cluster for the fault test: {reason}"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _why_not() -> tuple[str | None, Path | None]:
    bin_dir = next((Path(p) for p in PG_BIN_CANDIDATES if (Path(p) / "pg_ctl").exists()), None)
    if bin_dir is None:
        return f"no PostgreSQL server binaries in {', '.join(PG_BIN_CANDIDATES)}", None
    if os.geteuid() != 0:
        return "the test must run as root to run PostgreSQL as the postgres user", bin_dir
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "there is no postgres OS user", bin_dir
    if shutil.which("runuser") is None:
        return "runuser is missing", bin_dir
    return None, bin_dir


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A fresh cluster with an empty ``polku_test`` database; stopped and removed after."""
    reason, bin_dir = _why_not()
    if reason is not None or bin_dir is None:
        _unavailable(reason or "unknown")
        raise AssertionError("unreachable")
    folder = Path(tempfile.mkdtemp(prefix="polku-faults-pg-"))
    account = pwd.getpwnam("postgres")
    os.chown(folder, account.pw_uid, account.pw_gid)
    folder.chmod(0o700)
    cluster = PrivatePostgres(bin_dir=bin_dir, folder=folder, port=free_port())
    started = False
    try:
        made = _as_postgres([str(bin_dir / "initdb"), "-D", str(cluster.data_dir), "--auth=trust", "-U", "postgres",
                             "--encoding=UTF8", "--locale=C.UTF-8"], timeout=120)
        if made.returncode != 0:
            _unavailable(f"initdb failed: {made.stdout.strip()[-500:]}")
        options = f"-p {cluster.port} -k {folder} -c listen_addresses=127.0.0.1 -c max_connections=100"
        up = cluster.pg_ctl("-o", options, "-l", str(cluster.log), "-w", "-t", "30", "start")
        if up.returncode != 0:
            _unavailable(f"pg_ctl start failed: {up.stdout.strip()[-500:]} {cluster.log_tail()}")
        started = True
        with psycopg.connect(host="127.0.0.1", port=cluster.port, user="postgres", dbname="postgres",
                             autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"CREATE DATABASE {DATABASE}")
        yield cluster
    finally:
        if started:
            cluster.pg_ctl("-m", "immediate", "-w", "-t", "30", "stop")
        shutil.rmtree(folder, ignore_errors=True)
