"""The agent's metrics buffer and sender: bounded on disk, oldest dropped first and counted,
replayed in order once the server is back — never silent."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from moorage.agent.client import ServerClient
from moorage.agent.metrics import AgentMetrics, MetricsBuffer
from moorage.metrics.model import Point


def batch(first: int, count: int = 10) -> list[Point]:
    return [
        Point(metric="m", labels={"i": str(i)}, ts=float(i), value=i)
        for i in range(first, first + count)
    ]


def values(points: list[Point]) -> list[float]:
    return [p.value for p in points]


def segment_size(tmp_path: Path) -> int:
    probe = MetricsBuffer(tmp_path / "probe")
    probe.append(batch(90))  # as large as any batch the tests write
    return probe.size


def test_overflow_drops_the_oldest_batches_and_counts_their_points(tmp_path: Path) -> None:
    size = segment_size(tmp_path)
    buffer = MetricsBuffer(tmp_path / "buf", max_bytes=3 * size + size // 2)
    assert [buffer.append(batch(i * 10)) for i in range(3)] == [0, 0, 0]
    assert buffer.append(batch(30)) == 10  # the oldest batch made room
    assert buffer.append(batch(40)) == 10
    assert buffer.points == 30 and buffer.size <= buffer.max_bytes
    assert (buffer.dropped_pending, buffer.dropped_total) == (20, 20)
    _, points = buffer.oldest()
    assert values(points) == list(range(20, 50))  # the newest kept, in order


def test_a_batch_larger_than_the_bound_is_dropped_itself(tmp_path: Path) -> None:
    buffer = MetricsBuffer(tmp_path / "buf", max_bytes=100)
    assert buffer.append(batch(0)) == 10
    assert buffer.points == 0 and buffer.dropped_total == 10


def test_oldest_takes_whole_segments_up_to_a_point_count(tmp_path: Path) -> None:
    buffer = MetricsBuffer(tmp_path / "buf")
    for i in range(4):
        buffer.append(batch(i * 10))
    segments, points = buffer.oldest(max_points=25)
    assert len(segments) == 2 and values(points) == list(range(20))
    buffer.remove(segments)
    segments, points = buffer.oldest(max_points=5)  # at least one segment, however big
    assert len(segments) == 1 and values(points) == list(range(20, 30))


def test_segments_and_counts_survive_a_restart(tmp_path: Path) -> None:
    size = segment_size(tmp_path)
    buffer = MetricsBuffer(tmp_path / "buf", max_bytes=2 * size + size // 2)
    for i in range(3):
        buffer.append(batch(i * 10))
    again = MetricsBuffer(tmp_path / "buf", max_bytes=2 * size + size // 2)
    assert again.points == 20 and (again.dropped_pending, again.dropped_total) == (10, 10)
    again.append(batch(30))
    _, points = again.oldest()
    assert values(points) == list(range(20, 40))  # order continues across the restart
    assert (again.dropped_pending, again.dropped_total) == (20, 20)
    again.acknowledge(20)
    after = MetricsBuffer(tmp_path / "buf")
    assert (after.dropped_pending, after.dropped_total) == (0, 20)


def test_an_unreadable_segment_is_dropped_and_counted(tmp_path: Path) -> None:
    buffer = MetricsBuffer(tmp_path / "buf")
    buffer.append(batch(0))
    buffer.append(batch(10))
    buffer.segments[0].path.write_text("not json")
    segments, points = buffer.oldest()
    assert values(points) == list(range(10, 20)) and len(segments) == 1
    assert buffer.dropped_total == 10 and buffer.points == 10


# ---- the sender against a small receiver ----------------------------------------------------
class Receiver:
    """`POST /v1/metrics/ingest` that answers `status` (200: keeps the batch)."""

    def __init__(self) -> None:
        self.status = 200
        self.batches: list[dict[str, Any]] = []

    async def ingest(self, request: web.Request) -> web.Response:
        if self.status != 200:
            return web.json_response({"message": "not now"}, status=self.status)
        self.batches.append(await request.json())
        return web.json_response({"accepted": len(self.batches[-1]["points"])})

    def values(self) -> list[float]:
        return [p["value"] for b in self.batches for p in b["points"] if p["metric"] == "m"]


@pytest.fixture
async def receiver() -> Any:
    found = Receiver()
    app = web.Application()
    app.router.add_post("/v1/metrics/ingest", found.ingest)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    async with aiohttp.ClientSession() as session:
        client = ServerClient(session, f"http://127.0.0.1:{port}")
        yield found, client
    await runner.cleanup()


def metrics(client: ServerClient, tmp_path: Path, max_bytes: int = 1 << 20) -> AgentMetrics:
    return AgentMetrics(
        node="n1",
        client=client,
        runners=list,
        docker=lambda: None,
        buffer_dir=tmp_path / "metrics-buffer",
        buffer_bytes=max_bytes,
    )


async def test_batches_buffer_while_the_server_fails_and_replay_in_order(
    receiver: tuple[Receiver, ServerClient], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    found, client = receiver
    sender = metrics(client, tmp_path)
    found.status = 503
    with caplog.at_level(logging.WARNING, "moorage.agent.metrics"):
        for i in range(5):
            sender._pending.extend(batch(i * 10))
            assert not await sender.flush()
    assert sender.buffer.points == 50 and found.batches == []
    outage_logs = [r for r in caplog.records if "buffering" in r.getMessage()]
    assert len(outage_logs) == 1  # once per outage, not once per batch
    found.status = 200
    sender._pending.extend(batch(50))
    assert await sender.flush()
    assert found.values() == list(range(60))  # the buffer first, oldest first, then the new
    assert sender.buffer.points == 0 and all(b["dropped"] == 0 for b in found.batches)
    assert found.batches[0]["node"] == "n1"


async def test_dropped_points_are_reported_with_the_next_accepted_batch(
    receiver: tuple[Receiver, ServerClient], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    found, client = receiver
    size = segment_size(tmp_path)
    sender = metrics(client, tmp_path, max_bytes=2 * size + size // 2)
    found.status = 503
    with caplog.at_level(logging.WARNING, "moorage.agent.metrics"):
        for i in range(5):
            sender._pending.extend(batch(i * 10))
            await sender.flush()
    assert any("buffer full" in r.getMessage() for r in caplog.records)
    assert sender.buffer.dropped_total == 30
    agent = sender._agent_points(1.0)
    assert {p.metric: p.value for p in agent} == {"agent_metrics_buffered": 20}
    found.status = 200
    assert await sender.flush()
    assert found.values() == list(range(30, 50))
    assert found.batches[0]["dropped"] == 30  # said once, with the first accepted batch
    sender._pending.extend(batch(50))
    await sender.flush()
    assert found.batches[-1]["dropped"] == 0 and sender.buffer.dropped_total == 30


async def test_a_refused_batch_is_dropped_and_counted_not_retried_forever(
    receiver: tuple[Receiver, ServerClient], tmp_path: Path
) -> None:
    found, client = receiver
    sender = metrics(client, tmp_path)
    found.status = 400
    sender._pending.extend(batch(0))
    assert await sender.flush()
    assert sender.buffer.points == 0 and sender.buffer.dropped_pending == 10
    found.status = 200
    sender._pending.extend(batch(10))
    await sender.flush()
    assert found.batches[0]["dropped"] == 10


async def test_an_unreachable_server_buffers_and_a_cancelled_sender_keeps_its_points(
    tmp_path: Path,
) -> None:
    async with aiohttp.ClientSession() as session:
        client = ServerClient(session, "http://127.0.0.1:9")  # nothing listens on discard
        sender = metrics(client, tmp_path)
        sender._pending.extend(batch(0))
        assert not await sender.flush()
        assert sender.buffer.points == 10
        sender._pending.extend(batch(10))
        task = asyncio.create_task(sender.run())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    _, points = MetricsBuffer(tmp_path / "metrics-buffer").oldest()
    assert values(points) == list(range(20))


class HungContainer:
    async def stats(self, *, stream: bool) -> list[dict[str, Any]]:
        await asyncio.Event().wait()  # an engine that never answers
        return []


class HungDocker:
    class containers:  # aiodocker names it so
        @staticmethod
        def container(container_id: str) -> HungContainer:
            return HungContainer()


async def test_a_hung_docker_stats_call_times_out_alone(
    receiver: tuple[Receiver, ServerClient], tmp_path: Path
) -> None:
    from moorage.agent.metrics import Target

    _, client = receiver
    sender = metrics(client, tmp_path)
    sender.stats_timeout = 0.2
    target = Target(
        {"task": "t1", "container": "app"}, "docker", {"container_id": "c1"}, 32 << 20, 0, None
    )
    usage, _, _ = await asyncio.wait_for(sender._docker_sample(HungDocker(), target), 2)
    assert usage.cpu_seconds is None and usage.rss_bytes is None
