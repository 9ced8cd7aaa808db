"""The load generator of `benchmarks/live_timeline.py`, and the process meters it reads.

- :class:`HttpPool`: keep-alive HTTP/1.1 connections written by hand on asyncio streams (no
  client library: httpx spends ~0.3 ms of CPU a request, which on this two-core machine
  would be taken from the server under test). One request at a time per connection.
- :class:`Items` and :func:`open_loop` / :func:`closed_loop`: what to edit next. An item is
  one need of one plan (or one group of the bare broadcast); it is edited by one request at
  a time, so the next edit of it knows its revision and carries the next marker
  ``mk<plan>.<item>.<seq>.``, which the viewers look for in what they receive.
  `open_loop` sends at a fixed rate whatever the answers (intended send times
  ``t0 + i / rate``); a request that cannot get a connection (all busy) or an idle item
  within `max_lag` of its intended time is not sent and counted as `not_sent`.
- :class:`ProcMeter`: CPU seconds and RSS of processes (and of a process's main thread),
  from /proc, to show who was busy during a step. :class:`CpuAccount`: the CPU seconds of
  groups of processes that come and go (e.g. a database's backends), to charge per edit.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
IDLE_LIMIT_S = 3.0
CORES = os.cpu_count() or 1


# ------------------------------------------------------------------------------ HTTP


class HttpError(Exception):
    pass


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tag: int) -> None:
        self.reader = reader
        self.writer = writer
        self.tag = tag
        """Which session (cookie set) this connection sends with."""
        self.used = time.monotonic()

    def close(self) -> None:
        try:
            self.writer.close()
        except Exception:  # noqa: S110 - going away anyway
            pass


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b"".join(parts)
    else:
        body = b""
    return status, headers, body


class HttpPool:
    """Up to `size` keep-alive connections to host:port; connection i uses session i % sessions."""

    def __init__(self, host: str, port: int, size: int, sessions: int = 1) -> None:
        self.host = host
        self.port = port
        self.size = size
        self.sessions = max(sessions, 1)
        self._idle: asyncio.Queue[Connection] = asyncio.Queue()
        self._opened = 0

    async def acquire(self, timeout: float) -> Connection | None:
        while True:  # uvicorn closes a keep-alive connection after 5 s idle: never reuse one that old
            try:
                connection = self._idle.get_nowait()
            except asyncio.QueueEmpty:
                break
            if time.monotonic() - connection.used < IDLE_LIMIT_S:
                return connection
            connection.close()
            self._opened -= 1
        if self._opened < self.size:
            tag = self._opened % self.sessions
            self._opened += 1
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), 10)
            except Exception:
                self._opened -= 1
                raise
            return Connection(reader, writer, tag)
        try:
            return await asyncio.wait_for(self._idle.get(), timeout) if timeout > 0 else None
        except TimeoutError:
            return None

    def release(self, connection: Connection, broken: bool = False) -> None:
        connection.used = time.monotonic()
        if broken:
            connection.close()
            self._opened -= 1
        else:
            self._idle.put_nowait(connection)

    async def request(self, connection: Connection, raw: bytes, timeout: float) -> tuple[float, int, bytes]:
        """Send `raw`, read the answer: (send time, status, body). Raises on a broken connection."""
        sent = time.monotonic()
        connection.writer.write(raw)
        status, _headers, body = await asyncio.wait_for(read_response(connection.reader), timeout)
        return sent, status, body

    def close(self) -> None:
        while not self._idle.empty():
            self._idle.get_nowait().close()
        self._opened = 0


def http_request(method: str, path: str, host: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# ----------------------------------------------------------------------------- items


@dataclass
class Item:
    """One need of one plan (or one broadcast group): edited by one request at a time."""

    plan: int
    need: int
    plan_id: str = ""
    need_id: str = ""
    revision: int = 0
    seq: int = 0
    fields: dict[str, str] = field(default_factory=dict)
    broken: bool = False


class Items:
    """The idle items, picked at random; an item is busy while a request about it is out."""

    def __init__(self, items: list[Item], seed: int = 7, *, revisions: bool = True) -> None:
        self.all = items
        self._idle = list(items)
        self._random = random.Random(seed)
        self.revisions = revisions
        """Items carry a revision (plan needs): one without an answer is left out from then on."""

    def take(self) -> Item | None:
        if not self._idle:
            return None
        index = self._random.randrange(len(self._idle))
        self._idle[index], self._idle[-1] = self._idle[-1], self._idle[index]
        return self._idle.pop()

    def give_back(self, item: Item) -> None:
        if not item.broken:
            self._idle.append(item)


@dataclass
class Sent:
    """One request of a step (times: time.monotonic seconds)."""

    plan: int
    need: int
    seq: int
    intended: float
    sent: float
    answered: float
    status: int
    """HTTP status; 0: no answer (timeout or broken connection)."""


@dataclass
class StepLoad:
    sent: list[Sent] = field(default_factory=list)
    not_sent: int = 0
    """Intended sends that found no connection or idle item within max_lag (the load generator's backlog)."""
    started: float = 0.0
    finished_sending: float = 0.0
    finished: float = 0.0


Request = Callable[[Item, Any], bytes]
"""request(item, connection_tag) -> the raw HTTP request for the item's next edit (item.seq already advanced)."""
Answered = Callable[[Item, int, bytes], None]
"""answered(item, status, body): update the item after its answer (e.g. its revision)."""


class Refusals:
    """An :data:`Answered` that notes every answer but 200 before passing it on: how many, per
    status, and the first body of each status (what the server said, so that a run whose
    edits are all refused says why instead of measuring refusals)."""

    BODY_CHARS = 600

    def __init__(self, answered: Answered) -> None:
        self._answered = answered
        self.counts: dict[int, int] = {}
        self.first: dict[int, str] = {}

    def __call__(self, item: Item, status: int, body: bytes) -> None:
        if status != 200:
            self.counts[status] = self.counts.get(status, 0) + 1
            if status not in self.first:
                self.first[status] = _readable(body, self.BODY_CHARS)
        self._answered(item, status, body)

    def take(self) -> dict[str, Any]:
        """``{"count": n, "by_status": {...}, "first_body": {...}}`` since the last take, then forget them."""
        taken = {"count": sum(self.counts.values()), "by_status": {str(s): n for s, n in sorted(self.counts.items())},
                 "first_body": {str(s): body for s, body in sorted(self.first.items())}}
        self.counts, self.first = {}, {}
        return taken


_ERROR_ELEMENT = re.compile(r'<(\w+)[^>]*class="(?:alert alert--error|field-error)"[^>]*>(.*?)</\1>', re.S)


def _readable(body: bytes, limit: int) -> str:
    """The text of an HTML or JSON answer, tags and runs of blanks dropped, cut at `limit`: the
    page's error messages (``alert--error``, ``field-error``) first when it has some."""
    html = body.decode("utf-8", "replace")
    errors = " | ".join(match.group(2) for match in _ERROR_ELEMENT.finditer(html))
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", (errors + " || " if errors else "") + html, flags=re.S)
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text)).strip()
    return text[:limit]


