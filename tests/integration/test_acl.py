"""ACLs on a real server started with --acl: default deny, tokens with policies, bootstrap once,
secrets kept only as SHA-256, and the CLI, the Consul API, KV and exec all honouring them."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .cluster import MOORAGE, Cluster, http_spec

pytestmark = pytest.mark.integration


CLIENTS: list[httpx.Client] = []


@pytest.fixture
def acl_cluster(tmp_path: Path) -> Iterator[Cluster]:
    with Cluster(tmp_path, server_args=["--acl"]) as cluster:
        try:
            yield cluster
        finally:
            while CLIENTS:
                CLIENTS.pop().close()


def as_token(cluster: Cluster, token: str | None) -> httpx.Client:
    headers = {"X-Consul-Token": token} if token else {}
    CLIENTS.append(httpx.Client(base_url=cluster.addr, headers=headers, timeout=30))
    return CLIENTS[-1]


def create_token(cluster: Cluster, policy: str, *rules: str) -> str:
    args = [arg for rule in rules for arg in ("--rule", rule)]
    cluster.cli("acl", "policy", "create", policy, *args)
    created: dict[str, Any] = cluster.cli_json("acl", "token", "create", "--policy", policy)
    return str(created["SecretID"])


def test_acls_deny_by_default_and_grant_by_policy(acl_cluster: Cluster) -> None:
    cluster = acl_cluster
    anonymous = as_token(cluster, None)
    denied = anonymous.get("/v1/services")
    assert denied.status_code == 403 and denied.json()["code"] == "permission_denied"
    assert "anonymous" in denied.json()["message"]
    assert anonymous.put("/v1/kv/app/x", content=b"1").status_code == 403
    assert as_token(cluster, "made-up").get("/v1/kv/app/x").status_code == 403
    assert anonymous.get("/v1/status/leader").status_code == 200  # open, as in Consul

    management = cluster.management_token()  # --acl bootstrapped it on the first start
    again = cluster.cli("acl", "bootstrap", check=False)
    assert again.returncode == 1 and "already" in again.stderr
    cluster.env["MOORAGE_HTTP_TOKEN"] = management
    cluster.http.headers["X-Moorage-Token"] = management

    bad = cluster.cli("acl", "policy", "create", "bad", "--rule", "kv:app/=admin", check=False)
    assert bad.returncode == 2 and "rule[0]" in bad.stderr and "admin" in bad.stderr

    app = create_token(cluster, "app-rw", "kv:app/=write")
    reader = create_token(cluster, "reader", "kv:=read", "service:=read")
    web_exec = create_token(cluster, "web-exec", "service:web=read", "exec:web=write")

    admin = as_token(cluster, management)
    assert admin.put("/v1/kv/app/x", content=b"1").json() is True
    assert admin.put("/v1/kv/other/y", content=b"2").json() is True

    # a kv:app/ token reads and writes app/, and cannot read other/
    as_app = as_token(cluster, app)
    assert as_app.get("/v1/kv/app/x", params={"raw": ""}).content == b"1"
    assert as_app.put("/v1/kv/app/z", content=b"3").json() is True
    other = as_app.get("/v1/kv/other/y")
    assert other.status_code == 403 and "kv:other/y read" in other.json()["message"]
    # a read token cannot write
    as_reader = as_token(cluster, reader)
    assert as_reader.get("/v1/kv/other/y", params={"raw": ""}).content == b"2"
    assert as_reader.put("/v1/kv/other/y", content=b"4").status_code == 403
    assert as_reader.get("/v1/services").status_code == 200
    assert as_reader.post("/v1/services/web/scale", json={"count": 2}).status_code == 403

    # deploying needs service write on that name; the agent still runs tasks (join token)
    spec = http_spec(count=1, extra="discovery: {}")
    refused = as_reader.post(
        "/v1/services", content=spec.encode(), headers={"Content-Type": "application/yaml"}
    )
    # a token that may write no service at all is refused before its specs are read
    assert refused.status_code == 403 and "may write no service" in refused.json()["message"]
    # one that may write another service is refused once the spec names the service
    api_deployer = as_token(cluster, create_token(cluster, "api-deployer", "service:api=write"))
    not_web = api_deployer.post(
        "/v1/services", content=spec.encode(), headers={"Content-Type": "application/yaml"}
    )
    assert not_web.status_code == 403 and "service:web write" in not_web.json()["message"]
    cluster.deploy(spec)
    cluster.wait_running("web", 1)

    # the Consul catalog lists only what the token may read
    assert as_reader.get("/v1/catalog/services").json() == {"web": []}
    assert as_app.get("/v1/catalog/services").json() == {}
    assert as_app.get("/v1/health/service/web").status_code == 403

    # exec needs exec write on that service
    env = {**cluster.env}
    cluster.env["MOORAGE_HTTP_TOKEN"] = web_exec
    assert cluster.cli("exec", "web", "--", "true").returncode == 0
    cluster.env["MOORAGE_HTTP_TOKEN"] = reader
    no_exec = cluster.cli("exec", "web", "--", "true", check=False)
    assert no_exec.returncode == 1 and "exec:web write" in no_exec.stderr
    cluster.env.update(env)

    # tokens are stored only as their SHA-256
    state = (cluster.root / "server" / "state.db").read_bytes()
    wal = cluster.root / "server" / "state.db-wal"
    state += wal.read_bytes() if wal.exists() else b""
    for secret in (management, app, reader, web_exec):
        assert secret.encode() not in state
    listed = cluster.cli("acl", "token", "ls").stdout
    assert management not in listed and "management" in listed


def test_kv_listings_and_tree_deletes_honour_deny_rules_below_the_prefix(
    acl_cluster: Cluster,
) -> None:
    cluster = acl_cluster
    anonymous = as_token(cluster, None)
    management = cluster.management_token()
    assert anonymous.put("/v1/acl/bootstrap").status_code == 409  # Consul's verb: done at start
    cluster.env["MOORAGE_HTTP_TOKEN"] = management
    admin = as_token(cluster, management)
    for key in ("app/a", "app/b/c", "app/secret/key", "app/secret/more/x"):
        assert admin.put(f"/v1/kv/{key}", content=key.encode()).json() is True
    token = create_token(cluster, "app-but-secret", "kv:app/=write", "kv:app/secret/=deny")
    app = as_token(cluster, token)

    listed = app.get("/v1/kv/app/", params={"recurse": ""})
    assert listed.status_code == 200
    assert [e["Key"] for e in listed.json()] == ["app/a", "app/b/c"]
    assert app.get("/v1/kv/app/", params={"keys": ""}).json() == ["app/a", "app/b/c"]
    folders = app.get("/v1/kv/app/", params={"keys": "", "separator": "/"}).json()
    assert folders == ["app/a", "app/b/"]
    assert app.get("/v1/kv/app/secret/key").status_code == 403
    # the whole tree cannot go while part of it is denied; nothing is deleted
    refused = app.delete("/v1/kv/app/", params={"recurse": ""})
    assert refused.status_code == 403 and "kv:app/" in refused.json()["message"]
    assert len(admin.get("/v1/kv/app/", params={"recurse": ""}).json()) == 4
    # a subtree it may write goes
    assert app.delete("/v1/kv/app/b/", params={"recurse": ""}).json() is True
    keys = admin.get("/v1/kv/app/", params={"keys": ""}).json()
    assert keys == ["app/a", "app/secret/key", "app/secret/more/x"]

    # the token travels in every way Consul clients send it; token/self describes it
    for client in (
        httpx.Client(base_url=cluster.addr, headers={"Authorization": f"Bearer {token}"}),
        httpx.Client(base_url=cluster.addr, params={"token": token}),
    ):
        CLIENTS.append(client)
        assert client.get("/v1/kv/app/a", params={"raw": ""}).content == b"app/a"
        me = client.get("/v1/acl/token/self")
        assert me.status_code == 200 and me.json()["Policies"] == [{"Name": "app-but-secret"}]
        assert "SecretID" not in me.json()
    assert anonymous.get("/v1/acl/token/self").status_code == 403
    assert as_token(cluster, "made-up").get("/v1/acl/token/self").status_code == 403


def test_acl_endpoints_refuse_while_acls_are_off(cluster: Cluster) -> None:
    off = cluster.http.post("/v1/acl/bootstrap")
    assert off.status_code == 409 and "--acl" in off.json()["message"]
    assert cluster.http.get("/v1/services").status_code == 200  # no token needed


def test_acl_dns_answers_only_what_the_anonymous_policy_may_read(tmp_path: Path) -> None:
    from .test_dns import dig

    with Cluster(tmp_path, server_args=["--acl", "--acl-dns"]) as cluster:
        management = cluster.management_token()
        cluster.env["MOORAGE_HTTP_TOKEN"] = management
        cluster.http.headers["X-Moorage-Token"] = management
        cluster.deploy(http_spec(count=1, extra="discovery: {}"))
        cluster.wait_running("web", 1)
        closed = dig(cluster.dns_port, "web.service.moorage", "A")
        assert closed.status == "REFUSED", closed.output
        assert dig(cluster.dns_port, "n1.node.moorage", "A").status == "REFUSED"
        cluster.cli("acl", "policy", "create", "anonymous", "--rule", "service:web=read")
        opened = dig(cluster.dns_port, "web.service.moorage", "A")
        assert opened.status == "NOERROR" and opened.a == ["127.0.0.1"], opened.output
        assert dig(cluster.dns_port, "n1.node.moorage", "A").status == "REFUSED"
        # the HTTP API follows the same anonymous policy
        with httpx.Client(base_url=cluster.addr) as anonymous:
            assert anonymous.get("/v1/health/service/web").status_code == 200
            assert anonymous.get("/v1/kv/x").status_code == 403
    refused = subprocess.run(
        [*MOORAGE, "server", "--acl-dns", "--data-dir", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode == 2 and "acl-dns" in refused.stderr
