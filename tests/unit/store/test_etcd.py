"""The etcd engine beyond the protocol suite: its URL form, namespaces, several endpoints, a
member killed under a watch, a member frozen under a write, compaction, transaction limits and
TLS with client certificates. Tests marked `etcd` run a real etcd (`/usr/bin/etcd`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from moorage.pki import key_and_csr, load_or_create_authority
from moorage.store import (
    Compacted,
    Compare,
    Delete,
    Get,
    Indeterminate,
    Put,
    StoreError,
    TxnTooLarge,
    Unavailable,
    WatchEvent,
)
from moorage.store._etcd_codec import Codec, prefix_end
from moorage.store.etcd import EtcdConfig, EtcdError, EtcdStore, parse_url
from moorage.testing.etcd import EtcdServer, MemberTls

from .conftest import require_etcd
from .test_protocol import Tap, keys

etcd = pytest.mark.etcd


# ---- the URL form and the endpoints (no etcd needed) -------------------------------------
def test_parse_url_reads_endpoints_namespace_and_tls_files() -> None:
    plain = parse_url("etcd://10.0.0.1:2379,10.0.0.2:2379/moorage-prod")
    assert plain.endpoints == ("http://10.0.0.1:2379", "http://10.0.0.2:2379")
    assert plain.namespace == "/moorage-prod" and plain.ca is None and plain.timeout == 5.0
    tls = parse_url("etcds://h1:2379,[::1]:2379/?ca=/etc/ca.pem&cert=/c.pem&key=/k.pem&timeout=2")
    assert tls.endpoints == ("https://h1:2379", "https://[::1]:2379")
    assert (tls.namespace, tls.ca, tls.cert, tls.key) == (
        "",
        Path("/etc/ca.pem"),
        Path("/c.pem"),
        Path("/k.pem"),
    )
    assert tls.timeout == 2.0
    assert [tls.target(e) for e in tls.endpoints] == [("h1:2379", True), ("[::1]:2379", True)]


@pytest.mark.parametrize(
    "url",
    [
        "http://h1:2379",  # not an etcd URL
        "etcd://h1:2379?ca=/ca.pem",  # TLS files on a plain URL
        "etcds://h1:2379?cert=/c.pem",  # a certificate without its key
        "etcd://h1:2379?password=x",  # an unknown parameter
        "etcd:///moorage",  # no endpoint
        "etcd://h1/moorage",  # no port
    ],
)
def test_parse_url_refuses_what_it_cannot_use(url: str) -> None:
    with pytest.raises(ValueError):
        parse_url(url)


def test_a_bare_endpoint_is_tls_when_tls_files_are_given() -> None:
    assert EtcdConfig(("h:2379",)).target("h:2379") == ("h:2379", False)
    assert EtcdConfig(("h:2379",), ca=Path("/ca")).target("h:2379") == ("h:2379", True)
    assert EtcdConfig(("http://h:2379",), ca=Path("/ca")).target("http://h:2379")[1] is False


def test_prefix_ranges_end_at_the_last_byte_plus_one() -> None:
    assert prefix_end(b"/t/") == b"/t0"
    assert prefix_end(b"a\xff\xff") == b"b"  # trailing 0xff bytes cannot grow: carry left
    assert prefix_end(b"\xff") == b"\0"  # nothing above it: to the end of the keyspace
    codec = Codec("/ns", 128, 1 << 20)
    assert codec.span("") == (b"/ns", b"/nt")  # the whole namespace
    assert Codec("", 128, 1 << 20).span("") == (b"\0", b"\0")  # the whole keyspace
    assert codec.span("/é") == ("/ns/é".encode(), "/ns/é".encode()[:-1] + b"\xaa")


# ---- fixtures --------------------------------------------------------------------------------
@pytest.fixture
def member(tmp_path: Path) -> Iterator[EtcdServer]:
    """An etcd member of this test's own, to kill, freeze or restart."""
    require_etcd()
    with EtcdServer(tmp_path / "etcd") as server:
        yield server