async def _one(
    pool: HttpPool,
    items: Items,
    build: Request,
    answered: Answered,
    load: StepLoad,
    intended: float,
    max_lag: float,
    timeout: float,
) -> None:
    deadline = intended + max_lag
    try:
        connection = await pool.acquire(timeout=max(deadline - time.monotonic(), 0))
    except Exception:
        load.not_sent += 1
        return
    if connection is None:
        load.not_sent += 1
        return
    item = items.take()
    while item is None and time.monotonic() < deadline:
        await asyncio.sleep(0.002)
        item = items.take()
    if item is None:
        pool.release(connection)
        load.not_sent += 1
        return
    item.seq += 1
    raw = build(item, connection.tag)
    broken = False
    sent = time.monotonic()
    try:
        sent, status, body = await pool.request(connection, raw, timeout)
    except Exception:
        status, body, broken = 0, b"", True
    answered_at = time.monotonic()
    load.sent.append(Sent(item.plan, item.need, item.seq, intended, sent, answered_at, status))
    if status == 0:
        item.broken = items.revisions  # its revision is unknown now: edit it no more
    else:
        answered(item, status, body)
    pool.release(connection, broken=broken)
    items.give_back(item)


async def open_loop(
    pool: HttpPool,
    items: Items,
    build: Request,
    answered: Answered,
    rate: float,
    duration: float,
    *,
    max_lag: float = 1.0,
    timeout: float = 15.0,
    drain: float = 20.0,
) -> StepLoad:
    """Send `rate` requests a second for `duration` seconds, then wait (at most `drain` s) for the answers."""
    load = StepLoad()
    total = int(rate * duration)
    tasks: set[asyncio.Task[None]] = set()
    start = time.monotonic() + 0.05
    load.started = start
    for index in range(total):
        intended = start + index / rate
        delay = intended - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(_one(pool, items, build, answered, load, intended, max_lag, timeout))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    load.finished_sending = time.monotonic()
    if tasks:
        _done, late = await asyncio.wait(set(tasks), timeout=drain)
        for task in late:
            task.cancel()
        if late:
            await asyncio.gather(*late, return_exceptions=True)
    load.finished = time.monotonic()
    return load


