"""The bare baselines of `benchmarks/live_timeline.py`: the same server, none of Polku.

Served exactly like Polku (uvicorn in a subprocess, uvloop + httptools + websockets, one
worker, access log on, no server header), started by the benchmark with::

    python -m uvicorn --factory live_bare:create_app --app-dir benchmarks ...

- ``POST /insert``: one durable SQLite insert per request (WAL, synchronous=FULL, one
  transaction, in a worker thread from an async handler, as Polku runs its store) of the
  request body into a table shaped like the stored events; answers 200 with a short text.
- ``/ws/{group}``: a websocket that joins a group and keeps reading (like a plan's page).
- ``POST /broadcast/{group}``: sends the fragment (a real rendered plan update, read from
  ``LIVE_BARE_FRAGMENT``, or for one group ``LIVE_BARE_GROUP_FRAGMENT=<group>:<path>``, with
  ``@@MARK@@`` replaced by the request body) to every socket
  of the group, each through its own outbox queue and writer task (the live hub's shape);
  answers once the message is queued for all of them.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from pathlib import Path

import anyio.to_thread
from litestar import Litestar, Request, WebSocket, post, websocket
from litestar.params import FromPath

_local = threading.local()
_groups: dict[int, set[asyncio.Queue[str | None]]] = {}


def _connection() -> sqlite3.Connection:
    connection = getattr(_local, "connection", None)
    if connection is None:
        connection = sqlite3.connect(os.environ["LIVE_BARE_DB"], isolation_level=None, timeout=30)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        _local.connection = connection
    return connection


def _create_table() -> None:
    _connection().execute(
        "CREATE TABLE IF NOT EXISTS stored_events (notification_id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " originator_id TEXT NOT NULL, originator_version INTEGER NOT NULL, topic TEXT NOT NULL,"
        " state BLOB NOT NULL)"
    )


def _insert(body: bytes) -> int:
    cursor = _connection().execute(
        "INSERT INTO stored_events (originator_id, originator_version, topic, state) VALUES (?, ?, ?, ?)",
        ("bare", 1, "bare:Inserted", body),
    )
    return int(cursor.lastrowid or 0)


@post("/insert", status_code=200)
async def insert(request: Request) -> str:
    body = await request.body()
    row = await anyio.to_thread.run_sync(_insert, body)
    return f"inserted {row}"


@websocket("/ws/{group:int}")
async def join(socket: WebSocket, group: FromPath[int]) -> None:
    await socket.accept()
    outbox: asyncio.Queue[str | None] = asyncio.Queue(maxsize=64)
    _groups.setdefault(group, set()).add(outbox)

    async def write() -> None:
        while (text := await outbox.get()) is not None:
            await socket.send_text(text)

    async def read() -> None:
        while (await socket.receive())["type"] != "websocket.disconnect":
            pass

    tasks = {asyncio.create_task(write()), asyncio.create_task(read())}
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        _groups.get(group, set()).discard(outbox)


@post("/broadcast/{group:int}", status_code=200)
async def broadcast(request: Request, group: FromPath[int]) -> str:
    marker = (await request.body()).decode()
    text = _FRAGMENTS.get(group, _FRAGMENTS[-1]).replace("@@MARK@@", marker)
    queued = 0
    for outbox in list(_groups.get(group, ())):
        try:
            outbox.put_nowait(text)
            queued += 1
        except asyncio.QueueFull:
            pass
    return f"queued {queued}"


_FRAGMENTS: dict[int, str] = {}


def create_app() -> Litestar:
    _FRAGMENTS[-1] = Path(os.environ["LIVE_BARE_FRAGMENT"]).read_text()
    group, _, path = os.environ.get("LIVE_BARE_GROUP_FRAGMENT", "").partition(":")
    if path:
        _FRAGMENTS[int(group)] = Path(path).read_text()
    _create_table()
    return Litestar(route_handlers=[insert, join, broadcast], openapi_config=None)
