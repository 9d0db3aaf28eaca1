"""The KV store (`/v1/kv`, Consul's API) against a real `moorage server` process: through a
Consul client from PyPI (py-consul), raw HTTP for the edges, and the `moorage kv` commands."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import consul
import httpx
import pytest

from .cluster import MOORAGE, Cluster

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def kv_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One server (and its agent) for the whole module; each test uses its own key prefix."""
    cluster = Cluster(tmp_path_factory.mktemp("kv")).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def client(kv_cluster: Cluster) -> consul.Consul:
    url = httpx.URL(kv_cluster.addr)
    assert url.host is not None and url.port is not None
    return consul.Consul(host=url.host, port=url.port)


def index_of(response: httpx.Response) -> int:
    index = int(response.headers["X-Consul-Index"])
    assert index >= 1 and response.headers["X-Moorage-Index"] == str(index)
    return index


# ---- through py-consul ----------------------------------------------------------------------
def test_py_consul_put_get_cas_recurse_delete(client: consul.Consul) -> None:
    assert client.kv.put("pc/app/db", "postgres://db:5432") is True
    assert client.kv.put("pc/app/port", b"5432", flags=42) is True
    assert client.kv.put("pc/other", "x") is True

    index, entry = client.kv.get("pc/app/port")
    assert entry["Value"] == b"5432" and entry["Flags"] == 42 and entry["Key"] == "pc/app/port"
    assert entry["LockIndex"] == 0 and "Session" not in entry
    assert int(index) == entry["ModifyIndex"] >= entry["CreateIndex"] >= 1

    # cas: 0 creates only; N replaces only the version N
    assert client.kv.put("pc/app/port", "1", cas=0) is False
    assert client.kv.put("pc/app/port", "6543", cas=entry["ModifyIndex"] + 1000) is False
    assert client.kv.put("pc/app/port", "6543", cas=entry["ModifyIndex"]) is True
    assert client.kv.put("pc/app/new", "n", cas=0) is True
    _, entry = client.kv.get("pc/app/port")
    assert entry["Value"] == b"6543" and entry["Flags"] == 0  # a put without flags resets them

    index, entries = client.kv.get("pc/app", recurse=True)
    assert [e["Key"] for e in entries] == ["pc/app/db", "pc/app/new", "pc/app/port"]
    assert int(index) == max(e["ModifyIndex"] for e in entries)
    _, keys = client.kv.get("pc/", keys=True, separator="/")
    assert keys == ["pc/app/", "pc/other"]

    assert client.kv.delete("pc/app/db", cas=1) is False  # not its ModifyIndex
    assert client.kv.delete("pc/app/db") is True
    assert client.kv.get("pc/app/db") == (client.kv.get("pc/app/db")[0], None)
    deleted_index, _ = client.kv.get("pc/app", recurse=True)
    assert int(deleted_index) > int(index)  # a delete under the prefix moves its index
    assert client.kv.delete("pc/", recurse=True) is True
    _, gone = client.kv.get("pc/", recurse=True)
    assert gone is None