def merge_loads(loads: list[StepLoad]) -> StepLoad:
    """Loads run side by side (e.g. one open loop per instance) as one step."""
    merged = StepLoad()
    for load in loads:
        merged.sent.extend(load.sent)
        merged.not_sent += load.not_sent
    merged.started = min(load.started for load in loads)
    merged.finished_sending = max(load.finished_sending for load in loads)
    merged.finished = max(load.finished for load in loads)
    return merged


async def closed_loop(
    pool: HttpPool,
    items: Items,
    build: Request,
    answered: Answered,
    workers: int,
    duration: float,
    *,
    timeout: float = 15.0,
) -> StepLoad:
    """`workers` loops, each sending its next request when the last is answered, for `duration` s."""
    load = StepLoad()
    load.started = time.monotonic()
    stop_at = load.started + duration

    async def worker() -> None:
        while time.monotonic() < stop_at:
            now = time.monotonic()
            await _one(pool, items, build, answered, load, now, 1.0, timeout)

    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(workers))), duration + timeout + 5)
    load.finished_sending = load.finished = time.monotonic()
    return load


# ------------------------------------------------------------------------ statistics


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary_ms(seconds: list[float]) -> dict[str, Any]:
    values = [s * 1000 for s in seconds]
    return {
        "count": len(values),
        "p50": _round(percentile(values, 50)),
        "p95": _round(percentile(values, 95)),
        "p99": _round(percentile(values, 99)),
        "max": _round(max(values)) if values else None,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


# ---------------------------------------------------------------------------- meters


def _ticks(path: Path) -> int:
    fields = path.read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14 and 15 of stat)


def rss_mib(pid: int) -> float | None:
    """The process's resident memory now (MiB)."""
    return _status_mib(pid, "VmRSS:")


def peak_rss_mib(pid: int) -> float | None:
    """The most resident memory the process has had since it started (MiB, the kernel's high-water mark)."""
    return _status_mib(pid, "VmHWM:")


