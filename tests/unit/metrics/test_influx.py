"""The InfluxDB output without InfluxDB: line protocol escaping, the URL, the buffer's decisions
(explicit times) and the pusher against a fake sender (batches, retries, the bound, logging)."""

from __future__ import annotations

import asyncio
import logging
import math

import pytest

from moorage.metrics.influx import (
    Buffer,
    InfluxConfig,
    InfluxPusher,
    InfluxTarget,
    WriteError,
    encode_line,
    encode_point,
    escape_key,
    escape_measurement,
    escape_string,
)
from moorage.metrics.model import Point

# ---- line protocol ---------------------------------------------------------------------------


def test_measurements_escape_commas_and_spaces_only() -> None:
    assert escape_measurement("cpu load,x=1") == r"cpu\ load\,x=1"


def test_tag_keys_values_and_field_keys_escape_commas_equals_and_spaces() -> None:
    assert escape_key("a b,c=d") == r"a\ b\,c\=d"
    assert escape_key('say "hi"') == r'say\ "hi"'  # quotes are literal outside strings


def test_string_field_values_escape_quotes_and_backslashes() -> None:
    assert escape_string('C:\\dir "x"') == r'"C:\\dir \"x\""'


def test_newlines_cannot_break_a_line() -> None:
    line = encode_line("m\n", {"k\n": "v\nw"}, {"f": "a\nb"}, 1)
    assert "\n" not in line
    assert line == r'm\n,k\n=v\nw f="a\nb" 1'


def test_a_backslash_that_would_escape_the_separator_is_doubled_or_dropped_at_the_end() -> None:
    assert escape_key("ends\\") == "ends"
    assert escape_measurement("m\\\\") == "m"
    assert encode_line("m", {"k": "\\"}, {"f": 1.0}) == "m f=1.0"  # empty once cleaned: omitted
    assert escape_key("a\\,b") == "a\\\\\\,b"
    assert escape_key("C:\\dir") == "C:\\dir"  # harmless: kept as is (InfluxDB 1.x keeps it)


def test_tags_are_sorted_and_empty_values_left_out() -> None:
    line = encode_line("m", {"zone": "a", "app": "web", "empty": ""}, {"value": 1.5}, 7)
    assert line == "m,app=web,zone=a value=1.5 7"


def test_field_types() -> None:
    line = encode_line("m", {}, {"f": 2.0, "i": 3, "b": True, "s": "x", "e": 1e20})
    assert line == 'm f=2.0,i=3i,b=true,s="x",e=1e+20'
    with pytest.raises(ValueError, match="NaN"):
        encode_line("m", {}, {"f": math.nan})
    with pytest.raises(ValueError, match="field"):
        encode_line("m", {}, {})


def test_points_become_one_float_field_in_nanoseconds_or_the_urls_precision() -> None:
    point = Point(metric="task_cpu_percent", labels={"task": "web-1"}, ts=1700000000.5, value=3)
    assert encode_point(point) == b"task_cpu_percent,task=web-1 value=3.0 1700000000500000000"
    assert encode_point(point, 1e3) == b"task_cpu_percent,task=web-1 value=3.0 1700000000500"
    assert encode_point(Point(metric="m", ts=1, value=math.inf)) is None


# ---- the URL ---------------------------------------------------------------------------------