def test_py_consul_blocking_get_is_woken_by_a_write(client: consul.Consul) -> None:
    client.kv.put("block/key", "v1")
    index, _ = client.kv.get("block/key")
    _, prefix_entries = client.kv.get("block/", recurse=True)
    assert prefix_entries is not None
    results: dict[str, Any] = {}

    def watch(name: str, key: str, recurse: bool) -> None:
        began = time.monotonic()
        results[name] = (client.kv.get(key, index=index, wait="20s", recurse=recurse), began)
        results[name + "_took"] = time.monotonic() - began

    threads = [
        threading.Thread(target=watch, args=("key", "block/key", False)),
        threading.Thread(target=watch, args=("prefix", "block/", True)),
        threading.Thread(target=watch, args=("elsewhere", "other-prefix/", True)),
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    assert not results  # all blocked
    client.kv.put("block/key", "v2")
    threads[0].join(5)
    threads[1].join(5)
    (new_index, entry), _ = results["key"]
    assert entry["Value"] == b"v2" and int(new_index) > int(index)
    assert results["key_took"] < 3 and results["prefix_took"] < 3
    assert "elsewhere" not in results  # a write elsewhere does not wake it
    client.kv.put("other-prefix/x", "1")
    threads[2].join(5)
    assert "elsewhere" in results


# ---- raw HTTP edges ---------------------------------------------------------------------------
def test_missing_key_is_404_with_an_index_and_no_body(kv_cluster: Cluster) -> None:
    answer = kv_cluster.http.get("/v1/kv/raw/nothing-here")
    assert answer.status_code == 404 and answer.content == b""
    index_of(answer)
    listing = kv_cluster.http.get("/v1/kv/raw/nothing-here/", params={"recurse": ""})
    assert listing.status_code == 404 and listing.content == b""
    index_of(listing)


def test_unsupported_parameters_are_refused_by_name(kv_cluster: Cluster) -> None:
    for params, name in (
        ({"filter": "x"}, "filter"),
        ({"ns": "team"}, "ns"),
        ({"partition": "p"}, "partition"),
        ({"dc": "dc2"}, "dc"),
        ({"wait": "soon", "index": "1"}, "wait"),
        ({"separator": "/"}, "separator"),  # only with ?keys
    ):
        answer = kv_cluster.http.get("/v1/kv/raw/k", params=params)
        assert answer.status_code == 400, params
        body = answer.json()
        assert body["code"] and name in body["message"], body
        assert [e["field"] for e in body["errors"]] == [name]
        index_of(answer)
    put = kv_cluster.http.put("/v1/kv/raw/k", params={"acquire": "session-id"}, content=b"x")
    assert put.status_code == 400 and "acquire" in put.json()["message"]
    for params in ({"dc": "dc1"}, {"stale": ""}, {"consistent": ""}):
        assert kv_cluster.http.get("/v1/kv/raw/nothing", params=params).status_code == 404


def test_keys_separator_raw_and_flags(kv_cluster: Cluster) -> None:
    http = kv_cluster.http
    for key in ("sep/a", "sep/b/c", "sep/b/d", "sep/e/f/g", "sepx"):
        assert http.put(f"/v1/kv/{key}", content=key.encode()).json() is True
    keys = http.get("/v1/kv/sep/", params={"keys": "", "separator": "/"})
    assert keys.json() == ["sep/a", "sep/b/", "sep/e/"]
    assert http.get("/v1/kv/sep", params={"keys": ""}).json() == [
        "sep/a",
        "sep/b/c",
        "sep/b/d",
        "sep/e/f/g",
        "sepx",
    ]
    binary = bytes(range(256))
    assert http.put("/v1/kv/sep/bin", content=binary, params={"flags": "18446744073709551615"})
    raw = http.get("/v1/kv/sep/bin", params={"raw": ""})
    assert raw.status_code == 200 and raw.content == binary
    assert index_of(raw) >= 1
    (entry,) = http.get("/v1/kv/sep/bin").json()
    assert entry["Flags"] == 2**64 - 1 and base64.b64decode(entry["Value"]) == binary
    assert http.put("/v1/kv/sep/bin", content=b"", params={"flags": "-1"}).status_code == 400
    assert http.put("/v1/kv/sep/empty", content=b"").json() is True
    (empty,) = http.get("/v1/kv/sep/empty").json()
    assert empty["Value"] is None  # as Consul: an empty value is null


def test_value_size_limit_and_missing_key_name(kv_cluster: Cluster) -> None:
    http = kv_cluster.http
    assert http.put("/v1/kv/big/ok", content=b"x" * 512 * 1024).json() is True
    too_big = http.put("/v1/kv/big/no", content=b"x" * (512 * 1024 + 1))
    assert too_big.status_code == 400 and too_big.json()["errors"][0]["field"] == "value"
    assert http.get("/v1/kv/big/no").status_code == 404
    assert http.put("/v1/kv/", content=b"x").status_code == 400


def test_wait_is_honoured_without_a_write(kv_cluster: Cluster) -> None:
    http = kv_cluster.http
    index = index_of(http.put("/v1/kv/wait/k", content=b"v"))
    took = []
    for _ in range(3):
        began = time.monotonic()
        answer = http.get("/v1/kv/wait/k", params={"index": str(index), "wait": "100ms"})
        took.append(time.monotonic() - began)
        assert answer.status_code == 200 and index_of(answer) == index
    assert min(took) >= 0.09 and max(took) < 0.5, took  # 100 ms, plus up to 1/16 of jitter
    began = time.monotonic()
    answer = http.get("/v1/kv/wait/k", params={"index": str(index - 1), "wait": "5s"})
    assert time.monotonic() - began < 0.5  # an older index answers at once


def test_openapi_describes_the_kv_routes(kv_cluster: Cluster) -> None:
    paths = kv_cluster.http.get("/v1/openapi.json").json()["paths"]
    assert set(paths["/v1/kv/{key}"]) == {"get", "put", "delete"}
    names = {p["name"] for p in paths["/v1/kv/{key}"]["get"]["parameters"]}
    assert {"key", "recurse", "keys", "separator", "raw", "index", "wait"} <= names


# ---- the CLI ------------------------------------------------------------------------------------
def test_cli_get_put_ls_rm_and_exit_codes(kv_cluster: Cluster) -> None:
    cli = kv_cluster.cli
    assert "cli/conf/a: written" in cli("kv", "put", "cli/conf/a", "alpha").stdout
    cli("kv", "put", "cli/conf/b", "-", "--flags", "3", input="from stdin\n")
    cli("kv", "put", "cli/top", "t")
    assert cli("kv", "get", "cli/conf/a").stdout == "alpha"
    assert cli("kv", "get", "cli/conf/b").stdout == "from stdin\n"  # byte for byte
    entry = kv_cluster.cli_json("kv", "get", "cli/conf/b")
    assert entry["Flags"] == 3 and entry["Key"] == "cli/conf/b"
    assert cli("kv", "ls", "cli/").stdout.split() == ["cli/conf/", "cli/top"]
    assert kv_cluster.cli_json("kv", "ls", "cli/", "--recurse") == [
        "cli/conf/a",
        "cli/conf/b",
        "cli/top",
    ]
    missing = cli("kv", "get", "cli/nope", check=False)
    assert missing.returncode == 1 and "no key 'cli/nope'" in missing.stderr
    lost = cli("kv", "put", "cli/top", "again", "--cas", "0", check=False)
    assert lost.returncode == 1 and "not written" in lost.stderr
    bad = cli("kv", "put", "cli/top", "x", "--flags", "nope", check=False)
    assert bad.returncode == 2
    cli("kv", "rm", "cli/conf/", "--recurse")
    assert cli("kv", "ls", "cli/", "--recurse").stdout.split() == ["cli/top"]


def test_cli_watch_prints_each_change(kv_cluster: Cluster, tmp_path: Path) -> None:
    kv_cluster.cli("kv", "put", "cw/k", "one")
    out = tmp_path / "watch.out"
    with out.open("w") as sink:
        watcher = subprocess.Popen(
            [*MOORAGE, "kv", "watch", "cw/k"],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, **kv_cluster.env},
            cwd=kv_cluster.root,
            # as in a terminal: a suite run in the background (no job control) would hand the
            # watcher an ignored SIGINT, and Ctrl-C would then do nothing
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        try:
            deadline = time.monotonic() + 10
            while "one" not in out.read_text() and time.monotonic() < deadline:
                time.sleep(0.05)
            kv_cluster.cli("kv", "put", "cw/other", "unrelated")
            kv_cluster.cli("kv", "put", "cw/k", "two")
            kv_cluster.cli("kv", "rm", "cw/k")
            while "no key" not in out.read_text() and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            watcher.send_signal(signal.SIGINT)  # Ctrl-C
            code = watcher.wait(10)
    lines = out.read_text().splitlines()
    assert code == 0, lines
    assert [line.split(": ", 1)[1] for line in lines] == ["one", "two", "(no key 'cw/k')"]
