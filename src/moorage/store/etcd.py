"""The etcd engine of the Store protocol: etcd v3's gRPC API, several endpoints, TLS.

    EtcdStore ──▶ endpoint 1: grpc.aio channel ──┐  one endpoint is current; a call that meets
             ├──▶ endpoint 2: grpc.aio channel ──┤  UNAVAILABLE or DEADLINE_EXCEEDED moves on to
             └──▶ endpoint 3: grpc.aio channel ──┘  the next one (and retries, when it may)

    await EtcdStore.open(["https://h1:2379", "https://h2:2379"], ca=ca, cert=cert, key=key,
                         namespace="/moorage-prod")
    await EtcdStore.from_url("etcds://h1:2379,h2:2379/moorage-prod?ca=/etc/moorage/ca.pem&…")

aetcd's own Client reaches one endpoint, without TLS; so its generated protobuf/gRPC stubs
(`aetcd.rpc`) run over channels of our own, one per endpoint, plain or TLS with a client
certificate. Every key lives under `namespace` (prepended verbatim: end it with "/" or pick
one no other namespace starts with), so several clusters or test runs share one etcd.

Failover. Each call has a deadline (`timeout`, failovers included). Reads, compaction and
lease calls are idempotent: on UNAVAILABLE / DEADLINE_EXCEEDED they go to the next endpoint
and try again (a lease grant too: its ID is chosen here, so a re-sent grant that finds its
lease existing knows it is its own; a re-sent revoke may report LeaseNotFound for the lease
it revoked: gone either way). When the deadline passes: `Unavailable`.

Writes whose outcome is unknown. A write goes out only on a READY channel, so a write that
could not connect anywhere was not sent (`Unavailable`, safe to retry). One that was sent and
then lost its connection may have been applied: re-sending a blind put or an unguarded txn
could apply it twice (two revisions, two events, a counter bumped twice), so it raises
`Indeterminate` and the caller re-reads. The exception is a txn that guards itself: a
`mod ==` compare (a revision > 0) on a key its success branch writes, and no writes in its
failure branch. If the lost attempt had applied, that compare fails now, so a re-sent one
that succeeds is the only application; one that fails cannot tell whose write moved the key
and raises Indeterminate.

Transactions. etcd refuses more than --max-txn-ops (128) compares or ops in one branch, and
requests over --max-request-bytes (1.5 MiB): such a txn raises `TxnTooLarge` before it is
sent (splitting it would lose atomicity); pass the server's flags as `max_txn_ops` and
`max_request_bytes`. etcd also refuses a branch that puts one key twice or puts a key it
deletes (StoreError, before sending), and a `value` compare on a missing key always fails.

Watches: one gRPC stream each, created at start - 1 so that etcd's compaction check
(start < compaction) matches the protocol's (start <= compaction); events below the start
are dropped. A dropped stream is re-created (on the next endpoint, forever, with backoff)
from the revision after the last one delivered: etcd sends whole revisions per response, so
nothing is lost or repeated. Leases: etcd TTLs are whole seconds (rounded up, at least 1;
etcd raises them to its own minimum, 1.5 election timeouts: 2 s by default).

Beside it: `_etcd_endpoints.py` (the config, its URL form, a channel per endpoint) and
`_etcd_codec.py` (protocol values ↔ etcd's messages, the limits checked; no I/O).
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
from aetcd import rpc

from ._etcd_codec import Codec
from ._etcd_endpoints import (
    MAX_REQUEST_BYTES,
    MAX_TXN_OPS,
    Endpoint,
    EtcdConfig,
    channel,
    parse_url,
)
from .base import (
    Compacted,
    Compare,
    Delete,
    Get,
    Indeterminate,
    KeyValue,
    LeaseNotFound,
    Op,
    Put,
    StoreClosed,
    StoreError,
    TxnResult,
    Unavailable,
    WatchEvent,
)

__all__ = ["MAX_REQUEST_BYTES", "MAX_TXN_OPS", "EtcdConfig", "EtcdError", "EtcdStore", "parse_url"]

log = logging.getLogger(__name__)
T = TypeVar("T")
Send = Callable[[Endpoint, float], Awaitable[T]]  # one attempt on one endpoint, its timeout

_FAILOVER = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
_TLS_HINT = (
    "a member started with --client-cert-auth drops connections that bring no client"
    " certificate, or one its --trusted-ca-file did not sign (grpc: TSI_DATA_CORRUPTED)"
)


class EtcdError(StoreError):
    """etcd refused a request (not a lost connection): `.code` is the gRPC status."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"etcd: {code.name}: {details}")
        self.code = code


class _Dropped(Exception):
    """An attempt ended without an answer, as UNAVAILABLE would (a stream closed early)."""