@pytest.fixture
async def shared(etcd_server: EtcdServer, etcd_namespace: str) -> AsyncIterator[EtcdStore]:
    store = await EtcdStore.open([etcd_server.endpoint], namespace=etcd_namespace)
    try:
        yield store
    finally:
        await store.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens there once the socket is closed


def shape(events: list[WatchEvent]) -> list[tuple[str, str, int]]:
    return [(e.type, e.kv.key, e.kv.mod_revision) for e in events]


# ---- namespaces ------------------------------------------------------------------------------
@etcd
async def test_namespaces_keep_stores_apart(etcd_server: EtcdServer, etcd_namespace: str) -> None:
    one = await EtcdStore.open([etcd_server.endpoint], namespace=f"{etcd_namespace}/one")
    two = await EtcdStore.open([etcd_server.endpoint], namespace=f"{etcd_namespace}/two")
    whole = await EtcdStore.open([etcd_server.endpoint])  # no namespace: sees both
    base = await one.revision()
    tap = Tap(two, "", base + 1)
    try:
        await one.put("/a", b"one")
        await two.put("/a", b"two")
        await one.put("/b", b"one")
        assert [(kv.key, kv.value) for kv in (await one.range(""))[0]] == [
            ("/a", b"one"),
            ("/b", b"one"),
        ]
        assert keys((await two.range("/"))[0]) == ["/a"]
        assert keys((await whole.range(etcd_namespace))[0]) == [
            f"{etcd_namespace}/one/a",
            f"{etcd_namespace}/one/b",
            f"{etcd_namespace}/two/a",
        ]
        assert await one.delete("", prefix=True) == base + 4  # the whole namespace, no more
        assert (await two.get("/a")) is not None
        assert shape(await tap.wait_for(1)) == [("put", "/a", base + 2)]
        await asyncio.sleep(0.1)
        assert len(tap.events) == 1  # the other namespace's writes never reached it
    finally:
        await tap.close()
        for store in (one, two, whole):
            await store.close()


# ---- several endpoints -----------------------------------------------------------------------
@etcd
async def test_a_dead_endpoint_is_skipped_for_reads_writes_and_watches(
    etcd_server: EtcdServer, etcd_namespace: str
) -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    # Built without open(), whose first read would move past the dead endpoint: the first
    # call here is a write, which is re-sent because it never went out.
    store = EtcdStore(EtcdConfig((dead, etcd_server.endpoint, dead), namespace=etcd_namespace))
    try:
        assert await store.put("/a", b"1") > 0
        base = await store.revision() - 1
        tap = Tap(store, "/", base + 1)
        assert (await store.txn([Compare.absent("/b")], [Put("/b", b"2")])).succeeded
        assert keys((await store.range("/"))[0]) == ["/a", "/b"]
        assert len(await tap.wait_for(2)) == 2
        await tap.close()
        assert time.monotonic() - started < 3  # refused connections are skipped at once
    finally:
        await store.close()
    live_first = await EtcdStore.open([etcd_server.endpoint, dead], namespace=etcd_namespace)
    try:
        assert (await live_first.get("/a")) is not None
    finally:
        await live_first.close()


async def test_no_live_endpoint_is_unavailable_within_the_timeout() -> None:
    started = time.monotonic()
    with pytest.raises(Unavailable) as caught:
        await EtcdStore.open([f"http://127.0.0.1:{closed_port()}"], timeout=0.5)
    assert time.monotonic() - started < 2
    assert isinstance(caught.value, ConnectionError)  # loops that retry on OSError retry
    assert "UNAVAILABLE" in str(caught.value)