def test_the_url_names_the_write_endpoint_the_database_and_the_precision() -> None:
    target = InfluxTarget.parse("http://db:8086/write?db=moorage&u=me&p=s3cret&precision=ms")
    assert target.database == "moorage"
    assert target.per_second == 1e3
    assert target.query_url == "http://db:8086/query?u=me&p=s3cret"
    assert InfluxTarget.parse("https://h/influx/write?db=x").query_url == "https://h/influx/query"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("db:8086/write?db=x", "http"),
        ("http://db:8086/api/v2/write?db=x", "/write"),
        ("http://db:8086/write", "database"),
        ("http://db:8086/write?db=x&precision=d", "precision"),
    ],
)
def test_bad_urls_say_what_is_wrong(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        InfluxConfig(url)


# ---- the buffer ------------------------------------------------------------------------------


def lines(n: int, start: int = 0) -> list[bytes]:
    return [f"m value={i}.0 {i}".encode() for i in range(start, start + n)]


def test_a_full_batch_is_due_at_once_a_partial_one_after_the_flush_interval() -> None:
    buffer = Buffer(capacity=100, batch=10, flush_interval=1.0)
    assert buffer.due(0.0) == math.inf
    buffer.offer(lines(3), now=5.0)
    assert buffer.due(5.25) == pytest.approx(0.75)
    assert buffer.due(6.0) == 0
    buffer.offer(lines(7, 3), now=5.5)
    assert buffer.due(5.5) == 0  # ten lines: a batch
    assert buffer.take() == lines(10)
    assert buffer.done() == 10
    assert buffer.due(5.5) == math.inf


def test_batches_take_the_oldest_lines_in_order() -> None:
    buffer = Buffer(capacity=100, batch=4)
    buffer.offer(lines(10), now=0)
    assert buffer.take() == lines(4)
    buffer.done()
    assert buffer.take() == lines(4, 4)
    buffer.done()
    assert buffer.take() == lines(2, 8)


def test_a_failed_batch_is_retried_first_with_exponential_backoff_up_to_a_cap() -> None:
    buffer = Buffer(capacity=100, batch=4, min_backoff=0.5, max_backoff=4.0)
    buffer.offer(lines(6), now=0)
    first = buffer.take()
    delays = [buffer.failed(now=10.0) for _ in range(6)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert buffer.due(10.0) == 4.0 and buffer.due(14.0) == 0
    assert buffer.take() == first  # the same batch again, nothing lost or reordered
    buffer.done()
    assert buffer.failures == 0 and buffer.due(14.0) == 0  # backoff over; 2 lines wait
    assert buffer.take() == lines(2, 4)


def test_the_bound_drops_the_oldest_waiting_lines_never_the_batch_in_flight() -> None:
    buffer = Buffer(capacity=10, batch=4)
    buffer.offer(lines(8), now=0)
    inflight = buffer.take()
    assert buffer.offer(lines(5, 8), now=1) == 3  # 13 > 10: three oldest waiting ones go
    assert len(buffer) == 10
    assert buffer.inflight == inflight
    assert list(buffer.lines) == lines(6, 7)
    assert buffer.offer(lines(1, 13), now=2) == 1


def test_jitter_scales_the_backoff() -> None:
    buffer = Buffer(capacity=10, min_backoff=1.0)
    buffer.offer(lines(1), now=0)
    buffer.take()
    assert buffer.failed(now=0, jitter=1.2) == pytest.approx(1.2)


# ---- the pusher ------------------------------------------------------------------------------


class FakeSender:
    """Fails while `down`; records what arrived."""

    def __init__(self) -> None:
        self.down = False
        self.reject: str | None = None
        self.bodies: list[bytes] = []
        self.calls = 0
        self.closed = False

    async def write(self, body: bytes, points: int) -> None:
        self.calls += 1
        if self.down:
            raise WriteError("connection refused", retry=True)
        if self.reject is not None and self.reject.encode() in body:
            raise WriteError("HTTP 400: partial write: dropped=1", retry=False, dropped=1)
        self.bodies.append(body)

    async def aclose(self) -> None:
        self.closed = True

    def arrived(self) -> list[bytes]:
        return [line for body in self.bodies for line in body.split(b"\n")]


def points(n: int, start: int = 0) -> list[Point]:
    return [
        Point(metric="m", labels={"i": str(i)}, ts=float(i), value=i)
        for i in range(start, start + n)
    ]


async def wait_until(condition: object, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.005)


def pusher(sender: FakeSender, capacity: int = 1000, batch: int = 10) -> InfluxPusher:
    return InfluxPusher(
        sender, capacity=capacity, batch=batch, flush_interval=0.01, jitter=lambda: 0.01
    )


async def test_points_arrive_in_batches_in_order() -> None:
    sender = FakeSender()
    push = pusher(sender)
    runner = asyncio.create_task(push.run())
    push.offer(points(25))
    await wait_until(lambda: push.statistics().sent == 25)
    assert [len(b.split(b"\n")) for b in sender.bodies] == [10, 10, 5]
    assert sender.arrived() == [encode_point(p) for p in points(25)]
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert sender.closed


async def test_an_outage_buffers_everything_within_the_bound_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sender = FakeSender()
    sender.down = True
    push = pusher(sender)
    runner = asyncio.create_task(push.run())
    with caplog.at_level(logging.INFO, logger="moorage.metrics.influx"):
        for i in range(10):
            push.offer(points(20, 20 * i))
            await asyncio.sleep(0.01)
        await wait_until(lambda: sender.calls > 20)
        assert push.statistics().buffered == 200 and push.statistics().sent == 0
        sender.down = False
        await wait_until(lambda: push.statistics().sent == 200)
    stats = push.statistics()
    assert stats.dropped_full == stats.dropped_rejected == 0 and stats.buffered == 0
    assert stats.errors >= 20
    assert sorted(sender.arrived()) == sorted(encode_point(p) for p in points(200))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cannot write" in warnings[0]
    assert any("answers again" in r.getMessage() for r in caplog.records)
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner


async def test_past_the_bound_the_oldest_points_are_dropped_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sender = FakeSender()
    sender.down = True
    push = pusher(sender, capacity=50)
    runner = asyncio.create_task(push.run())
    with caplog.at_level(logging.WARNING, logger="moorage.metrics.influx"):
        for i in range(8):
            push.offer(points(10, 10 * i))
        assert push.statistics().dropped_full == 30
        await wait_until(lambda: sender.calls > 3)
        sender.down = False
        await wait_until(lambda: push.statistics().sent == 50)
    full = [r for r in caplog.records if "buffer full" in r.getMessage()]
    assert len(full) == 1
    # what was sent first had been taken before the drops; then the newest survived
    assert encode_point(points(1, 79)[0]) in sender.arrived()
    assert encode_point(points(1, 10)[0]) not in sender.arrived()
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner


async def test_a_rejected_batch_is_counted_and_the_rest_goes_on() -> None:
    sender = FakeSender()
    sender.reject = "i=3"
    push = pusher(sender, batch=5)
    runner = asyncio.create_task(push.run())
    push.offer(points(10))
    await wait_until(lambda: push.statistics().sent == 5)
    assert push.statistics().dropped_rejected == 1
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner


async def test_nan_values_are_counted_not_sent() -> None:
    push = pusher(FakeSender())
    push.offer([Point(metric="m", ts=1, value=math.nan)])
    assert push.statistics().dropped_invalid == 1 and push.statistics().buffered == 0


async def test_what_is_buffered_gets_one_last_chance_when_the_pusher_stops() -> None:
    sender = FakeSender()
    push = InfluxPusher(sender, capacity=100, batch=50, flush_interval=60)
    runner = asyncio.create_task(push.run())
    push.offer(points(3))
    await asyncio.sleep(0.02)
    assert sender.calls == 0  # a partial batch waits for the flush interval...
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert len(sender.arrived()) == 3  # ...but is not lost on the way out
