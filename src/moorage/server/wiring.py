"""How the server's parts are put together: every route bound to the object that answers it,
and the two apps that serve them (the users' port and the nodes' cluster port)."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

from moorage import ops
from moorage.controllers.alerts import AlertLoop
from moorage.controllers.liveness import Heartbeats
from moorage.metrics.influx import InfluxPusher
from moorage.metrics.tsdb import TimeSeriesStore
from moorage.ops.identity import Identities
from moorage.state import StateCache, StateWriter

from . import (
    alerts,
    consul,
    events,
    exec,
    exposition,
    kv,
    logs,
    metrics,
    nodes,
    registrations,
    secrets,
    services,
    snapshots,
    status,
    tasks,
    tokens,
    ui,
    volumes,
)
from .agents import AgentRelay
from .auth import Gate
from .consul import INDEX
from .errors import error_middleware
from .exposition import Internals
from .routes import Route, RouteTable, Side


@dataclass
class Parts:
    """What the routes of one server share."""

    cache: StateCache
    writer: StateWriter
    clock: Callable[[], float]
    session: aiohttp.ClientSession
    data_dir: Path
    relay_tls: ssl.SSLContext  # the server's calls to agents: its certificate, the CA
    metrics: TimeSeriesStore
    heartbeats: Heartbeats
    alerts: AlertLoop
    acl: ops.Acl
    identities: Identities
    internals: Internals
    advertise: str  # HOST:PORT this server answers on (Consul's status/leader)
    ca_pem: bytes
    store_name: str = "sqlite"
    influx: InfluxPusher | None = None


def api_routes(parts: Parts) -> list[Route]:
    """Every route of the server (both sides), bound to the objects that answer them."""
    cache, writer, clock, session = parts.cache, parts.writer, parts.clock, parts.session
    relay = AgentRelay(cache, session, parts.relay_tls)
    volume_ops = ops.Volumes(cache, writer, clock, relay)
    task_ops = ops.Tasks(cache, writer, clock)
    box = ops.SecretBox.load(parts.data_dir)
    forward = parts.influx.offer if parts.influx is not None else None
    service_ops = ops.Services(cache, writer, clock, volume_ops)
    node_ops = ops.Nodes(cache, writer, clock, parts.heartbeats)
    found: list[Route] = []
    apis: list[tuple[RouteTable, object]] = [
        (services.routes, services.ServicesApi(service_ops, cache)),
        (nodes.routes, nodes.NodesApi(node_ops, parts.identities, cache)),
        (tasks.routes, tasks.TasksApi(task_ops, cache)),
        (events.routes, events.EventsApi(ops.Events(cache, writer, clock), cache)),
        (status.routes, status.StatusApi(cache, parts.store_name, lambda: found, parts.ca_pem)),
        (logs.routes, logs.LogsProxy(task_ops, session, parts.relay_tls)),
        (exec.routes, exec.ExecProxy(task_ops, session, parts.relay_tls)),
        (secrets.routes, secrets.SecretsApi(ops.Secrets(cache, writer, box, clock))),
        (consul.routes, consul.ConsulApi(cache, clock, parts.advertise)),
        (kv.routes, kv.KvApi(ops.Kv(cache, writer), cache)),
        (tokens.routes, tokens.TokensApi(parts.acl)),
        (
            registrations.routes,
            registrations.RegistrationsApi(ops.Registrations(cache, writer, clock), cache),
        ),
        (volumes.routes, volumes.VolumesApi(volume_ops, cache)),
        (
            snapshots.routes,
            snapshots.SnapshotsApi(
                ops.Snapshots(cache, writer, clock, relay), cache, session, relay
            ),
        ),
        (metrics.routes, metrics.MetricsApi(ops.Metrics(parts.metrics, clock, forward))),
        (alerts.routes, alerts.AlertsApi(ops.Alerts(cache, writer, clock, parts.alerts), cache)),
        (
            exposition.routes,
            exposition.ExpositionApi(parts.internals, lambda: parts.metrics, clock),
        ),
    ]
    for table, api in apis:
        found += table.bind(api)
    found += ui.routes.routes  # plain functions: nothing to bind
    return found


def build_app(
    routes: list[Route],
    gate: Gate,
    cache: StateCache,
    internals: Internals,
    side: Side = "api",
) -> web.Application:
    """The aiohttp app of one side: its routes installed once, their declared auth enforced."""
    middlewares = [internals.middleware, error_middleware, gate.middleware]
    # 8 MiB: an agent replaying its metrics buffer sends up to 5,000 points (~1 MB of JSON).
    app = web.Application(
        middlewares=middlewares,
        handler_args={"handler_cancellation": True},
        client_max_size=8 * 1024 * 1024,
    )

    async def consul_index(request: web.Request, response: web.StreamResponse) -> None:
        # Consul clients expect X-Consul-Index on every answer, errors included.
        if INDEX not in response.headers:
            response.headers[INDEX] = str(cache.index("*"))

    app.on_response_prepare.append(consul_index)
    gate.install(app, routes, side)
    gate.verify(app)
    return app