def _guarded(compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op]) -> bool:
    """Whether a write txn may be re-sent after an unknown outcome (see the module docstring)."""
    if any(not isinstance(op, Get) for op in failure):
        return False
    written = {op.key for op in success if isinstance(op, Put | Delete)}
    return any(
        c.target == "mod" and c.op == "==" and isinstance(c.value, int) and c.value > 0
        for c in compares
        if c.key in written
    )


def _cancelled() -> bool:
    """Whether the running task is being cancelled (not just seeing a closed channel's calls)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class EtcdStore:
    """`Store` over an etcd v3 cluster. Open with `await EtcdStore.open(endpoints, ...)` or
    `await EtcdStore.from_url(url)`."""

    def __init__(self, config: EtcdConfig) -> None:
        self._config = config
        self._codec = Codec(config.namespace, config.max_txn_ops, config.max_request_bytes)
        self._endpoints: list[Endpoint] = []
        for endpoint in config.endpoints:
            target, tls = config.target(endpoint)
            url = f"{'https' if tls else 'http'}://{target}"
            self._endpoints.append(Endpoint(url, channel(target, tls, config)))
        self._current = 0  # the endpoint calls go to until it fails
        self._closed = False
        self._watches: set[Any] = set()  # open watch streams, cancelled by close()

    @classmethod
    async def open(
        cls,
        endpoints: Sequence[str],
        *,
        namespace: str = "",
        ca: Path | str | None = None,
        cert: Path | str | None = None,
        key: Path | str | None = None,
        timeout: float = 5.0,
        max_txn_ops: int = MAX_TXN_OPS,
        max_request_bytes: int = MAX_REQUEST_BYTES,
    ) -> EtcdStore:
        """Connect to the first endpoint that answers (`Unavailable` if none does in time)."""
        config = EtcdConfig(
            tuple(endpoints),
            namespace,
            ca=Path(ca) if ca is not None else None,
            cert=Path(cert) if cert is not None else None,
            key=Path(key) if key is not None else None,
            timeout=timeout,
            max_txn_ops=max_txn_ops,
            max_request_bytes=max_request_bytes,
        )
        return await cls.connect(config)

    @classmethod
    async def from_url(cls, url: str) -> EtcdStore:
        """`etcd://h1:2379,h2:2379/namespace` or `etcds://…?ca=…&cert=…&key=…` (`parse_url`)."""
        return await cls.connect(parse_url(url))

    @classmethod
    async def connect(cls, config: EtcdConfig) -> EtcdStore:
        store = cls(config)
        try:
            await store.revision()  # fail here on a wrong address, CA or certificate
        except Unavailable as exc:
            await store.close()
            if not any(config.target(endpoint)[1] for endpoint in config.endpoints):
                raise
            raise Unavailable(f"{exc}; over TLS, check ca, cert and key: {_TLS_HINT}") from None
        except BaseException:
            await store.close()
            raise
        return store

    # ---- calls, failover -----------------------------------------------------------------
    async def _rpc(
        self, send: Send[T], *, write: bool = False, retry: bool = True, lease: int = 0
    ) -> tuple[T, bool]:
        """`send` on the current endpoint, moving on to the next one on UNAVAILABLE or
        DEADLINE_EXCEEDED while the deadline allows. A write waits for a READY channel, and
        one sent then lost is re-sent only with `retry`. Returns the answer, and whether an
        earlier write attempt went out unanswered (possibly applied)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._config.timeout
        uncertain, tried, pause, why = False, 0, 0.05, "no attempt"
        while True:
            self._check_open()
            index = self._current
            endpoint = self._endpoints[index]
            left = deadline - loop.time()
            if left <= 0:
                if uncertain:  # a re-sendable write went out once, unanswered
                    raise Indeterminate(f"a write went out, then {why}")
                raise Unavailable(
                    f"no etcd endpoint answered within {self._config.timeout:g}s ({why})"
                )
            share = left / (len(self._endpoints) - tried)  # each endpoint left in this round
            try:
                if not write or await endpoint.connected(share):
                    return await send(endpoint, left if write else share), uncertain
                why = f"{endpoint.url}: cannot connect"
            except (grpc.aio.AioRpcError, TimeoutError, _Dropped) as exc:
                self._check_open()
                if isinstance(exc, grpc.aio.AioRpcError) and exc.code() not in _FAILOVER:
                    raise self._refused(exc.code(), str(exc.details()), lease) from None
                why = f"{endpoint.url}: {_describe(exc)}"
                if write and not retry:
                    raise Indeterminate(f"a write went out, then {why}") from None
                uncertain |= write
            except asyncio.CancelledError:
                if self._closed and not _cancelled():  # the channel closed under the call
                    raise StoreClosed("store is closed") from None
                raise
            except Exception:
                self._check_open()  # a call on a channel closed meanwhile: StoreClosed
                raise
            self._fail_over(index)
            tried += 1
            if tried == len(self._endpoints):  # a whole round failed: pause, then again
                tried = 0
                await asyncio.sleep(min(pause, max(deadline - loop.time(), 0)))
                pause = min(pause * 2, 0.5)

    async def _call(self, send: Send[T], **policy: Any) -> T:
        return (await self._rpc(send, **policy))[0]

    def _refused(self, code: grpc.StatusCode, details: str, lease: int) -> StoreError:
        """etcd's errors in the protocol's terms: the one place they are converted."""
        if code is grpc.StatusCode.NOT_FOUND and lease:
            return LeaseNotFound(lease)
        return EtcdError(code, details)

    def _fail_over(self, index: int) -> None:
        if self._current == index:
            self._current = (index + 1) % len(self._endpoints)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed("store is closed")

    # ---- reads ---------------------------------------------------------------------------
    async def get(self, key: str) -> KeyValue | None:
        request = rpc.RangeRequest(key=self._codec.key(key))
        answer = await self._call(lambda ep, timeout: ep.kv.Range(request, timeout=timeout))
        return self._codec.kv(answer.kvs[0]) if answer.kvs else None

    async def range(self, prefix: str) -> tuple[list[KeyValue], int]:
        start, end = self._codec.span(prefix)
        request = rpc.RangeRequest(key=start, range_end=end)
        answer = await self._call(lambda ep, timeout: ep.kv.Range(request, timeout=timeout))
        return [self._codec.kv(kv) for kv in answer.kvs], int(answer.header.revision)

    async def revision(self) -> int:
        """A one-key read (cheap whatever the keyspace): its header carries the revision."""
        request = rpc.RangeRequest(key=self._codec.prefix or b"\0", keys_only=True, limit=1)
        answer = await self._call(lambda ep, timeout: ep.kv.Range(request, timeout=timeout))
        return int(answer.header.revision)

    # ---- writes --------------------------------------------------------------------------
    async def put(self, key: str, value: bytes, lease: int = 0) -> int:
        return (await self.txn([], [Put(key, value, lease)])).revision

    async def delete(self, key: str, prefix: bool = False) -> int:
        return (await self.txn([], [Delete(key, prefix)])).revision

    async def txn(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        self._check_open()
        request = self._codec.txn_request(compares, success, failure)
        reads_only = all(isinstance(op, Get) for op in (*success, *failure))
        guarded = not reads_only and _guarded(compares, success, failure)
        leases = sorted({op.lease for op in (*success, *failure) if isinstance(op, Put)} - {0})
        try:
            answer, uncertain = await self._rpc(
                lambda ep, timeout: ep.kv.Txn(request, timeout=timeout),
                write=not reads_only,
                retry=reads_only or guarded,
                lease=leases[0] if leases else 0,
            )
        except LeaseNotFound:
            if len(leases) < 2:
                raise
            raise LeaseNotFound(await self._missing_lease(leases)) from None
        if uncertain and not answer.succeeded:
            raise Indeterminate(
                "a guarded txn was re-sent after a lost answer and its compare failed"
            )
        return TxnResult(
            answer.succeeded, int(answer.header.revision), self._codec.responses(answer)
        )

    async def _missing_lease(self, leases: list[int]) -> int:
        """Which of a txn's leases etcd did not find (its error does not say)."""
        for lease in leases:
            if await self._ttl(lease) < 0:
                return lease
        return leases[0]

    async def _ttl(self, lease: int) -> int:
        """A lease's remaining seconds; -1 when etcd does not know it."""
        request = rpc.LeaseTimeToLiveRequest(ID=lease)
        answer = await self._call(
            lambda ep, timeout: ep.lease.LeaseTimeToLive(request, timeout=timeout)
        )
        return int(answer.TTL)

    async def compact(self, revision: int) -> None:
        request = rpc.CompactionRequest(revision=revision, physical=True)
        try:
            await self._call(lambda ep, timeout: ep.kv.Compact(request, timeout=timeout))
        except EtcdError as exc:
            if exc.code is not grpc.StatusCode.OUT_OF_RANGE:
                raise
            current = await self.revision()
            if revision > current:
                raise StoreError(f"cannot compact {revision}: the store is at {current}") from None
            # else at or below an earlier compaction: nothing is left to forget

    # ---- watches -------------------------------------------------------------------------
    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[WatchEvent]:
        self._check_open()
        start, end = self._codec.span(prefix)
        wanted = start_revision if start_revision > 0 else await self.revision() + 1
        while True:
            call, endpoint = await self._watch_stream(start, end, wanted)
            try:
                while (answer := await self._watch_answer(call, wanted)) is not None:
                    for event in answer.events:
                        if event.kv.mod_revision >= wanted:
                            yield self._codec.event(event)
                    if answer.events:  # etcd sends whole revisions per answer
                        wanted = max(wanted, answer.events[-1].kv.mod_revision + 1)
            finally:
                call.cancel()
                self._watches.discard(call)
            self._fail_over(self._endpoints.index(endpoint))

    async def _watch_stream(self, start: bytes, end: bytes, wanted: int) -> tuple[Any, Endpoint]:
        """A created etcd watch from `wanted` - 1 (see the module docstring), on the first
        endpoint that takes it; tried again (with backoff) until one does or the store closes."""
        create = rpc.WatchCreateRequest(
            key=start,
            range_end=end,
            start_revision=max(wanted - 1, 1),
            prev_kv=True,
        )
        pause = 0.1
        while True:
            try:
                return await self._call(
                    lambda ep, timeout: self._create_watch(
                        ep, rpc.WatchRequest(create_request=create), timeout
                    )
                )
            except Unavailable as exc:
                log.warning("etcd watch from revision %d: %s; trying again", wanted, exc)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 2.0)

    async def _create_watch(
        self, endpoint: Endpoint, request: Any, timeout: float
    ) -> tuple[Any, Endpoint]:
        # A member cut off from its leader ends the stream (and the watch moves on).
        call = endpoint.watch.Watch(metadata=(("hasleader", "true"),))
        self._watches.add(call)
        try:
            async with asyncio.timeout(timeout):
                await call.write(request)
                answer = await call.read()
            if answer is grpc.aio.EOF or not answer.created:
                raise _Dropped("the watch stream ended before the watch was created")
        except BaseException:
            call.cancel()
            self._watches.discard(call)
            raise
        return call, endpoint

    async def _watch_answer(self, call: Any, wanted: int) -> Any:
        """The next answer of a watch stream; None when the stream dropped (watch again)."""
        try:
            answer = await call.read()
        except grpc.aio.AioRpcError as exc:
            self._check_open()
            if exc.code() in _FAILOVER:
                log.warning("etcd watch stream lost (%s); watching again", _describe(exc))
                return None
            raise EtcdError(exc.code(), str(exc.details())) from None
        except asyncio.CancelledError:
            if self._closed and not _cancelled():
                raise StoreClosed("store is closed") from None
            raise
        if answer is grpc.aio.EOF:
            self._check_open()
            return None
        if answer.compact_revision:
            raise Compacted(wanted, int(answer.compact_revision))
        if answer.canceled:
            raise StoreError(f"etcd cancelled the watch: {answer.cancel_reason}")
        return answer

    # ---- leases --------------------------------------------------------------------------
    async def lease_grant(self, ttl: float) -> int:
        """The lease ID is chosen here (63 random bits): a grant re-sent after a lost answer
        that finds it existing (FAILED_PRECONDITION) knows the lease is its own."""
        lease = secrets.randbelow(2**63 - 1) + 1
        request = rpc.LeaseGrantRequest(TTL=max(1, math.ceil(ttl)), ID=lease)
        try:
            await self._call(lambda ep, timeout: ep.lease.LeaseGrant(request, timeout=timeout))
        except EtcdError as exc:
            if exc.code is not grpc.StatusCode.FAILED_PRECONDITION:
                raise
        return lease

    async def lease_keepalive(self, lease: int) -> float:
        async def renew(endpoint: Endpoint, timeout: float) -> Any:
            call = endpoint.lease.LeaseKeepAlive(timeout=timeout)
            try:
                await call.write(rpc.LeaseKeepAliveRequest(ID=lease))
                answer = await call.read()
            finally:
                call.cancel()
            if answer is grpc.aio.EOF:
                raise _Dropped("the keepalive stream ended without an answer")
            return answer

        answer = await self._call(renew)
        if answer.TTL <= 0:  # etcd's answer for a lease it does not know
            raise LeaseNotFound(lease)
        return float(answer.TTL)

    async def lease_revoke(self, lease: int) -> None:
        request = rpc.LeaseRevokeRequest(ID=lease)
        await self._call(
            lambda ep, timeout: ep.lease.LeaseRevoke(request, timeout=timeout), lease=lease
        )

    # ---- lifecycle -----------------------------------------------------------------------
    async def close(self) -> None:
        """Pending watches end with StoreClosed, calls in flight too; then the channels go."""
        if self._closed:
            return
        self._closed = True
        for call in list(self._watches):
            call.cancel()
        self._watches.clear()
        for endpoint in self._endpoints:
            await endpoint.channel.close()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc) or "no answer before the deadline"
