"""Settings from the environment; the secret key file."""

from __future__ import annotations

import stat
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio.to_thread
import httpx
import pytest
from litestar import get

from tests.web.conftest import REPO_ROOT, running
from web.app import create_app
from web.settings import DEFAULT_SOCKETS_PER_ACCOUNT, DEFAULT_WORKER_THREADS, SECRET_KEY_FILENAME, Settings


def test_secret_key_is_generated_into_the_data_dir_with_mode_0600(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    settings = Settings.from_env({"POLKU_DATA_DIR": str(data_dir)})
    key_file = data_dir / SECRET_KEY_FILENAME
    assert key_file.is_file()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_text().strip() == settings.secret_key
    assert len(settings.secret_key) >= 64
    assert settings.data_dir == data_dir


def test_secret_key_is_kept_across_starts(tmp_path: Path) -> None:
    first = Settings.from_env({"POLKU_DATA_DIR": str(tmp_path)})
    second = Settings.from_env({"POLKU_DATA_DIR": str(tmp_path)})
    assert first.secret_key == second.secret_key


def test_a_loosely_readable_key_file_is_restricted(tmp_path: Path) -> None:
    key_file = tmp_path / SECRET_KEY_FILENAME
    key_file.write_text("k" * 64)
    key_file.chmod(0o644)
    assert Settings.from_env({"POLKU_DATA_DIR": str(tmp_path)}).secret_key == "k" * 64
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_secret_key_from_the_environment_writes_no_file(tmp_path: Path) -> None:
    settings = Settings.from_env({"POLKU_DATA_DIR": str(tmp_path), "POLKU_SECRET_KEY": "s" * 40})
    assert settings.secret_key == "s" * 40
    assert not (tmp_path / SECRET_KEY_FILENAME).exists()


def test_defaults() -> None:
    settings = Settings(secret_key="s" * 40, data_dir=Path("data"))
    assert settings.debug is False
    assert settings.secure_cookies is False
    assert settings.worker_threads == DEFAULT_WORKER_THREADS == 2


def test_flags_are_read_strictly(tmp_path: Path) -> None:
    env = {"POLKU_DATA_DIR": str(tmp_path), "POLKU_SECRET_KEY": "s" * 40}
    assert Settings.from_env({**env, "POLKU_DEBUG": "1", "POLKU_SECURE_COOKIES": "true"}).debug is True
    assert Settings.from_env({**env, "POLKU_SECURE_COOKIES": "yes"}).secure_cookies is True
    with pytest.raises(ValueError, match="POLKU_DEBUG"):
        Settings.from_env({**env, "POLKU_DEBUG": "maybe"})


def test_worker_threads_are_read_and_checked(tmp_path: Path) -> None:
    env = {"POLKU_DATA_DIR": str(tmp_path), "POLKU_SECRET_KEY": "s" * 40}
    assert Settings.from_env({**env, "POLKU_WORKER_THREADS": " 8 "}).worker_threads == 8
    assert Settings.from_env({**env, "POLKU_WORKER_THREADS": ""}).worker_threads == DEFAULT_WORKER_THREADS
    for wrong in ("0", "-1", "2.5", "many", "257"):
        with pytest.raises(ValueError, match="POLKU_WORKER_THREADS must be a whole number"):
            Settings.from_env({**env, "POLKU_WORKER_THREADS": wrong})


def test_sockets_per_account_are_read_and_checked(tmp_path: Path) -> None:
    env = {"POLKU_DATA_DIR": str(tmp_path), "POLKU_SECRET_KEY": "k" * 40}
    assert Settings.from_env(env).sockets_per_account == DEFAULT_SOCKETS_PER_ACCOUNT == 250
    assert Settings.from_env({**env, "POLKU_SOCKETS_PER_ACCOUNT": "1000"}).sockets_per_account == 1000
    for wrong in ("0", "-3", "many"):
        with pytest.raises(ValueError, match="POLKU_SOCKETS_PER_ACCOUNT must be a whole number"):
            Settings.from_env({**env, "POLKU_SOCKETS_PER_ACCOUNT": wrong})


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("way", ["anyio.to_thread", "a sync handler"])
def test_the_app_runs_at_most_worker_threads_blocking_calls_at_once(tmp_path: Path, threads: int, way: str) -> None:
    busy, most = 0, 0
    lock = threading.Lock()

    def block() -> str:
        nonlocal busy, most
        with lock:
            busy += 1
            most = max(most, busy)
        time.sleep(0.1)
        with lock:
            busy -= 1
        return "done"

    if way == "a sync handler":
        slow = get("/slow", sync_to_thread=True)(block)
    else:
        @get("/slow")
        async def slow() -> str:
            return await anyio.to_thread.run_sync(block)

    settings = Settings(secret_key="s" * 40, data_dir=tmp_path, worker_threads=threads)
    requests = 3 * threads + 2
    with running(create_app(settings, route_handlers=[slow])) as base_url, ThreadPoolExecutor(requests) as pool:
        answers = list(pool.map(lambda _: httpx.get(f"{base_url}/slow", timeout=30).text, range(requests)))
    assert answers == ["done"] * requests
    assert most == threads


def test_short_secret_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        Settings(secret_key="short", data_dir=Path("data"))


def test_secret_key_stays_out_of_repr_and_keys_differ_per_purpose() -> None:
    settings = Settings(secret_key="s" * 40, data_dir=Path("data"))
    assert "s" * 40 not in repr(settings)
    assert settings.derive_key("csrf") != settings.derive_key("session")
    assert settings.secret_key not in settings.derive_key("csrf")


@pytest.mark.skipif(not (REPO_ROOT / ".git").exists(), reason="not a git checkout")
def test_default_data_dir_and_key_file_are_kept_out_of_git() -> None:
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert not [path for path in tracked if path.endswith(SECRET_KEY_FILENAME)]
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", f"data/{SECRET_KEY_FILENAME}"], cwd=REPO_ROOT, check=False
    )
    assert ignored.returncode == 0, "data/secret.key would not be ignored by git"
