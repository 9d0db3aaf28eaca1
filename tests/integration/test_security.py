"""The holes found when moorage was tried as an attacker would, each held shut against real
processes: a user regexp that cannot freeze the server, secrets a deployer may not read, node
identity from certificates only, DNS answers revoked at once, TLS on every network port,
protected mode, private files, traversal in ids, and calls to a frozen agent that time out."""

from __future__ import annotations

import os
import re
import shutil
import ssl
import stat
import subprocess
import tempfile
import time
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import httpx
import pytest

from moorage.pki import key_and_csr, load_or_create_authority

from .cluster import MOORAGE, Cluster, Proc, dev_command, free_port, http_spec, wait_for

pytestmark = pytest.mark.integration


def management(cluster: Cluster) -> httpx.Client:
    secret = (cluster.root / "server" / "acl-bootstrap-token").read_text().strip()
    return cluster.client(headers={"X-Moorage-Token": secret})


def token_for(admin: httpx.Client, name: str, *rules: str) -> str:
    assert admin.put("/v1/acl/policy", json={"Name": name, "Rules": list(rules)}).status_code == 200
    created = admin.put("/v1/acl/token", json={"Policies": [name]})
    assert created.status_code == 200, created.text
    return str(created.json()["SecretID"])


# ---- 1. a user regexp cannot freeze the server --------------------------------------------
def test_a_catastrophic_regexp_costs_the_server_nothing(cluster: Cluster) -> None:
    fired = cluster.http.put("/v1/event/fire/deploy", params={"node": "(.*){12}z"}, content=b"")
    assert fired.status_code == 200, fired.text
    too_long = cluster.http.put("/v1/event/fire/x", params={"node": "a" * 300}, content=b"")
    assert too_long.status_code == 400 and too_long.json()["errors"][0]["field"] == "node"
    node = cluster.as_node("n" + "a" * 60)  # a 61-character node name: 10^20 steps backtracking
    started = time.perf_counter()
    listed = node.get("/v1/event/list", params={"node": "n" + "a" * 60})
    assert listed.status_code == 200 and time.perf_counter() - started < 0.1
    assert cluster.http.get("/v1/status").status_code == 200


# ---- 2. a service writer cannot deploy a secret it may not read ---------------------------
@pytest.fixture
def acl_cluster(tmp_path: Path) -> Any:
    with Cluster(tmp_path, server_args=["--acl"]) as cluster:
        yield cluster


def test_deploying_a_secret_needs_read_on_it(acl_cluster: Cluster) -> None:
    cluster = acl_cluster
    admin = management(cluster)
    assert admin.put("/v1/secrets/db-password", json={"value": "hunter2"}).status_code == 200
    writer = cluster.client(
        headers={"X-Moorage-Token": token_for(admin, "web", "service:web=write")}
    )
    spec = http_spec(count=1).replace("containers:\n", "containers:\n", 1)
    spec = spec.replace("    memory:", "    secrets: {X: db-password}\n    memory:", 1)
    revision = admin.get("/v1/status").json()["revision"]
    refused = writer.post(
        "/v1/services", content=spec.encode(), headers={"Content-Type": "application/yaml"}
    )
    assert refused.status_code == 403 and "secret:db-password read" in refused.json()["message"]
    assert admin.get("/v1/status").json()["revision"] == revision  # nothing stored
    reader = token_for(admin, "web-db", "service:web=write", "secret:db-password=read")
    with cluster.client(headers={"X-Moorage-Token": reader}) as allowed_client:
        allowed = allowed_client.post(
            "/v1/services", content=spec.encode(), headers={"Content-Type": "application/yaml"}
        )
    assert allowed.status_code == 200, allowed.text
    writer.close()
    admin.close()