def _status_mib(pid: int, field: str) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds the process (all its threads) has used; None once it is gone."""
    try:
        return _ticks(Path(f"/proc/{pid}/stat")) / CLOCK_TICKS
    except (OSError, IndexError):
        return None


def cpu_spent(before: dict[int, float], after: dict[int, float]) -> tuple[float, int]:
    """CPU seconds a group of processes spent between two readings (pid -> seconds), and how
    many processes of the first reading were gone at the second.

    A process in both readings counts its difference; one only in the second started in
    between and counts all it used; one gone counts nothing (its last share is lost, so
    the figure is a lower bound when processes end). A pid reused by a new process (its
    reading went down) counts as new.
    """
    spent = 0.0
    for pid, now in after.items():
        then = before.get(pid)
        spent += now - then if then is not None and now >= then else now
    return spent, sum(1 for pid in before if pid not in after)


class CpuAccount:
    """CPU seconds of named groups of processes between `start()` and `stop()`.

    `groups()` lists each group's pids when called, at the start and again at the stop, so
    processes that come and go (a database's backends) are followed: see :func:`cpu_spent`.
    """

    def __init__(self, groups: Callable[[], dict[str, list[int]]]) -> None:
        self.groups = groups
        self._before: dict[str, dict[int, float]] = {}
        self._wall = 0.0
        self._machine_busy = 0

    def _read(self) -> dict[str, dict[int, float]]:
        readings: dict[str, dict[int, float]] = {}
        for name, pids in self.groups().items():
            seconds = {pid: cpu_seconds(pid) for pid in pids}
            readings[name] = {pid: value for pid, value in seconds.items() if value is not None}
        return readings

    def start(self) -> None:
        self._before = self._read()
        self._machine_busy = machine_ticks()[0]
        self._wall = time.monotonic()

    def stop(self) -> dict[str, Any]:
        """Per group: CPU seconds, processes seen at the stop, processes that ended meanwhile; the wall
        time; and what every other process of the machine used meanwhile (% of one core)."""
        after = self._read()
        wall = max(time.monotonic() - self._wall, 1e-6)
        machine = (machine_ticks()[0] - self._machine_busy) / CLOCK_TICKS
        result: dict[str, Any] = {"wall_s": round(wall, 3)}
        ours = 0.0
        for name in set(after) | set(self._before):
            spent, ended = cpu_spent(self._before.get(name, {}), after.get(name, {}))
            ours += spent
            result[name] = {"cpu_s": round(spent, 3), "processes": len(after.get(name, {})), "ended": ended}
        result["other_processes_percent"] = round(100 * max(machine - ours, 0.0) / wall, 1)
        return result


def machine_ticks() -> tuple[int, int]:
    """Clock ticks of every core since boot: (busy, all)."""
    numbers = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = numbers[3] + numbers[4]
    return sum(numbers) - idle, sum(numbers)


class ProcMeter:
    """CPU use of some processes between `start()` and `stop()` (100 % = one core busy)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = dict(pids)
        self._start: dict[str, int] = {}
        self._main_start: dict[str, int] = {}
        self._wall = 0.0
        self._machine = (0, 0)

    def _read(self) -> tuple[dict[str, int], dict[str, int]]:
        totals, mains = {}, {}
        for name, pid in self.pids.items():
            try:
                totals[name] = _ticks(Path(f"/proc/{pid}/stat"))
                mains[name] = _ticks(Path(f"/proc/{pid}/task/{pid}/stat"))
            except (OSError, IndexError):
                totals[name] = mains[name] = 0
        return totals, mains

    def start(self) -> None:
        self._start, self._main_start = self._read()
        self._machine = machine_ticks()
        self._wall = time.monotonic()

    def stop(self) -> dict[str, Any]:
        totals, mains = self._read()
        wall = max(time.monotonic() - self._wall, 1e-6)
        busy, all_ticks = machine_ticks()
        result: dict[str, Any] = {}
        for name in self.pids:
            result[name] = round(100 * (totals[name] - self._start.get(name, 0)) / CLOCK_TICKS / wall, 1)
            result[f"{name}_main_thread"] = round(100 * (mains[name] - self._main_start.get(name, 0)) / CLOCK_TICKS / wall, 1)
        delta_all = all_ticks - self._machine[1]
        machine = 100 * (busy - self._machine[0]) / delta_all if delta_all else 0.0
        result["machine_busy_percent_of_all_cores"] = round(machine, 1)
        ours = sum(result[name] for name in self.pids)
        # Other processes on the machine (other people's tests...), in % of one core.
        result["other_processes"] = round(max(machine * CORES - ours, 0.0), 1)
        return result


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float, every: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(every)
    return False
