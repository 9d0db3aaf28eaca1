"""Every route declares who may call it, and nobody without credentials gets past it.

The server's real route table is built in-process over the in-memory store (ACLs on), with a
service, a task, a node, a volume, a secret, a KV key, a registration and alert rules in it,
and both of its sides are served (the users' port and the nodes' cluster port, here without
TLS: a caller presents no certificate); then every route is called without credentials (and
with credentials of the wrong kind): each non-open one answers 401 or 403 (a listing filtered
item by item answers an empty list), and the store's revision never moves.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from moorage import ops
from moorage.controllers.alerts import AlertLoop
from moorage.controllers.liveness import Heartbeats
from moorage.metrics.tsdb import TimeSeriesStore, TsdbConfig
from moorage.model import Node, Task, parse_specs
from moorage.model.acl import ALLOW_ALL
from moorage.model.volume import VolumeCreate
from moorage.ops.identity import Identities
from moorage.pki import client_context, load_or_create_authority
from moorage.server.acl import AclGuard
from moorage.server.auth import Gate, RouteError
from moorage.server.exposition import Internals
from moorage.server.join import JoinGuard
from moorage.server.routes import OPEN, AclAuth, Route, RouteTable
from moorage.server.wiring import Parts, api_routes, build_app
from moorage.state import kinds
from moorage.testing.state import World, memory_state

JOIN = "the-join-token"
# The routes anyone may call: adding one here is a decision, not an accident.
EXPECTED_OPEN = {
    ("GET", "/v1/ca"),  # on both sides: the CA certificate is public
    ("GET", "/"),
    ("GET", "/ui"),
    ("GET", "/ui/"),
    ("GET", "/ui/static/"),
    ("GET", "/v1/status"),
    ("GET", "/v1/openapi.json"),
    ("GET", "/v1/status/leader"),
    ("GET", "/v1/status/peers"),
    ("GET", "/v1/agent/self"),
    ("GET", "/v1/catalog/datacenters"),
    ("POST", "/v1/acl/bootstrap"),
    ("PUT", "/v1/acl/bootstrap"),
    ("GET", "/v1/acl/token/self"),
}
SAMPLES = [  # a path parameter after these segments names something that exists
    (r"/v1/nodes/\{name\}", "n1"),
    (r"/v1/volumes/\{name\}", "data"),
    (r"/v1/secrets/\{name\}", "db"),
    (r"/v1/event/fire/\{name\}", "deploy"),
    (r"/v1/alerts/rules/\{name\}", "cpu"),
    (r"/v1/alerts/notifiers/\{name\}", "hook"),
    (r"/v1/acl/policy/\{name\}", "app"),
    (r"/v1/snapshots/\{volume\}", "data"),
    (r"\{key:\.\*\}", "app/x"),
    (r"/v1/agent/service/deregister/\{id\}", "pg-1"),
    (r"/v1/nodes/\{name\}", "n1"),
    (r"/v1/registrations/\{id\}", "pg-1"),
    (r"\{check\}", "pg-ttl"),
    (r"/v1/tasks/\{id\}", "web-1"),
    (r"\{container\}", "app"),
    (r"\{target\}", "web"),
    (r"\{family\}", "web"),
    (r"\{revision\}", "1"),
    (r"\{[a-z]+\}", "web"),
]


def sample(path: str) -> str:
    for pattern, value in SAMPLES:
        while re.search(pattern, path):
            match = re.search(pattern, path)
            assert match is not None
            found = match.group(0)
            path = path.replace(found, re.sub(r"\{[^}]*\}", value, found), 1)
    return path


async def seed(world: World, tmp_path: Path) -> None:
    volumes = ops.Volumes(world.cache, world.writer, world.clock, ops.NoAgents())
    services = ops.Services(world.cache, world.writer, world.clock, volumes)
    spec = "service: web\ncontainers: [{name: app, command: [sleep, '9'], health: {ttl: 9s}}]\n"
    await services.deploy(parse_specs(spec), ALLOW_ALL)
    task = Task(
        id="web-1",
        service="web",
        family="web",
        revision=1,
        node="n1",
        created_at=1.0,
        updated_at=1.0,
    )
    node = Node(name="n1", cpu=1024, memory=1024, agent_addr="127.0.0.1:1")
    await world.writer.commit([], [kinds.TASK.put(task), kinds.NODE.put(node)])
    await volumes.create(VolumeCreate(name="data", driver="shared"))
    box = ops.SecretBox.load(tmp_path)
    await ops.Secrets(world.cache, world.writer, box, world.clock).set("db", "s3cret")
    await ops.Kv(world.cache, world.writer).put("app/x", b"1", 0, None)
    registration = {"ID": "pg-1", "Name": "pg", "Check": {"CheckID": "pg-ttl", "TTL": "9s"}}
    registrations = ops.Registrations(world.cache, world.writer, world.clock)
    await registrations.register(registration, "n1", "false", ALLOW_ALL)
    alerts = ops.Alerts(world.cache, world.writer, world.clock)
    rules = "rules: [{name: cpu, query: {metric: task_cpu_percent}, op: '>', value: 80}]\n"
    await alerts.apply_rules(rules + "notifiers: [{name: hook, url: 'http://127.0.0.1:1/'}]\n")
    await ops.Acl(world.cache, world.writer, world.clock, True).set_policy({"Name": "app"})


Served = tuple[World, list[Route], dict[str, TestClient[Any, Any]]]
SIDES = ("api", "cluster")


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    async with memory_state() as world, aiohttp.ClientSession() as session:
        await seed(world, tmp_path)
        authority = load_or_create_authority(tmp_path / "tls")
        identities = Identities(world.cache, world.writer, world.clock, authority)
        await identities.keep_join_token(JOIN)
        tsdb = TimeSeriesStore(tmp_path / "metrics.db", TsdbConfig(), world.clock)
        acl = ops.Acl(world.cache, world.writer, world.clock, enabled=True)
        loop = AlertLoop(world.cache, world.writer, lambda n, x: None, lambda: tsdb, world.clock)
        parts = Parts(
            cache=world.cache,
            writer=world.writer,
            clock=world.clock,
            session=session,
            data_dir=tmp_path,
            relay_tls=client_context(authority.path),
            metrics=tsdb,
            heartbeats=Heartbeats(),
            alerts=loop,
            acl=acl,
            identities=identities,
            internals=Internals(),
            advertise="127.0.0.1:7070",
            ca_pem=authority.pem,
        )
        routes = api_routes(parts)
        gate = Gate(
            JoinGuard(identities.join_token_digest),
            AclGuard(world.cache, acl),
            world.cache,
            identities.speaks_for,
        )
        apps = {side: build_app(routes, gate, world.cache, parts.internals, side) for side in SIDES}
        async with (
            TestClient(TestServer(apps["api"])) as api,
            TestClient(TestServer(apps["cluster"])) as cluster,
        ):
            yield world, routes, {"api": api, "cluster": cluster}
        tsdb.close()


def expected(route: Route) -> set[int]:
    if route.auth.kind == "join":
        return {401}
    if route.auth.kind == "node":
        return {403}
    if isinstance(route.auth, AclAuth) and route.auth.mode == "filtered":
        return {200}
    return {403}


async def call(
    clients: dict[str, TestClient[Any, Any]], route: Route, headers: dict[str, str]
) -> Any:
    path = sample(route.path)
    client = clients[route.side]
    async with client.request(route.method, path, json={}, headers=headers) as answer:
        body = await answer.read()
        return answer.status, body


async def test_every_route_declares_its_auth_and_the_open_ones_are_known(
    served: Served,
) -> None:
    _world, routes, _clients = served
    assert all(route.auth.kind in ("open", "join", "node", "acl") for route in routes)
    opened = {(r.method, r.path) for r in routes if r.auth is OPEN}
    assert opened == EXPECTED_OPEN
    assert len({(r.method, r.path, r.side) for r in routes}) == len(routes)
    nodes = {r.side for r in routes if r.auth.kind in ("join", "node")}
    assert nodes == {"cluster"}  # nodes never reach the users' port, nor users theirs


@pytest.mark.parametrize(
    "headers",
    [
        {},  # no credentials at all
        {"X-Moorage-Token": "made-up", "Authorization": "Bearer made-up"},  # unknown ones
    ],
    ids=["none", "unknown"],
)
async def test_no_route_but_the_open_ones_lets_a_stranger_in(
    served: Served, headers: dict[str, str]
) -> None:
    world, routes, clients = served
    revision = world.cache.revision
    stored = await world.store.revision()
    checked = 0
    for route in routes:
        if route.auth is OPEN:
            continue
        status, body = await call(clients, route, headers)
        wanted = expected(route) if not headers or route.auth.kind != "acl" else {403}
        assert status in wanted, (route.method, route.path, status, body[:200])
        if status == 200:
            assert body in (b"{}", b"[]"), (route.path, body[:200])  # filtered to nothing
        assert (world.cache.revision, await world.store.revision()) == (revision, stored), route
        checked += 1
    assert checked > 80


async def test_the_join_token_opens_only_the_join(served: Served) -> None:
    world, routes, clients = served
    join = {"Authorization": f"Bearer {JOIN}"}
    for route in routes:
        if route.auth.kind in ("open", "join"):
            continue
        status, body = await call(clients, route, join)
        assert status == 403, (route.method, route.path, status, body[:200])
    # ... and a certificate for a new node (the CSR checked, the name bound to its key)
    from moorage.pki import key_and_csr

    _key, csr = key_and_csr("node", "n9", ["10.0.0.9"])
    body = {"name": "n9", "csr": csr.decode()}
    async with clients["cluster"].post("/v1/join", json=body, headers=join) as answer:
        assert answer.status == 200 and "BEGIN CERTIFICATE" in (await answer.json())["certificate"]
    assert world.cache.items(kinds.IDENTITY)["n9"].serials
    _other_key, other = key_and_csr("node", "n9", [])
    body = {"name": "n9", "csr": other.decode()}
    async with clients["cluster"].post("/v1/join", json=body, headers=join) as answer:
        assert answer.status == 409  # another key for a name that joined: refused


async def handler(request: web.Request) -> web.Response:
    return web.json_response(True)


def test_a_route_cannot_be_declared_without_auth() -> None:
    table = RouteTable()
    with pytest.raises(TypeError):
        table.get("/v1/x", "no auth")  # type: ignore[call-arg]


def test_a_duplicate_route_fails_at_startup() -> None:
    table = RouteTable()
    table.get("/v1/x", "one", auth=OPEN)(handler)
    table.get("/v1/x", "the same again", auth=OPEN)(handler)
    gate = Gate(JoinGuard(lambda: None), None)  # type: ignore[arg-type]
    with pytest.raises(RouteError, match="GET /v1/x is declared twice"):
        gate.install(web.Application(), table.routes)


def test_a_route_added_behind_the_tables_back_fails_at_startup() -> None:
    table = RouteTable()
    table.get("/v1/x", "declared", auth=OPEN)(handler)
    gate = Gate(JoinGuard(lambda: None), None)  # type: ignore[arg-type]
    app = web.Application()
    gate.install(app, table.routes)
    app.router.add_get("/v1/sneaky", handler)
    with pytest.raises(RouteError, match="/v1/sneaky declares no auth"):
        gate.verify(app)


async def test_the_published_document_names_each_routes_auth(served: Served) -> None:
    _world, _routes, clients = served
    async with clients["api"].get("/v1/openapi.json") as answer:
        document = await answer.json()
    operations = [op for path in document["paths"].values() for op in path.values()]
    assert operations and all("x-moorage-auth" in op for op in operations)
    scale = document["paths"]["/v1/services/{name}/scale"]["post"]
    assert scale["security"] == [{"aclToken": []}, {}]
    assert "/v1/tasks/{id}/status" not in document["paths"]  # the cluster port's, not users'


async def test_traversal_in_a_path_parameter_is_refused_on_every_route(served: Served) -> None:
    world, routes, clients = served
    revision = world.cache.revision
    refused = 0
    for route in routes:
        names = re.findall(r"\{([a-z]+)(?::[^}]*)?\}", route.path)
        if not names or route.directory is not None or "key" in names:
            continue
        # `..%2F..%2Fetc`: a client does not fold it away, the server decodes it into the
        # parameter (what an attacker sends to walk out of a directory)
        path = re.sub(r"\{([a-z]+)\}", "..%2F..%2Fetc", route.path)
        url = URL(path, encoded=True)
        async with clients[route.side].request(route.method, url, json={}) as answer:
            assert answer.status in (400, 404), (route.method, route.path, answer.status)
            if answer.status == 400:
                assert (await answer.json())["code"] == "invalid_path"
                refused += 1
    assert world.cache.revision == revision
    assert refused > 50  # most reach the check: the router does not stop `%2F` itself
