"""Where etcd is and how to reach it: `EtcdConfig` (and its URL form, `parse_url`), and one
gRPC channel per endpoint with the stubs of etcd's services over it (`Endpoint`)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import grpc
from aetcd import rpc

MAX_TXN_OPS = 128  # etcd's --max-txn-ops default
MAX_REQUEST_BYTES = 1_572_864  # etcd's --max-request-bytes default (1.5 MiB)
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", -1),  # a range or a watch batch can be large
    ("grpc.keepalive_time_ms", 10_000),  # a silent member is found by pings (etcd allows >= 5 s)
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.max_pings_without_data", 0),  # a quiet watch stream keeps being pinged
    ("grpc.initial_reconnect_backoff_ms", 100),  # a restarted member is found again quickly
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
]


@dataclass(frozen=True, slots=True)
class EtcdConfig:
    """Where etcd is and how to reach it (`parse_url` reads the URL form)."""

    endpoints: tuple[str, ...]  # http://host:port, https://host:port, or host:port (TLS if ca/cert)
    namespace: str = ""  # prepended to every key
    ca: Path | None = None  # PEM: the CA of the members' certificates (else the system's roots)
    cert: Path | None = None  # PEM: our client certificate (etcd --client-cert-auth), with key
    key: Path | None = None
    timeout: float = 5.0  # each call's deadline, failovers included
    max_txn_ops: int = MAX_TXN_OPS  # the members' --max-txn-ops
    max_request_bytes: int = MAX_REQUEST_BYTES  # the members' --max-request-bytes

    def __post_init__(self) -> None:
        if not self.endpoints:
            raise ValueError("no etcd endpoint given")
        if (self.cert is None) != (self.key is None):
            raise ValueError("a client certificate needs its key, and a key its certificate")
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")
        for endpoint in self.endpoints:
            self.target(endpoint)

    def target(self, endpoint: str) -> tuple[str, bool]:
        """`host:port` for gRPC, and whether it is reached over TLS."""
        scheme, sep, rest = endpoint.rpartition("://")
        if scheme not in ("http", "https", "") or not rest or "/" in rest or ":" not in rest:
            raise ValueError(f"not an etcd endpoint: {endpoint!r} (http(s)://host:port)")
        tls = scheme == "https" or (not sep and (self.ca is not None or self.cert is not None))
        return rest, tls


def parse_url(url: str) -> EtcdConfig:
    """`etcd://h1:2379,h2:2379/namespace` (plain) or `etcds://…` (TLS), with the query
    parameters `ca`, `cert`, `key` (PEM file paths) and `timeout` (seconds)."""
    parts = urlsplit(url)
    if parts.scheme not in ("etcd", "etcds"):
        raise ValueError(f"not an etcd URL: {url!r} (etcd://host:port,… or etcds://…)")
    query = {name: values[-1] for name, values in parse_qs(parts.query).items()}
    unknown = set(query) - {"ca", "cert", "key", "timeout"}
    if unknown:
        raise ValueError(f"unknown etcd URL parameter(s): {', '.join(sorted(unknown))}")
    if parts.scheme == "etcd" and query.keys() & {"ca", "cert", "key"}:
        raise ValueError("ca, cert and key are TLS files: use etcds://")
    scheme = "https" if parts.scheme == "etcds" else "http"
    hosts = [host for host in parts.netloc.split(",") if host]
    namespace = unquote(parts.path)
    return EtcdConfig(
        tuple(f"{scheme}://{host}" for host in hosts),
        namespace="" if namespace == "/" else namespace,
        ca=Path(query["ca"]) if "ca" in query else None,
        cert=Path(query["cert"]) if "cert" in query else None,
        key=Path(query["key"]) if "key" in query else None,
        timeout=float(query.get("timeout", 5.0)),
    )


class Endpoint:
    """One member: its channel and the stubs over it (the stubs are untyped: `Any`)."""

    def __init__(self, url: str, channel: grpc.aio.Channel) -> None:
        self.url = url
        self.channel = channel
        self.kv: Any = rpc.KVStub(channel)
        self.watch: Any = rpc.WatchStub(channel)
        self.lease: Any = rpc.LeaseStub(channel)

    async def connected(self, timeout: float) -> bool:
        """Whether the channel is (or within timeout becomes) READY; False as soon as it
        fails to connect. A write goes out only then: one that did not was never sent."""
        ready, failed = grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.TRANSIENT_FAILURE
        try:
            async with asyncio.timeout(timeout):
                state = self.channel.get_state(try_to_connect=True)
                while state is not ready:
                    if state in (failed, grpc.ChannelConnectivity.SHUTDOWN):
                        return False
                    await self.channel.wait_for_state_change(state)
                    state = self.channel.get_state(try_to_connect=True)
                return True
        except TimeoutError:
            return False


def channel(target: str, tls: bool, config: EtcdConfig) -> grpc.aio.Channel:
    if not tls:
        return grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=config.ca.read_bytes() if config.ca else None,
        private_key=config.key.read_bytes() if config.key else None,
        certificate_chain=config.cert.read_bytes() if config.cert else None,
    )
    return grpc.aio.secure_channel(target, credentials, options=_CHANNEL_OPTIONS)