# ---- 3. node identity comes from its certificate ------------------------------------------
def test_a_node_reads_and_reports_only_its_own_tasks(cluster: Cluster) -> None:
    assert cluster.http.put("/v1/secrets/db", json={"value": "hunter2"}).status_code == 200
    spec = http_spec(count=1).replace("    memory:", "    secrets: {DB: db}\n    memory:", 1)
    cluster.deploy(spec)
    (task,) = cluster.wait_running("web", 1)
    assert task["node"] == "n1"
    # what users read names the secret, never its value (only the task's node fetches that)
    for url in (f"/v1/tasks/{task['id']}", "/v1/services/web", "/v1/taskdefs/web", "/v1/events"):
        shown = cluster.http.get(url)
        assert shown.status_code == 200 and "hunter2" not in shown.text, url
    other = cluster.as_node("n2")  # a node of its own, not the task's
    for call in (
        other.get(f"/v1/tasks/{task['id']}/secrets"),
        other.put(f"/v1/tasks/{task['id']}/status", json={"status": "exited", "run_generation": 1}),
        other.get("/v1/nodes/n1/tasks"),
        other.post("/v1/nodes/n1/heartbeat"),
    ):
        assert call.status_code == 403, call.text
    # the join token alone is no node: only /v1/join answers it
    context = ssl.create_default_context(cafile=str(cluster.ca))
    join = {"Authorization": f"Bearer {cluster.token}", "X-Moorage-Node": "n1"}
    with httpx.Client(base_url=cluster.cluster_url, verify=context, headers=join) as token_only:
        assert token_only.get(f"/v1/tasks/{task['id']}/secrets").status_code == 403
        assert token_only.put(f"/v1/tasks/{task['id']}/status", json={}).status_code == 403
    # ... and no node on the users' port
    assert cluster.http.get(f"/v1/tasks/{task['id']}/secrets", headers=join).status_code == 404
    assert cluster.running("web")  # nothing the others sent changed the task
    # the agent took its join token from a file: no local user reads it in /proc/*/cmdline
    cmdline = Path(f"/proc/{cluster.agent.pid}/cmdline").read_bytes()
    assert cluster.token.encode() not in cmdline and b"--token-file" in cmdline
    # a revoked node is refused at once, whatever its certificate's expiry
    assert other.get("/v1/nodes/n2/tasks").status_code == 200
    assert cluster.http.post("/v1/nodes/n2/revoke", json={}).status_code == 200
    assert other.get("/v1/nodes/n2/tasks").status_code == 403


