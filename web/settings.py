"""Settings of the web application, read from the environment.

| variable | field | default |
| --- | --- | --- |
| ``POLKU_DATA_DIR`` | ``data_dir`` | ``./data`` |
| ``POLKU_SECRET_KEY`` | ``secret_key`` | generated once, kept in ``<data_dir>/secret.key`` (mode 0600) |
| ``POLKU_DEBUG`` | ``debug`` | false |
| ``POLKU_SECURE_COOKIES`` | ``secure_cookies`` | false; set it to 1 whenever the service is reached over HTTPS |
| ``POLKU_WORKER_THREADS`` | ``worker_threads`` | 2: the threads that run blocking work (the store, renders) |
| ``POLKU_SOCKETS_PER_ACCOUNT`` | ``sockets_per_account`` | 250: live sockets one account may hold on an instance |

The secret key signs the CSRF tokens (and later the sessions): every purpose gets its own
key derived from it with :meth:`Settings.derive_key`, so the key itself is never used twice.
It is never written into the repository: the default data folder ``./data`` is git-ignored.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from domain.errors import ConfigurationError

__all__ = ("Settings", "load_or_create_secret_key", "SECRET_KEY_FILENAME")

SECRET_KEY_FILENAME = "secret.key"
DEFAULT_DATA_DIR = "./data"
DEFAULT_WORKER_THREADS = 2
"""Threads running a process's blocking work at once (anyio's default limiter): the store's
calls, the renders. Python runs one thread at a time, so more threads mostly wait for each
other; with anyio's default of 40 the server spent about a third more CPU an edit on handing
the interpreter lock back and forth (docs/performance.md). More help only when the calls
wait on a slow network (PostgreSQL far away)."""
MAX_WORKER_THREADS = 256
DEFAULT_SOCKETS_PER_ACCOUNT = 250
"""Live sockets one account may hold on an instance; more are closed (1008) on opening, so that
one account cannot hold the server's memory with sockets (~60 kB each). A network meeting may
show a plan on 200 screens signed in as a few of its members. (The benchmarks, whose 2,000
viewers are a dozen demo accounts, raise it.)"""

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Settings:
    """What the web application needs to know about its environment."""

    secret_key: str
    data_dir: Path
    debug: bool = False
    secure_cookies: bool = False
    worker_threads: int = DEFAULT_WORKER_THREADS
    sockets_per_account: int = DEFAULT_SOCKETS_PER_ACCOUNT

    def __post_init__(self) -> None:
        if len(self.secret_key) < 32:
            raise ConfigurationError("the secret key must be at least 32 characters long")
        if not 1 <= self.worker_threads <= MAX_WORKER_THREADS:
            raise ConfigurationError(f"POLKU_WORKER_THREADS must be a whole number from 1 to {MAX_WORKER_THREADS}; "
                             f"got {self.worker_threads}")
        if self.sockets_per_account < 1:
            raise ConfigurationError(f"POLKU_SOCKETS_PER_ACCOUNT must be a whole number of 1 or more; got {self.sockets_per_account}")

    def __repr__(self) -> str:  # keep the secret out of logs and tracebacks
        return (
            f"Settings(secret_key='***', data_dir={str(self.data_dir)!r}, "
            f"debug={self.debug!r}, secure_cookies={self.secure_cookies!r}, worker_threads={self.worker_threads!r})"
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``environ`` (default: ``os.environ``).

        Without ``POLKU_SECRET_KEY`` the key is read from, or first created in,
        ``<data_dir>/secret.key``.
        """
        env = os.environ if environ is None else environ
        data_dir = Path(env.get("POLKU_DATA_DIR") or DEFAULT_DATA_DIR)
        secret_key = env.get("POLKU_SECRET_KEY") or load_or_create_secret_key(data_dir)
        return cls(
            secret_key=secret_key,
            data_dir=data_dir,
            debug=_flag(env, "POLKU_DEBUG"),
            secure_cookies=_flag(env, "POLKU_SECURE_COOKIES"),
            worker_threads=_whole_number(env, "POLKU_WORKER_THREADS", DEFAULT_WORKER_THREADS),
            sockets_per_account=_whole_number(env, "POLKU_SOCKETS_PER_ACCOUNT", DEFAULT_SOCKETS_PER_ACCOUNT),
        )

    def derive_key(self, purpose: str) -> str:
        """A key for one purpose (``"csrf"``, ``"session"``...), as 64 hex digits."""
        return hmac.new(self.secret_key.encode(), f"polku/{purpose}".encode(), hashlib.sha256).hexdigest()


def load_or_create_secret_key(data_dir: Path) -> str:
    """Return the key kept in ``data_dir/secret.key``, creating it (mode 0600) if missing."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = data_dir / SECRET_KEY_FILENAME
    if path.exists():
        return _read_key(path)
    # Write a complete file under a private name, then link it into place: a second
    # process starting at the same moment either wins the link or reads the winner's key.
    draft = data_dir / f".{SECRET_KEY_FILENAME}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as key_file:
            key_file.write(secrets.token_hex(32) + "\n")
        try:
            os.link(draft, path)
            logger.info("created a new secret key in %s", path)
        except FileExistsError:
            pass
    finally:
        draft.unlink()
    return _read_key(path)


def _read_key(path: Path) -> str:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        logger.warning("%s was readable by others (mode %o); restricting it to 0600", path, mode)
        path.chmod(0o600)
    key = path.read_text(encoding="ascii").strip()
    if not key:
        raise ConfigurationError(f"{path} is empty: delete it to have a new key generated")
    return key


def _flag(env: Mapping[str, str], name: str) -> bool:
    value = env.get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigurationError(f"{name} must be one of 1/0, true/false, yes/no, on/off; got {value!r}")


def _whole_number(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit():
        raise ConfigurationError(f"{name} must be a whole number; got {value!r}")
    return int(value)
