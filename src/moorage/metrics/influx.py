"""InfluxDB output: every point the server ingests, pushed in line protocol to `--influx-url`.

    ingest ──offer()──▶ Buffer (encoded lines, bounded: drops the oldest, counted)
                           │ due(): a full batch, or the oldest line waited `flush_interval`
                           ▼
                        InfluxPusher.run ──Sender.write()──▶ POST /write?db=… (InfluxDB 1.x)
                           │ retryable failure: the batch stays, exponential backoff + jitter
                           └ rejected (400): the batch is dropped, counted, logged

The buffer is in memory and bounded (`--influx-buffer`): while InfluxDB is down, points wait
there and arrive once it is back; only when it is full does the oldest point go, and every
point that goes is counted (`moorage_influx_dropped_total` on /metrics) and logged once per
outage — never silently. `Buffer` decides with explicit times (tested without a clock);
`InfluxPusher` only applies its decisions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp

from .model import Point

__all__ = [
    "Buffer",
    "HttpSender",
    "InfluxConfig",
    "InfluxPusher",
    "InfluxTarget",
    "PushStats",
    "Sender",
    "WriteError",
    "encode_line",
    "encode_point",
    "escape_key",
    "escape_measurement",
    "escape_string",
]

log = logging.getLogger(__name__)

DEFAULT_BUFFER = 100_000  # points (~100 bytes each once encoded)
DEFAULT_BATCH = 5_000  # InfluxDB's advice: batches of 5,000 to 10,000 points
FLUSH_INTERVAL = 1.0  # seconds a partial batch waits for more points
MIN_BACKOFF = 0.5
MAX_BACKOFF = 10.0  # a recovered InfluxDB receives the backlog at most this late
WRITE_TIMEOUT = 10.0
PRECISIONS = {"ns": 1e9, "n": 1e9, "u": 1e6, "ms": 1e3, "s": 1.0, "m": 1 / 60, "h": 1 / 3600}


# ---- line protocol ---------------------------------------------------------------------------
# Escaping as the line protocol reference says: measurements escape commas and spaces; tag keys,
# tag values and field keys also escape equal signs; string field values escape double quotes
# and backslashes. A newline cannot be escaped: it becomes the two characters `\n`. A backslash
# before an escaped character is doubled (InfluxDB 1.x then keeps both: still better than a
# broken line); trailing backslashes are removed (1.x refuses a line with one, doubled or not).
_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\n"})
_KEY = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\n"})
_STRING = str.maketrans({'"': r"\"", "\\": "\\\\", "\n": r"\n"})
_DANGLING = re.compile(r"\\(?=[, =\n])")


def escape_measurement(name: str) -> str:
    return _DANGLING.sub(r"\\\\", name.rstrip("\\")).translate(_MEASUREMENT)


def escape_key(text: str) -> str:
    """A tag key, tag value or field key."""
    return _DANGLING.sub(r"\\\\", text.rstrip("\\")).translate(_KEY)


def escape_string(text: str) -> str:
    """A string field value, quotes included."""
    return '"' + text.translate(_STRING) + '"'


def _field(value: float | int | bool | str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("InfluxDB stores no NaN or infinite value")
        return repr(value)
    return escape_string(value)


def encode_line(
    measurement: str,
    tags: Mapping[str, str],
    fields: Mapping[str, float | int | bool | str],
    timestamp: int | None = None,
) -> str:
    """One point in line protocol. Tags are sorted by key (InfluxDB's advice); empty tag values
    are left out (InfluxDB refuses them). Raises ValueError for a point InfluxDB cannot store."""
    if not fields:
        raise ValueError("a point needs at least one field")
    escaped = ((escape_key(key), escape_key(value)) for key, value in sorted(tags.items()))
    head = escape_measurement(measurement) + "".join(f",{k}={v}" for k, v in escaped if k and v)
    body = ",".join(f"{escape_key(key)}={_field(value)}" for key, value in fields.items())
    return f"{head} {body}" if timestamp is None else f"{head} {body} {timestamp}"


def encode_point(point: Point, per_second: float = 1e9) -> bytes | None:
    """`metric,label=… value=<float> <time>`; None for a NaN or infinite value."""
    if not math.isfinite(point.value):
        return None
    stamp = round(point.ts * per_second)
    return encode_line(point.metric, point.labels, {"value": float(point.value)}, stamp).encode()


# ---- the target ------------------------------------------------------------------------------
@dataclass(frozen=True)
class InfluxTarget:
    """`--influx-url http://HOST:8086/write?db=moorage[&rp=…&u=…&p=…&precision=…]`."""

    write_url: str
    query_url: str  # the same server's /query (CREATE DATABASE), with u and p
    database: str
    per_second: float  # timestamp units per second (the URL's `precision`, default ns)

    @staticmethod
    def parse(url: str) -> InfluxTarget:
        """Raises ValueError naming what is wrong."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"must be http(s)://HOST:PORT/write?db=NAME, got {url!r}")
        if not parts.path.endswith("/write") or "/api/v2/" in parts.path:
            raise ValueError(f"the path must end in /write (InfluxDB 1.x API), got {parts.path!r}")
        params = dict(parse_qsl(parts.query))
        database = params.get("db", "")
        if not database:
            raise ValueError("the URL names no database (?db=NAME)")
        precision = params.get("precision", "ns")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        auth: dict[str, str] = {key: params[key] for key in ("u", "p") if key in params}
        query_path = parts.path[: -len("write")] + "query"
        query = urlunsplit((parts.scheme, parts.netloc, query_path, urlencode(auth), ""))
        return InfluxTarget(url, query, database, PRECISIONS[precision])


@dataclass(frozen=True)
class InfluxConfig:
    """The server's InfluxDB output (`--influx-url`, `--influx-buffer`)."""

    url: str
    buffer: int = DEFAULT_BUFFER
    batch: int = DEFAULT_BATCH
    flush_interval: float = FLUSH_INTERVAL

    def __post_init__(self) -> None:
        InfluxTarget.parse(self.url)
        if self.buffer < 1:
            raise ValueError("the buffer must hold at least one point")


# ---- sending ---------------------------------------------------------------------------------
class WriteError(Exception):
    """A batch did not arrive. `retry`: keep it and try again later (InfluxDB down, 5xx, auth);
    otherwise InfluxDB refused it for good (a parse error, 4xx) and `dropped` points are lost."""

    def __init__(self, message: str, *, retry: bool, dropped: int | None = None) -> None:
        super().__init__(message)
        self.retry = retry
        self.dropped = dropped


class Sender(Protocol):
    async def write(self, body: bytes, points: int) -> None:
        """Deliver one batch (`points` lines joined by newlines). Called by the pusher's loop,
        one batch at a time; may block up to its own timeout. Raises WriteError."""
        ...

    async def aclose(self) -> None:
        """Release connections; called once, when the pusher stops."""
        ...


_PARTIAL = re.compile(r"dropped=(\d+)")


class HttpSender:
    """POSTs to InfluxDB 1.x's /write; creates the database when InfluxDB says it is missing
    (as Telegraf does)."""

    def __init__(
        self,
        target: InfluxTarget,
        session: aiohttp.ClientSession | None = None,
        timeout: float = WRITE_TIMEOUT,
    ) -> None:
        self.target = target
        self._session = session
        self._owned = session is None  # opened here on the first write, closed by aclose()
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def aclose(self) -> None:
        if self._owned and self._session is not None:
            await self._session.close()
            self._session = None

    async def write(self, body: bytes, points: int) -> None:
        status, text = await self._post(self.target.write_url, body)
        if status == 404 and "database not found" in text:
            await self._create_database()
            status, text = await self._post(self.target.write_url, body)
        if status in (200, 204):
            return
        message = f"HTTP {status}: {text.strip()[:200]}"
        if status in (401, 403, 404, 408, 429) or status >= 500:
            raise WriteError(message, retry=True)
        found = _PARTIAL.search(text)  # "partial write: … dropped=N": the others were written
        raise WriteError(message, retry=False, dropped=int(found[1]) if found else points)

    async def _create_database(self) -> None:
        name = self.target.database.replace("\\", "\\\\").replace('"', '\\"')
        status, text = await self._post(
            self.target.query_url, urlencode({"q": f'CREATE DATABASE "{name}"'}).encode(), form=True
        )
        if status != 200:
            raise WriteError(f"cannot create database: HTTP {status}: {text[:200]}", retry=True)
        log.info("influx: created database %r", self.target.database)

    async def _post(self, url: str, body: bytes, form: bool = False) -> tuple[int, str]:
        kind = "application/x-www-form-urlencoded" if form else "text/plain; charset=utf-8"
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.post(
                url, data=body, headers={"Content-Type": kind}, timeout=self.timeout
            ) as response:
                return response.status, await response.text(errors="replace")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise WriteError(f"{type(exc).__name__}: {exc}", retry=True) from None


# ---- the buffer (pure: explicit time) --------------------------------------------------------
@dataclass
class Buffer:
    """Encoded lines waiting for InfluxDB, at most `capacity` including the batch in flight."""

    capacity: int
    batch: int = DEFAULT_BATCH
    flush_interval: float = FLUSH_INTERVAL
    min_backoff: float = MIN_BACKOFF
    max_backoff: float = MAX_BACKOFF
    lines: deque[bytes] = field(default_factory=deque)
    inflight: list[bytes] = field(default_factory=list)  # taken, not yet acknowledged
    first_at: float | None = None  # when the oldest waiting line arrived
    retry_at: float = 0.0
    failures: int = 0  # consecutive failed writes

    def __post_init__(self) -> None:
        self.batch = max(1, min(self.batch, self.capacity))

    def __len__(self) -> int:
        return len(self.lines) + len(self.inflight)

    def offer(self, lines: Iterable[bytes], now: float) -> int:
        """Queue lines; drop the oldest waiting ones beyond capacity. Returns how many dropped."""
        if self.first_at is None:
            self.first_at = now
        self.lines.extend(lines)
        over = len(self) - self.capacity
        for _ in range(max(0, over)):
            self.lines.popleft()
        if not self.lines:
            self.first_at = None
        return max(0, over)

    def due(self, now: float) -> float:
        """Seconds until the next write should start: 0 now, inf with nothing to send."""
        if self.inflight:
            return max(0.0, self.retry_at - now)
        if not self.lines:
            return math.inf
        ready = now if len(self.lines) >= self.batch else self._flush_at()
        return max(0.0, max(ready, self.retry_at) - now)

    def _flush_at(self) -> float:
        return (self.first_at or 0.0) + self.flush_interval

    def take(self) -> list[bytes]:
        """The batch to write: the one in flight again after a failure, else the oldest lines."""
        if not self.inflight:
            count = min(self.batch, len(self.lines))
            self.inflight = [self.lines.popleft() for _ in range(count)]
            if not self.lines:
                self.first_at = None
        return self.inflight

    def done(self) -> int:
        """The batch in flight arrived (or was refused for good): forget it; how many lines."""
        count = len(self.inflight)
        self.inflight = []
        self.failures = 0
        self.retry_at = 0.0
        return count

    def failed(self, now: float, jitter: float = 1.0) -> float:
        """The batch in flight did not arrive: keep it, back off. Returns the delay.

        `jitter` (0.8-1.2 from the pusher) spreads several servers' retries apart."""
        self.failures += 1
        delay = min(self.max_backoff, self.min_backoff * 2.0 ** min(self.failures - 1, 30)) * jitter
        self.retry_at = now + delay
        return delay


# ---- the pusher ------------------------------------------------------------------------------
@dataclass
class PushStats:
    """What /metrics exports as `moorage_influx_*`."""

    sent: int = 0  # points InfluxDB acknowledged
    dropped_full: int = 0  # points dropped because the buffer was full
    dropped_rejected: int = 0  # points InfluxDB refused (400: parse errors, type conflicts)
    dropped_invalid: int = 0  # NaN or infinite values: line protocol cannot carry them
    errors: int = 0  # failed writes (each retried)
    batches: int = 0  # batches acknowledged
    buffered: int = 0


class InfluxPusher:
    """Owns the buffer; `run()` writes batches until cancelled (a last flush on the way out)."""

    def __init__(
        self,
        sender: Sender,
        *,
        capacity: int = DEFAULT_BUFFER,
        batch: int = DEFAULT_BATCH,
        flush_interval: float = FLUSH_INTERVAL,
        per_second: float = 1e9,
        name: str = "InfluxDB",
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = partial(random.uniform, 0.8, 1.2),
    ) -> None:
        self.sender = sender
        self.buffer = Buffer(capacity, batch, flush_interval)
        self.per_second = per_second
        self.name = name
        self.clock = clock
        self.jitter = jitter
        self.stats = PushStats()
        self._wake = asyncio.Event()
        self._outage: tuple[float, str] | None = None  # since when, and the first error
        self._drops_logged = False
        self._rejects_logged_at = -math.inf

    @staticmethod
    def from_config(config: InfluxConfig) -> InfluxPusher:
        target = InfluxTarget.parse(config.url)
        return InfluxPusher(
            HttpSender(target),
            capacity=config.buffer,
            batch=config.batch,
            flush_interval=config.flush_interval,
            per_second=target.per_second,
            name=urlsplit(config.url).netloc,
        )

    def offer(self, points: Iterable[Point]) -> None:
        """Queue points (the ingest path calls this; never blocks, never raises)."""
        lines: list[bytes] = []
        for point in points:
            line = encode_point(point, self.per_second)
            if line is None:
                self.stats.dropped_invalid += 1
            else:
                lines.append(line)
        if not lines:
            return
        was_empty = not self.buffer.lines
        dropped = self.buffer.offer(lines, self.clock())
        if dropped:
            self._dropped(dropped)
        if was_empty or len(self.buffer.lines) >= self.buffer.batch:
            self._wake.set()

    def statistics(self) -> PushStats:
        self.stats.buffered = len(self.buffer)
        return self.stats

    async def run(self) -> None:
        try:
            while True:
                self._wake.clear()
                wait = self.buffer.due(self.clock())
                if wait > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(None if math.isinf(wait) else wait):
                            await self._wake.wait()
                    continue
                await self.flush_once()
        finally:
            await self._last_flush()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self.sender.aclose()

    async def flush_once(self) -> None:
        """Write one batch (the one in flight, or the oldest lines) and record the outcome."""
        batch = self.buffer.take()
        if not batch:
            return
        try:
            await self.sender.write(b"\n".join(batch), len(batch))
        except WriteError as exc:
            if exc.retry:
                self._failed(str(exc))
                return
            self._rejected(exc, len(batch))
            self.buffer.done()
            return
        self.stats.sent += self.buffer.done()
        self.stats.batches += 1
        self._recovered()

    async def _last_flush(self, timeout: float = 2.0) -> None:
        """On the way out: one bounded attempt to deliver what is buffered."""
        with contextlib.suppress(Exception, asyncio.CancelledError):
            async with asyncio.timeout(timeout):
                while len(self.buffer) and self._outage is None:
                    await self.flush_once()
        if len(self.buffer):
            log.warning("influx: stopped with %d points not delivered", len(self.buffer))

    # ---- never silent: counted always, logged once per outage ---------------------------------
    def _failed(self, error: str) -> None:
        self.stats.errors += 1
        delay = self.buffer.failed(self.clock(), self.jitter())
        if self._outage is None:
            self._outage = (self.clock(), error)
            log.warning(
                "influx: cannot write to %s (%s); buffering up to %d points, retrying (next in "
                "%.1fs)",
                self.name,
                error,
                self.buffer.capacity,
                delay,
            )
        else:
            log.debug("influx: write to %s failed again: %s", self.name, error)

    def _recovered(self) -> None:
        if self._outage is not None:
            since, _ = self._outage
            log.info(
                "influx: %s answers again after %.0fs; %d points still buffered, %d dropped so far",
                self.name,
                self.clock() - since,
                len(self.buffer),
                self.stats.dropped_full,
            )
            self._outage = None
        if len(self.buffer) < self.buffer.capacity:
            self._drops_logged = False

    def _dropped(self, count: int) -> None:
        self.stats.dropped_full += count
        if not self._drops_logged:
            self._drops_logged = True
            log.warning(
                "influx: buffer full (%d points, --influx-buffer): dropping the oldest points "
                "while %s does not keep up (counted in moorage_influx_dropped_total)",
                self.buffer.capacity,
                self.name,
            )

    def _rejected(self, exc: WriteError, count: int) -> None:
        lost = count if exc.dropped is None else exc.dropped
        self.stats.dropped_rejected += lost
        now = self.clock()
        if now - self._rejects_logged_at >= 60.0:  # at most once a minute
            self._rejects_logged_at = now
            log.error("influx: %s refused %d of %d points: %s", self.name, lost, count, exc)
        self._recovered()  # it answered: whatever outage there was is over