# ---- 4. DNS under --acl-dns forgets a revoked answer at once --------------------------------
def test_acl_dns_refuses_a_revoked_name_at_once(tmp_path: Path) -> None:
    with Cluster(tmp_path, server_args=["--acl", "--acl-dns"]) as cluster:
        admin = management(cluster)
        rules = {"Name": "anonymous", "Rules": ["node:n1=read"]}
        assert admin.put("/v1/acl/policy", json=rules).status_code == 200

        def dig() -> str:
            out = subprocess.run(
                ["dig", "@127.0.0.1", "-p", str(cluster.dns_port), "n1.node.moorage", "A"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout
            return "REFUSED" if "status: REFUSED" in out else "NOERROR" if "NOERROR" in out else out

        wait_for(lambda: dig() == "NOERROR", 10, what="n1.node answered")
        assert dig() == "NOERROR"  # now cached
        rules["Rules"] = ["node:n1=deny"]
        assert admin.put("/v1/acl/policy", json=rules).status_code == 200
        assert dig() == "REFUSED"
        admin.close()


# ---- 5. mutual TLS on every network port --------------------------------------------------
def test_a_netns_cluster_speaks_only_mutual_tls(zones: Cluster, tmp_path: Path) -> None:
    cluster = zones
    cluster.deploy(http_spec(count=3))
    cluster.wait_running("web", 3, timeout=60)
    agent = f"{cluster.addresses['n1']}:7071"
    server = cluster.cluster_url.removeprefix("https://")
    for where in (agent, server):
        with pytest.raises(httpx.HTTPError):  # plain HTTP to a TLS port
            httpx.get(f"http://{where}/v1/health", timeout=5)
    # a certificate from another CA (the same names, the same subjects) is refused
    stranger = load_or_create_authority(tmp_path / "other-ca")
    key, csr = key_and_csr("node", "n1", ["127.0.0.1"])
    (tmp_path / "n1.pem").write_bytes(stranger.sign(csr, "node", "n1", 1))
    (tmp_path / "n1.key").write_bytes(key)
    forged = ssl.create_default_context()
    forged.check_hostname, forged.verify_mode = False, ssl.CERT_NONE
    forged.load_cert_chain(tmp_path / "n1.pem", tmp_path / "n1.key")
    for url in (f"https://{server}/v1/nodes/n1/tasks", f"https://{agent}/v1/tasks/x/logs"):
        try:
            answer = httpx.get(url, verify=forged, timeout=5)
        except httpx.HTTPError:
            continue  # the handshake itself refused it
        assert answer.status_code in (401, 403)
    # the API beyond loopback is HTTPS, trusted through the cluster CA
    assert cluster.addr.startswith("https://")
    assert cluster.http.get("/v1/status").status_code == 200
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{cluster.addr}/v1/status", timeout=5)  # the system's CAs do not know it


# ---- 6. protected mode -----------------------------------------------------------------------
def test_a_server_beyond_loopback_without_acls_refuses_to_start(tmp_path: Path) -> None:
    port = free_port()
    refused = subprocess.run(
        [
            *MOORAGE,
            "server",
            "--data-dir",
            str(tmp_path),
            "--http-addr",
            f"0.0.0.0:{port}",
            "--cluster-addr",
            f"127.0.0.1:{free_port()}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode == 2
    assert (
        "acl: the API would listen on 0.0.0.0" in refused.stderr and "--insecure" in refused.stderr
    )


# ---- 7. private files ------------------------------------------------------------------------
# What docs/security.md lists as open to others: the directories on the way to a task's
# working directory, traversable (0711) and not listable, so a task running as its own user
# gets there; and a volume's contents (its root 0755, as a fresh filesystem's; the files as
# the task wrote them), under folders that are private (0700).
TRAVERSED = ("", "agent", "agent/alloc")
VOLUME_CONTENTS = ("shared-volumes/*/data", "shared-volumes/*/data/*", "agent/volumes/*/data*")


def test_nothing_in_the_data_dir_is_readable_by_others_after_moorage_dev_ran_a_task(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    port = free_port()
    dev = Proc(
        dev_command(data, port),
        tmp_path / "dev.log",
    ).start(ready_timeout=30)
    try:
        api = f"http://127.0.0.1:{port}"
        assert httpx.put(f"{api}/v1/secrets/db", json={"value": "hunter2"}).status_code == 200
        spec = http_spec(name="db", count=1)
        spec = spec.replace("    memory:", "    secrets: {DB: db}\n    memory:", 1)
        posted = httpx.post(
            f"{api}/v1/services", content=spec, headers={"Content-Type": "application/yaml"}
        )
        assert posted.status_code == 200, posted.text

        def running() -> bool:
            tasks = httpx.get(f"{api}/v1/tasks", timeout=10).json()
            return sum(t["status"] == "running" for t in tasks) >= 5  # demo web x3, worker, db

        wait_for(running, 30, what="the demo and db running")
        wait_for(lambda: list(data.glob("agent/alloc/worker-*/logs/*.stdout")), 10)
        exposed = []
        for path in [data, *data.rglob("*")]:
            if path.is_symlink() or not path.exists():
                continue
            mode = stat.S_IMODE(path.stat().st_mode)
            relative = path.relative_to(data).as_posix() if path != data else ""
            task_dir = path.parent == data / "agent" / "alloc"
            if path.is_dir() and (relative in TRAVERSED or task_dir):
                if mode != 0o711:
                    exposed.append(f"{oct(mode)} {relative or '.'} (should be 0711)")
                continue
            if any(fnmatch(relative, p) for p in VOLUME_CONTENTS):
                continue  # the task's own files; the folders above are private (below)
            if mode & 0o077:
                exposed.append(f"{oct(mode)} {relative}")
        assert exposed == []
        for private in ("shared-volumes", "agent/volumes", "server"):
            if (data / private).exists():
                assert stat.S_IMODE((data / private).stat().st_mode) == 0o700, private
        # the files that matter, by name: they exist (the walk above saw them)
        for name in ("server/state.db", "server/metrics", "server/tls/ca.key", "server/join-token"):
            assert (data / name).exists(), name
        assert list(data.glob("agent/alloc/*/logs/app.stdout"))
    finally:
        assert dev.stop() == 0, dev.output()


# ---- 4b. a process task runs as the user it names ----------------------------------------
@pytest.fixture
def reachable_cluster() -> Any:
    """A cluster under a directory every user may traverse (pytest's own tmp dirs are 0700:
    a task's user could not reach its working directory there, which the agent says)."""
    root = Path(tempfile.mkdtemp(prefix="moorage-user-", dir="/tmp"))
    root.chmod(0o711)
    try:
        with Cluster(root / "cluster") as cluster:
            yield cluster
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_process_task_runs_as_its_user_and_exec_does_too(reachable_cluster: Cluster) -> None:
    cluster = reachable_cluster
    script = "id -u > out; id -g >> out; echo $HOME >> out; umask >> out; sleep 300"
    spec = f"""
service: nobody
count: 1
containers:
  - name: app
    user: nobody
    command: [sh, -c, "{script}"]
    memory: 32
    stop_timeout: 1s
"""
    cluster.deploy(spec)
    (task,) = cluster.wait_running("nobody", 1)
    workdir = cluster.root / "node1" / "agent" / "alloc" / task["id"] / "app"
    out = wait_for(lambda: (workdir / "out").exists() and (workdir / "out").read_text(), 10)
    assert out.split() == ["65534", "65534", "/nonexistent", "0022"]
    assert (workdir.stat().st_uid, stat.S_IMODE(workdir.stat().st_mode)) == (65534, 0o700)
    assert (workdir / "out").stat().st_uid == 65534
    execed = cluster.cli("exec", task["id"], "--", "id", "-u")
    assert execed.stdout.strip() == "65534"
    # a user this node does not have: the task fails to start, saying so
    cluster.deploy(spec.replace("nobody", "ghost").replace("user: ghost", "user: no-such-user"))

    def failed() -> list[dict[str, Any]]:
        return [t for t in cluster.tasks("ghost") if "no user 'no-such-user'" in t["message"]]

    wait_for(failed, 20, what="the task failing on its unknown user")
    bad = cluster.http.post(
        "/v1/services",
        content=spec.replace("user: nobody", "user: 'root; rm -rf /'"),
        headers={"Content-Type": "application/yaml"},
    )
    assert bad.status_code == 400 and "user" in bad.json()["errors"][0]["field"]


# ---- 8. traversal in ids ---------------------------------------------------------------------
AGENT_ROUTES = [
    ("GET", "/v1/tasks/{id}/logs"),
    ("GET", "/v1/tasks/{id}/exec"),
    ("POST", "/v1/volumes/{name}/snapshots"),
    ("GET", "/v1/volumes/{name}/snapshots/{id}/archive"),
    ("DELETE", "/v1/volumes/{name}/snapshots/{id}"),
    ("POST", "/v1/volumes/{name}/restore"),
    ("DELETE", "/v1/volumes/{name}"),
]


def test_traversal_ids_get_400_on_every_route_of_the_api_and_of_the_agent(
    cluster: Cluster,
) -> None:
    bad = "..%2F..%2F..%2Fetc"  # the client keeps it; the server decodes it into the parameter
    revision = cluster.http.get("/v1/status").json()["revision"]
    paths = cluster.http.get("/v1/openapi.json").json()["paths"]
    tried = []
    for template, methods in paths.items():
        if "{" not in template or "{key" in template:  # KV keys are paths by design
            continue
        for method in methods:
            url = httpx.URL(cluster.addr + re.sub(r"\{[^}]+\}", bad, template))
            answer = cluster.http.request(method.upper(), url, json={})
            assert answer.status_code == 400, (method, template, answer.status_code)
            assert answer.json()["code"] == "invalid_path"
            tried.append(template)
    assert len(tried) > 40
    assert cluster.http.get("/v1/status").json()["revision"] == revision
    # the agent's own port, called as a server would (the server's certificate)
    server = cluster.root / "server" / "tls"
    context = ssl.create_default_context(cafile=str(server / "ca.pem"))
    context.load_cert_chain(server / "server.pem", server / "server.key")
    port = cluster.agent.args[cluster.agent.args.index("--agent-addr") + 1].rsplit(":", 1)[1]
    agent = f"https://127.0.0.1:{port}"
    with httpx.Client(verify=context, timeout=10) as as_server:
        for method, template in AGENT_ROUTES:
            url = httpx.URL(agent + re.sub(r"\{[^}]+\}", bad, template))
            answer = as_server.request(method, url)
            assert answer.status_code == 400, (method, template, answer.status_code)


# ---- 9. a frozen agent cannot hold the server ------------------------------------------------
def test_volume_rm_fails_within_its_timeout_when_the_agent_is_frozen(cluster: Cluster) -> None:
    created = cluster.http.post("/v1/volumes", json={"name": "scratch", "driver": "shared"})
    assert created.status_code == 200, created.text
    cluster.freeze("n1")
    try:
        started = time.monotonic()
        answer = cluster.http.delete("/v1/volumes/scratch", timeout=120)
        took = time.monotonic() - started
    finally:
        cluster.thaw("n1")
    # a frozen agent accepts the connection (the kernel does) but never finishes the TLS
    # handshake: the connect budget (5 s) ends it; one that froze later, the call's (60 s)
    assert answer.status_code == 503, answer.text
    assert "agent of node n1" in answer.json()["message"]
    assert took < 65
    assert os.path.exists(cluster.root)


# ---- 10. what the fuzzer found: bad bodies get 400, missing objects 404 ----------------------
def test_the_fuzzers_findings_get_4xx_naming_the_problem(cluster: Cluster) -> None:
    cluster.deploy(http_spec(count=1))
    cluster.wait_running("web", 1)
    not_utf8 = {"Content-Type": "application/json"}
    for path in ("/v1/nodes/n1/drain", "/v1/services/web/rollback"):
        answer = cluster.http.post(path, content=b"\xff\xfe{", headers=not_utf8)
        assert answer.status_code == 400 and answer.json()["code"] == "invalid_body", path
    huge = cluster.http.post("/v1/silences", json={"matchers": {"a": "b"}, "duration": 1e271})
    assert huge.status_code == 400 and huge.json()["errors"][0]["field"] == "duration"
    # a lone surrogate is valid JSON but no text: refused naming where, nothing stored
    body = b'{"matchers": {"a": "b"}, "duration": "1h", "comment": "\\ud800"}'
    lone = cluster.http.post("/v1/silences", content=body, headers=not_utf8)
    assert lone.status_code == 400 and lone.json()["errors"][0]["field"] == "comment"
    assert cluster.http.get("/v1/silences").json() == []
    for method, path in (
        ("DELETE", "/v1/volumes/nope"),
        ("GET", "/v1/exec/nope?cmd=true"),
        ("POST", "/v1/volumes/nope/snapshots"),
    ):
        answer = cluster.http.request(method, path)
        assert answer.status_code == 404 and answer.json()["code"] == "not_found", path
