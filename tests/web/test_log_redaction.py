"""The server's log never shows a first sign-in link's token, nor a ``token=``-like query value.

The server runs as a process of its own, started the two ways the project starts it:
``polku serve`` and ``uvicorn --factory web.server:app_factory`` (production), each with
uvicorn's own logging set-up. The link comes from ``polku admin person add``, so the
request is a real, valid first sign-in link.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.web.conftest import TEST_SECRET_KEY
from web.log_redaction import REDACTED, redact

REPO_ROOT = Path(__file__).resolve().parents[2]
START_WITHIN = 60.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _environ(data_dir: Path) -> dict[str, str]:
    outside = {name: value for name, value in os.environ.items() if not name.startswith("POLKU_")}
    return {**outside, "POLKU_DATA_DIR": str(data_dir), "POLKU_SECRET_KEY": TEST_SECRET_KEY, "PYTHONUNBUFFERED": "1"}


def _polku(environ: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "web.cli", *args], cwd=REPO_ROOT, env=environ, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _first_signin_link(environ: dict[str, str]) -> str:
    _polku(environ, "admin", "organisation", "add", "org-loki", "Lokitesti", "--type", "other")
    printed = _polku(
        environ, "admin", "person", "add", "lotta.loki", "--name", "Lotta Loki", "--organisation", "org-loki",
        "--base-url", "http://polku.invalid",
    )
    match = re.search(r"http://polku\.invalid(/signin/link/[A-Za-z0-9_-]+)", printed)
    assert match, printed
    return match.group(1)


def _serve_and_log(command: list[str], environ: dict[str, str], log: Path, paths: list[str]) -> list[int]:
    """Start the server, GET each path, stop it with SIGTERM; the statuses (the log is in ``log``)."""
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=environ, stdout=output, stderr=subprocess.STDOUT)
    try:
        base_url = _wait_until_serving(process, command, log)
        return [httpx.get(f"{base_url}{path}", timeout=10).status_code for path in paths]
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _wait_until_serving(process: subprocess.Popen[bytes], command: list[str], log: Path) -> str:
    base_url = f"http://127.0.0.1:{command[command.index('--port') + 1]}"
    deadline = time.monotonic() + START_WITHIN
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text(errors="replace")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                return base_url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"the server did not start within {START_WITHIN} s:\n{log.read_text(errors='replace')}")


@pytest.mark.parametrize(
    "start",
    [
        pytest.param(["-m", "web.cli", "serve", "--host", "127.0.0.1"], id="polku serve"),
        pytest.param(
            ["-m", "uvicorn", "--factory", "web.server:app_factory", "--host", "127.0.0.1"], id="uvicorn app_factory"
        ),
    ],
)
def test_the_access_log_shows_the_signin_link_path_with_its_token_replaced(tmp_path: Path, start: list[str]) -> None:
    environ = _environ(tmp_path / "data")
    link = _first_signin_link(environ)
    token = link.rsplit("/", 1)[1]
    log = tmp_path / "server.log"
    command = [sys.executable, *start, "--port", str(_free_port())]

    statuses = _serve_and_log(command, environ, log, [link, f"/healthz?access_token={token}&lang=fi"])

    assert statuses == [200, 200]  # the link is valid: its form page was served
    text = log.read_text(errors="replace")
    assert f'"GET /signin/link/{REDACTED} HTTP/1.1" 200' in text
    assert f'"GET /healthz?access_token={REDACTED}&lang=fi HTTP/1.1" 200' in text
    assert token not in text


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("/signin/link/abc-DEF_123", f"/signin/link/{REDACTED}"),
        ("/signin/link/abc?next=/x", f"/signin/link/{REDACTED}?next=/x"),
        ("/x?token=t&api_key=k&Password=p;code=c", f"/x?token={REDACTED}&api_key={REDACTED}&Password={REDACTED};code={REDACTED}"),
        ("/caseload?q=token%20x&monkey=1&design=2", "/caseload?q=token%20x&monkey=1&design=2"),
        ("/plans/3f2a/history?at=2026-12-03", "/plans/3f2a/history?at=2026-12-03"),
    ],
)
def test_only_secret_looking_values_are_replaced(line: str, expected: str) -> None:
    assert redact(line) == expected
