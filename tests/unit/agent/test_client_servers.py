"""The agent's server client with several server addresses: a dead one is skipped, and the client
stays on the one that answers."""

from __future__ import annotations

import socket

import aiohttp
import pytest
from aiohttp import web

from moorage.agent.client import ServerClient, ServerError
from moorage.model.messages import HeartbeatAnswer


def dead_address() -> str:
    """An address where nothing listens (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def live_server(status: int = 200) -> tuple[web.AppRunner, str, list[str]]:
    seen: list[str] = []

    async def heartbeat(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        if status != 200:
            return web.json_response({"message": "no leader"}, status=status)
        return web.json_response({"interval": 2.5, "ttl": 8})

    app = web.Application()
    app.router.add_post("/v1/nodes/{name}/heartbeat", heartbeat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}", seen


async def test_a_dead_first_server_is_skipped_and_the_live_one_kept() -> None:
    runner, live, seen = await live_server()
    try:
        async with aiohttp.ClientSession() as session:
            client = ServerClient(session, [dead_address(), live + "/"])
            assert client.last_contact is None
            assert await client.heartbeat("n1") == HeartbeatAnswer(interval=2.5, ttl=8.0)
            assert client.base == live and client.last_contact is not None
            assert await client.heartbeat("n1") == HeartbeatAnswer(
                interval=2.5, ttl=8.0
            )  # straight to the live one
            assert seen == ["", ""]  # the node is known by its certificate, never a header
    finally:
        await runner.cleanup()


async def test_a_server_answering_503_is_skipped_too() -> None:
    sick, sick_url, sick_seen = await live_server(status=503)
    well, well_url, _ = await live_server()
    try:
        async with aiohttp.ClientSession() as session:
            client = ServerClient(session, [sick_url, well_url])
            assert await client.heartbeat("n1") == HeartbeatAnswer(interval=2.5, ttl=8.0)
            assert client.base == well_url and len(sick_seen) == 1
    finally:
        await sick.cleanup()
        await well.cleanup()


async def test_when_no_server_answers_the_error_names_the_last_one_tried() -> None:
    first, second = dead_address(), dead_address()
    async with aiohttp.ClientSession() as session:
        client = ServerClient(session, [first, second])
        with pytest.raises(ServerError) as caught:
            await client.heartbeat("n1")
    assert caught.value.status == 0 and second in str(caught.value)
    assert client.last_contact is None


async def test_other_errors_are_the_answer_and_do_not_move_to_another_server() -> None:
    runner, live, _ = await live_server()
    try:
        async with aiohttp.ClientSession() as session:
            client = ServerClient(session, [live, dead_address()])
            with pytest.raises(ServerError) as caught:
                await client.taskdef("nope", 1)  # no such route there: a plain-text 404
            assert caught.value.status == 404 and client.base == live
    finally:
        await runner.cleanup()