# ---- a member killed, frozen, restarted ------------------------------------------------------
@etcd
async def test_a_watch_resumes_after_its_member_is_killed_and_restarted(
    member: EtcdServer,
) -> None:
    store = await EtcdStore.open([member.endpoint], namespace="/restart", timeout=10)
    base = await store.revision()
    tap = Tap(store, "/w/", base + 1)
    try:
        for i in range(3):
            await store.put(f"/w/{i}", b"before")
        await store.txn([], [Put("/w/x", b"1"), Put("/w/y", b"1")])  # two events, one revision
        assert len(await tap.wait_for(5)) == 5
        member.kill()  # SIGKILL under the running watch
        await asyncio.to_thread(member.start)  # same ports, same data
        for i in range(3, 6):  # written while the watch is (maybe still) reconnecting
            await store.put(f"/w/{i}", b"after")
        await store.txn([], [Put("/w/x", b"2"), Delete("/w/y")])
        events = await tap.wait_for(10)
        await asyncio.sleep(0.2)
        expected = [("put", f"/w/{i}", base + 1 + i) for i in range(3)]
        expected += [("put", "/w/x", base + 4), ("put", "/w/y", base + 4)]
        expected += [("put", f"/w/{i}", base + 2 + i) for i in range(3, 6)]
        expected += [("put", "/w/x", base + 8), ("delete", "/w/y", base + 8)]
        assert shape(tap.events) == expected  # nothing lost, nothing twice, in order
        assert events[-2].prev is not None and events[-2].prev.value == b"1"
    finally:
        await tap.close()
        await store.close()


@etcd
async def test_a_watch_that_reconnects_below_a_compaction_raises_compacted(
    member: EtcdServer,
) -> None:
    store = await EtcdStore.open([member.endpoint], timeout=10)
    base = await store.revision()
    watch = store.watch("/w/", base + 1)
    try:
        await store.put("/w/a", b"1")
        assert (await anext(watch)).kv.mod_revision == base + 1
        member.kill()
        await asyncio.to_thread(member.start)
        await store.put("/w/a", b"2")  # base+2: the watcher has not seen it
        await store.put("/w/a", b"3")
        await store.compact(base + 3)
        with pytest.raises(Compacted) as caught:
            await asyncio.wait_for(anext(watch), 10)  # base+2 is gone: not skipped silently
        assert (caught.value.requested, caught.value.compact_revision) == (base + 2, base + 3)
    finally:
        await watch.aclose()
        await store.close()


@etcd
async def test_a_write_whose_answer_is_lost_raises_indeterminate(member: EtcdServer) -> None:
    store = await EtcdStore.open([member.endpoint], namespace="/frozen", timeout=1)
    await store.put("/counter", b"0")
    seen = await store.get("/counter")
    assert seen is not None
    assert member.popen is not None
    os.kill(member.popen.pid, signal.SIGSTOP)  # the member takes the request, never answers
    try:
        with pytest.raises(Indeterminate):
            await store.put("/counter", b"1")
        with pytest.raises(Indeterminate):  # guarded, but its one attempt took the deadline
            await store.txn(
                [Compare.unchanged("/counter", seen.mod_revision)], [Put("/counter", b"2")]
            )
        with pytest.raises(Unavailable):  # a read: nothing happened, nothing to doubt
            await store.get("/counter")
    finally:
        os.kill(member.popen.pid, signal.SIGCONT)
    try:
        async with asyncio.timeout(10):
            while True:
                with contextlib.suppress(Unavailable):
                    await store.get("/counter")
                    break
        assert await store.put("/after", b"1") > 0  # and the store goes on
    finally:
        await store.close()


# ---- compaction and transaction limits -------------------------------------------------------
@etcd
async def test_a_compaction_by_another_client_stops_watches_from_below(
    shared: EtcdStore, etcd_server: EtcdServer
) -> None:
    base = await shared.revision()
    for i in range(4):
        await shared.put("/c", b"%d" % i)
    other = await EtcdStore.open([etcd_server.endpoint])  # another client, no namespace
    try:
        await other.compact(base + 3)
        await other.compact(base + 2)  # below the compaction: nothing left to do
        with pytest.raises(StoreError):
            await other.compact(base + 1000)  # a future revision
    finally:
        await other.close()
    below, above = shared.watch("/", base + 2), shared.watch("/", base + 4)
    try:
        with pytest.raises(Compacted) as caught:
            await anext(below)
        assert (caught.value.requested, caught.value.compact_revision) == (base + 2, base + 3)
        assert (await anext(above)).kv.value == b"3"
    finally:
        await below.aclose()
        await above.aclose()


