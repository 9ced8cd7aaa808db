"""Viewer processes of `benchmarks/live_timeline.py`: many browser tabs, each a websocket.

Run by the benchmark as ``python benchmarks/live_viewers.py SPEC.json`` (one process per
slice of the viewers, so that the client side is not what limits the run). The spec
names the server and, per viewer, its path, cookie and language; a viewer may name a
server of its own (``ws_base`` and ``origin``: one of several instances, as in
``benchmarks/instances.py``). Each viewer connects as a browser would (``Origin``,
``Cookie``, ``Accept-Language``, permessage-deflate offered, as browsers do) and keeps
reading. In every message it looks for the benchmark's markers ``mk<plan>.<item>.<seq>.``
and notes, per (plan, item), the moment (time.monotonic, one clock for every process on
the machine) it first saw a higher seq: the edit with that seq, and every earlier edit of
the item, has then reached this viewer. A viewer closed with a code that htmx 2 retries
(1006, 1011, 1012, 1013) reconnects as htmx would (full-jitter backoff, ``?version=`` the
version it last received), and the server's catch-up counts.

Control, one line at a time on stdin; answers on stdout:

    (at start)        ->  "connected <ok> <failed>" once every viewer has tried once
    dump <path>       ->  writes the records since the last dump, counters, loop lag; "dumped"
    quit              ->  closes every socket and exits
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

MARKER = re.compile(r"mk(\d+)\.(\d+)\.(\d+)\.")
SHOWN_VERSION = re.compile(r'id="live-version" data-version="(\d+)"')
VERSION_PARAM = re.compile(r"version=\d+")
RECONNECT_CODES = {1006, 1011, 1012, 1013}
CONNECT_AT_ONCE = 32


class Viewers:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.records: list[tuple[int, int, int, int, float]] = []
        self.best: dict[tuple[int, int, int], int] = {}
        self.messages = 0
        self.bytes = 0
        self.connected = 0
        self.failed: dict[str, int] = {}
        self.closed: dict[str, int] = {}
        self.lag_max = 0.0
        self.lags: list[float] = []
        self.stop = asyncio.Event()
        self.ready = asyncio.Event()
        self.tried = 0
        self.reconnected = 0
        self.versions: dict[int, int] = {}

    async def viewer(self, viewer: dict[str, Any], gate: asyncio.Semaphore) -> None:
        """One tab: connect, read; on a close that htmx retries (1006/1011/1012/1013), reconnect like
        htmx 2's ws extension (full-jitter backoff) with the version it shows, as the page would."""
        vid = viewer["id"]
        path = viewer["path"]
        headers = [("Origin", viewer.get("origin", self.spec["origin"])), ("Accept-Language", viewer["lang"])]
        ws_base = viewer.get("ws_base", self.spec["ws_base"])
        if viewer.get("cookie"):
            headers.append(("Cookie", viewer["cookie"]))
        first, retries = True, 0
        pace = self.spec.get("connect_per_s")
        if pace:  # people arrive over a while, not all in the same second
            await asyncio.sleep(viewer["order"] / pace)
        try:
            while not self.stop.is_set():
                shown = self.versions.get(vid)
                if shown is not None:
                    path = VERSION_PARAM.sub(f"version={shown}", path)
                socket = None
                try:
                    async with gate:
                        socket = await connect(
                            ws_base + path,
                            additional_headers=headers,
                            max_size=2**23,
                            compression=None if self.spec.get("no_deflate") else "deflate",
                            open_timeout=60,
                            close_timeout=2,
                        )
                except Exception as error:  # noqa: BLE001 - counted, reported
                    key = _failure(error)
                    self.failed[key] = self.failed.get(key, 0) + 1
                if first:
                    first = False
                    self.tried += 1
                    if self.tried == len(self.spec["viewers"]):
                        self.ready.set()
                    if socket is None:
                        return
                elif socket is not None:
                    self.reconnected += 1
                code: int | None = 1006
                if socket is not None:
                    retries = 0
                    self.connected += 1
                    try:
                        code = await self._read(socket, vid)
                    finally:
                        self.connected -= 1
                        await socket.close()
                if code not in RECONNECT_CODES or self.stop.is_set():
                    return
                delay = random.random() * min(2 ** retries, 64)
                retries += 1
                try:
                    await asyncio.wait_for(self.stop.wait(), delay)
                except TimeoutError:
                    pass
        except asyncio.CancelledError:
            pass

    async def _read(self, socket: Any, vid: int) -> int | None:
        """Read until the socket closes (its close code) or the run stops (None)."""
        receiving = asyncio.ensure_future(self._messages(socket, vid))
        stopping = asyncio.ensure_future(self.stop.wait())
        await asyncio.wait({receiving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if receiving.done():
            return receiving.result()
        receiving.cancel()
        return None

    async def _messages(self, socket: Any, vid: int) -> int:
        best = self.best
        try:
            async for message in socket:
                now = time.monotonic()
                text = message if isinstance(message, str) else message.decode()
                self.messages += 1
                self.bytes += len(text)
                shown = SHOWN_VERSION.search(text, 0, 200)
                if shown:
                    self.versions[vid] = int(shown.group(1))
                if "mk" not in text:
                    continue
                for plan, item, seq in MARKER.findall(text):
                    key = (vid, int(plan), int(item))
                    value = int(seq)
                    if value > best.get(key, 0):
                        best[key] = value
                        self.records.append((vid, key[1], key[2], value, now))
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else 1006
            self.closed[str(code)] = self.closed.get(str(code), 0) + 1
            return code
        return 1000

    async def lag_monitor(self) -> None:
        """How late the loop wakes a 5 ms sleep: the client's own delay on every timestamp."""
        while not self.stop.is_set():
            before = time.monotonic()
            await asyncio.sleep(0.005)
            lag = time.monotonic() - before - 0.005
            self.lags.append(lag)
            self.lag_max = max(self.lag_max, lag)

    def dump(self, path: str) -> None:
        records = list(self.records)
        self.records.clear()  # in place: every reader holds this list
        lags = sorted(self.lags)
        self.lags = []
        payload = {
            "records": records,
            "messages": self.messages,
            "bytes": self.bytes,
            "connected": self.connected,
            "failed": self.failed,
            "closed": self.closed,
            "reconnected": self.reconnected,
            "loop_lag_ms_p99": round(lags[int(len(lags) * 0.99)] * 1000, 2) if lags else None,
            "loop_lag_ms_max": round(self.lag_max * 1000, 2),
        }
        self.lag_max = 0.0
        Path(path).write_text(json.dumps(payload))


def _failure(error: Exception) -> str:
    """A refused connect as ``http <status>: <the start of the answer's body>`` (the body says why:
    not signed in, no access, the database unavailable), any other failure by its type."""
    if not isinstance(error, InvalidStatus):
        return type(error).__name__
    body = (error.response.body or b"").decode("utf-8", "replace")
    return f"http {error.response.status_code}: {' '.join(body.split())[:120]}".rstrip(": ")


def _stdin_lines(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str]) -> None:
    for line in sys.stdin:
        loop.call_soon_threadsafe(queue.put_nowait, line.strip())
    loop.call_soon_threadsafe(queue.put_nowait, "quit")


async def run(spec: dict[str, Any]) -> None:
    viewers = Viewers(spec)
    gate = asyncio.Semaphore(spec.get("connect_at_once", CONNECT_AT_ONCE))
    for order, viewer in enumerate(spec["viewers"]):
        viewer["order"] = order
    tasks = [asyncio.create_task(viewers.viewer(v, gate)) for v in spec["viewers"]]
    monitor = asyncio.create_task(viewers.lag_monitor())
    commands: asyncio.Queue[str] = asyncio.Queue()
    threading.Thread(target=_stdin_lines, args=(asyncio.get_running_loop(), commands), daemon=True).start()
    if spec["viewers"]:
        await asyncio.wait_for(viewers.ready.wait(), spec.get("connect_timeout", 300))
    await asyncio.sleep(0.2)
    print(f"connected {viewers.connected} {sum(viewers.failed.values())} {json.dumps(viewers.failed)}", flush=True)
    while True:
        command = await commands.get()
        if command.startswith("dump "):
            viewers.dump(command.split(" ", 1)[1])
            print("dumped", flush=True)
        elif command == "quit":
            break
    viewers.stop.set()
    await asyncio.wait(tasks, timeout=10)
    monitor.cancel()
    print("bye", flush=True)


def run_process() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    try:
        import uvloop

        uvloop.run(run(spec))
    except ImportError:
        asyncio.run(run(spec))


if __name__ == "__main__":
    run_process()