@etcd
async def test_a_txn_over_the_limits_is_refused_before_it_is_sent(
    shared: EtcdStore, etcd_server: EtcdServer, etcd_namespace: str
) -> None:
    base = await shared.revision()
    at_limit = await shared.txn([], [Put(f"/k/{i}", b"x") for i in range(128)])
    assert at_limit.succeeded and at_limit.revision == base + 1  # etcd's default, taken
    with pytest.raises(TxnTooLarge, match="128"):
        await shared.txn([], [Put(f"/k/{i}", b"y") for i in range(129)])
    with pytest.raises(TxnTooLarge):
        await shared.txn([Compare.absent(f"/c/{i}") for i in range(129)], [Get("/k/0")])
    with pytest.raises(TxnTooLarge, match="bytes"):
        await shared.txn([], [Put("/big/1", b"x" * 800_000), Put("/big/2", b"x" * 800_000)])
    assert await shared.put("/big/1", b"x" * (1_572_864 - 200)) == base + 2  # just under it
    with pytest.raises(StoreError, match="deletes"):  # etcd would refuse it too
        await shared.txn([], [Put("/k/1", b"z"), Delete("/k/", prefix=True)])
    assert await shared.revision() == base + 2  # nothing of the refused ones was written
    # The limits are etcd's own: told that it takes more, the engine lets etcd refuse.
    lax = await EtcdStore.open(
        [etcd_server.endpoint],
        namespace=etcd_namespace,
        max_txn_ops=1000,
        max_request_bytes=4 << 20,
    )
    try:
        with pytest.raises(EtcdError):
            await lax.txn([], [Put(f"/k/{i}", b"y") for i in range(129)])
        with pytest.raises(EtcdError):
            await lax.put("/big/2", b"x" * 1_600_000)
    finally:
        await lax.close()


# ---- TLS with client certificates ------------------------------------------------------------
def issue(ca_dir: Path, folder: Path, name: str, sans: list[str]) -> tuple[Path, Path]:
    """A certificate (server and client auth) and its key, signed by the CA in ca_dir."""
    key, csr = key_and_csr("server", name, sans)
    cert = load_or_create_authority(ca_dir).sign(csr, "server", name, 1)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.key").write_bytes(key)
    (folder / f"{name}.pem").write_bytes(cert)
    return folder / f"{name}.pem", folder / f"{name}.key"


@etcd
async def test_tls_with_a_client_certificate(tmp_path: Path) -> None:
    require_etcd()
    ca_dir, files = tmp_path / "ca", tmp_path / "files"
    member_cert, member_key = issue(ca_dir, files, "etcd", ["127.0.0.1"])
    client = issue(ca_dir, files, "moorage", [])
    stranger = issue(tmp_path / "other-ca", files, "stranger", [])
    ca = ca_dir / "ca.pem"
    tls = MemberTls(member_cert, member_key, ca, client_ca=ca, probe=client)
    with EtcdServer(tmp_path / "etcd", tls=tls) as server:
        assert server.endpoint.startswith("https://")
        store = await EtcdStore.open([server.endpoint], ca=ca, cert=client[0], key=client[1])
        try:
            base = await store.revision()
            watch = store.watch("/", base + 1)
            assert await store.put("/tls", b"yes") == base + 1
            assert (await anext(watch)).kv.value == b"yes"
            await watch.aclose()
        finally:
            await store.close()
        url = f"etcds://127.0.0.1:{server.client_port}?ca={ca}&cert={client[0]}&key={client[1]}"
        by_url = await EtcdStore.from_url(url)
        try:
            assert (await by_url.get("/tls")) is not None
        finally:
            await by_url.close()
        for cert, key in [(None, None), stranger]:  # no certificate, or one of another CA
            with pytest.raises(Unavailable) as caught:
                await EtcdStore.open([server.endpoint], ca=ca, cert=cert, key=key, timeout=1)
            assert "client certificate" in str(caught.value)  # the hint names the likely cause
        with pytest.raises(Unavailable):  # the member's certificate is not trusted
            await EtcdStore.open([server.endpoint], ca=tmp_path / "other-ca" / "ca.pem", timeout=1)
