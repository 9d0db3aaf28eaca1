"""The files teams have, as they are: a compose app with `build:`, a bind-mounted nginx config, a
named database volume, `cap_add` and `ulimits`, on `moorage dev` and on a three-node cluster
whose nodes each have their own Docker engine (built on one, pushed to a registry, pulled by the
others); ECS Fargate and host-network task definitions; host volumes; `moorage validate`."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.images import IMAGE, ensure_image, nginx_context, nginx_ready

from .cluster import MOORAGE, REPO, Cluster, Proc, free_port, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.docker]

COMPOSE = """
name: shop
services:
  app:
    build: ./app
    ports: ["{app_port}:8080"]
    healthcheck:
      test: ["CMD", "wget", "-q", "-O-", "http://127.0.0.1:8080/health"]
      interval: 1s
      retries: 3
    deploy: {{replicas: {replicas}}}
  db:
    build: ./db
    command: ["sh", "-c", "date > /var/lib/db/started; exec httpd -f -p 8080 -h /var/lib/db"]
    volumes: ["dbdata:/var/lib/db"]
  proxy:
    build: ./proxy
    ports: ["80"]
    volumes: ["./nginx.conf:/etc/nginx/nginx.conf:ro"]
    extra_hosts: ["app:host-gateway"]
    cap_add: [NET_ADMIN]
    ulimits: {{nofile: {{soft: 4096, hard: 8192}}}}
    stop_signal: SIGQUIT
    depends_on:
      app: {{condition: service_healthy}}
    tty: true
volumes:
  dbdata: {{}}
"""

NGINX_CONF = """
user root;
worker_processes 1;
pid /tmp/nginx.pid;
error_log stderr;
events {{ worker_connections 64; }}
http {{
  access_log off;
  server {{
    listen 80;
    location = /config {{ return 200 "config {version}\\n"; }}
    location / {{ proxy_pass http://app:{app_port}; }}
  }}
}}
"""


def _project(root: Path, app_port: int, replicas: int) -> Path:
    """The compose project as a team has it: compose file, Dockerfiles, nginx.conf."""
    root.mkdir(parents=True)
    (root / "compose.yml").write_text(COMPOSE.format(app_port=app_port, replicas=replicas))
    (root / "nginx.conf").write_text(NGINX_CONF.format(version="v1", app_port=app_port))
    for name in ("app", "db"):
        (root / name).mkdir()
        (root / name / "Dockerfile").write_text(f"FROM {IMAGE}\nCOPY . /www/\n")
    (root / "app" / "index.html").write_text("hello from the shop app\n")
    (root / "app" / "health").write_text("ok\n")
    (root / "db" / "Dockerfile").write_text(f"FROM {IMAGE}\nRUN mkdir -p /var/lib/db\n")
    nginx_context(root / "proxy")
    return root


def _get(url: str) -> str | None:
    try:
        response = httpx.get(url, timeout=3)
    except httpx.HTTPError:
        return None
    return response.text if response.status_code == 200 else None


def _proxy_url(tasks: list[dict[str, Any]], addresses: dict[str, str]) -> str:
    (task,) = [t for t in tasks if t["status"] == "running" and t["desired"] == "run"]
    return f"http://{addresses[task['node']]}:{task['ports']['p80']}"


def _inspect(docker: list[str], task: dict[str, Any]) -> dict[str, Any]:
    name = f"moorage-{task['id']}-app"
    out = subprocess.run(
        [*docker, "inspect", name], capture_output=True, text=True, check=True, timeout=30
    )
    info: dict[str, Any] = json.loads(out.stdout)[0]
    return info


def _must_show(
    cli: Any,
    project: Path,
    tasks: Any,
    addresses: dict[str, str],
    docker_of: Any,
    app_port: int,
    api: Any,
) -> None:
    """The must-show, wherever the cluster is: up, answering through the proxy with the
    bind-mounted config; a config edit is a new revision; the old one stays for a rollback."""
    deployed = cli("deploy", "-f", str(project / "compose.yml"), timeout=600)
    assert "warning: services.proxy.tty" in deployed.stderr  # said, with the docs table
    assert "docs/formats.md#compose-service-keys" in deployed.stderr
    assert "building" in deployed.stderr  # build progress is shown
    url = _proxy_url(tasks("proxy"), addresses)
    wait_for(lambda: _get(f"{url}/") == "hello from the shop app\n", 30, what="proxy → app")
    assert _get(f"{url}/config") == "config v1\n"
    # the runtime options reached the engine; the config is mounted read-only
    (proxy,) = [t for t in tasks("proxy") if t["status"] == "running"]
    info = _inspect(docker_of(proxy["node"]), proxy)
    assert "NET_ADMIN" in info["HostConfig"]["CapAdd"]
    assert {"Name": "nofile", "Soft": 4096, "Hard": 8192} in info["HostConfig"]["Ulimits"]
    (mount,) = [m for m in info["Mounts"] if m["Destination"] == "/etc/nginx/nginx.conf"]
    assert mount["RW"] is False and info["Config"]["StopSignal"] == "SIGQUIT"
    # the database's named volume is a cluster volume, claimed by its task
    (db,) = [t for t in tasks("db") if t["status"] == "running"]
    volume = api("/v1/volumes/dbdata")
    assert [a["task"] for a in volume["attachments"]] == [db["id"]]

    # an edited config: a new revision of proxy alone (unchanged builds keep their tags)
    (project / "nginx.conf").write_text(NGINX_CONF.format(version="v2", app_port=app_port))
    cli("deploy", "-f", str(project / "compose.yml"), timeout=600)
    services = {s["name"]: s["revision"] for s in json.loads(cli("services", "-o", "json").stdout)}
    assert services == {"app": 1, "db": 1, "proxy": 2}
    url = _proxy_url(tasks("proxy"), addresses)
    wait_for(lambda: _get(f"{url}/config") == "config v2\n", 30, what="the new config served")
    old = api("/v1/taskdefs/proxy/1")
    assert "config v1" in old["configs"]["nginx-conf"]["text"]
    cli("rollback", "proxy", timeout=120)
    url = _proxy_url(tasks("proxy"), addresses)
    wait_for(lambda: _get(f"{url}/config") == "config v1\n", 30, what="the rollback's config")


@pytest.fixture
def nginx() -> None:
    if not nginx_ready():
        if os.environ.get("MOORAGE_REQUIRE_DOCKER") == "1":
            pytest.fail(
                "MOORAGE_REQUIRE_DOCKER=1 but nginx is not installed (apt-get install nginx)"
            )
        pytest.skip("SKIPPED LOUDLY: nginx is not installed (CI installs it)")


@pytest.fixture
def dev(tmp_path: Path, docker_image: str) -> Iterator[tuple[str, Path]]:
    """`moorage dev` as a user starts it, with a host volume shared."""
    port = free_port()
    shared = tmp_path / "shared"
    (shared / "site").mkdir(parents=True)
    (shared / "site" / "index.html").write_text("from the node's own directory\n")
    command = [
        *MOORAGE,
        "dev",
        "--data-dir",
        str(tmp_path / "data"),
        "--http-addr",
        f"127.0.0.1:{port}",
        "--agent-addr",
        f"127.0.0.1:{free_port()}",
        "--dns-addr",
        f"127.0.0.1:{free_port()}",
        "--cluster-addr",
        f"127.0.0.1:{free_port()}",
        "--host-volume",
        f"shared={shared}",
    ]
    proc = Proc(command, tmp_path / "dev.log").start(ready_timeout=30)
    try:
        yield f"http://127.0.0.1:{port}", shared
    finally:
        proc.stop()


def _dev_cli(addr: str) -> Any:
    def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*MOORAGE, *args],
            capture_output=True,
            text=True,
            env={**os.environ, "MOORAGE_ADDR": addr},
            cwd=REPO,
            timeout=timeout,
        )
        assert result.returncode == 0, f"moorage {' '.join(args)}: {result.stdout}{result.stderr}"
        return result

    return cli


def test_compose_app_on_moorage_dev(dev: tuple[str, Path], nginx: None, tmp_path: Path) -> None:
    addr, _shared = dev
    app_port = free_port()
    project = _project(tmp_path / "shop", app_port, replicas=1)
    cli = _dev_cli(addr)

    def tasks(service: str) -> list[dict[str, Any]]:
        return list(httpx.get(f"{addr}/v1/tasks", params={"service": service}).json())

    _must_show(
        cli,
        project,
        tasks,
        _nodes(addr),
        lambda _node: ["docker"],
        app_port,
        lambda path: httpx.get(f"{addr}{path}", timeout=10).json(),
    )
    # one node: the built images were used in place, tagged by their content
    images = subprocess.run(
        ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}", "shop-app"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.split()
    assert len(images) == 1 and images[0].startswith("shop-app:ctx-")


def _nodes(addr: str) -> dict[str, str]:
    return {n["name"]: "127.0.0.1" for n in httpx.get(f"{addr}/v1/nodes").json()}


def test_ecs_fargate_and_a_host_volume_on_moorage_dev(
    dev: tuple[str, Path], tmp_path: Path
) -> None:
    addr, shared = dev
    cli = _dev_cli(addr)
    fargate = {
        "family": "web",
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "cpu": "256",
        "memory": "512",
        "containerDefinitions": [
            {
                "name": "web",
                "image": IMAGE,
                "essential": True,
                "portMappings": [{"containerPort": 8080, "hostPort": 8080, "protocol": "tcp"}],
            }
        ],
    }
    path = tmp_path / "fargate.json"
    path.write_text(json.dumps(fargate))
    result = cli("deploy", "--ecs", str(path), timeout=120)
    assert "awsvpc: container port 8080 → a dynamic host port" in result.stderr
    (task,) = [t for t in httpx.get(f"{addr}/v1/tasks").json() if t["service"] == "web"]
    port = task["ports"]["p8080"]
    wait_for(lambda: _get(f"http://127.0.0.1:{port}/") == "hello from the test image\n", 20)

    # an absolute path: a host volume, only on nodes sharing it (this one: --host-volume)
    compose = tmp_path / "site" / "compose.yml"
    compose.parent.mkdir()
    compose.write_text(
        f"services:\n  site:\n    image: {IMAGE}\n    ports: ['8080']\n"
        f"    volumes: ['{shared}/site:/www:ro']\n"
        "  elsewhere:\n"
        f"    image: {IMAGE}\n    volumes: ['/var/lib/moorage-nowhere:/data']\n"
    )
    cli("deploy", "-f", str(compose), "--detach")
    wait_for(
        lambda: any(
            t["status"] == "running" for t in httpx.get(f"{addr}/v1/tasks?service=site").json()
        ),
        20,
    )
    (site,) = httpx.get(f"{addr}/v1/tasks?service=site").json()
    assert _get(f"http://127.0.0.1:{site['ports']['p8080']}/") == "from the node's own directory\n"
    events = cli("events", "-o", "json").stdout
    assert "no node shares the host path /var/lib/moorage-nowhere" in events


def test_the_docker_socket_is_not_shared_without_its_opt_in(tmp_path: Path) -> None:
    if not Path("/var/run/docker.sock").exists():
        pytest.skip("SKIPPED LOUDLY: no Docker socket on this machine")
    result = subprocess.run(
        [
            *MOORAGE,
            "agent",
            "--server",
            "127.0.0.1:1",
            "--data-dir",
            str(tmp_path),
            "--host-volume",
            "docker=/var/run",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2, result.stderr
    assert "host-volume" in result.stderr and "--allow-docker-socket" in result.stderr


def test_validate_names_an_unsupported_key_and_its_docs(tmp_path: Path) -> None:
    path = tmp_path / "compose.yml"
    path.write_text("services:\n  web:\n    image: x\n    tty: true\n    pid: host\n")
    result = subprocess.run(
        [*MOORAGE, "validate", "-f", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert (
        "services.web.pid" in result.stderr
        and "docs/formats.md#compose-service-keys" in result.stderr
    )
    path.write_text("services:\n  web:\n    image: x\n    tty: true\n")
    result = subprocess.run(
        [*MOORAGE, "validate", "-f", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "services.web.tty" in line]
    assert line.startswith("warning: ") and "(see docs/formats.md#compose-service-keys)" in line


# ---- three nodes, each with its own Docker engine --------------------------------------------
@pytest.fixture
def engines(tmp_path: Path, node_engines: None, docker_image: str) -> Iterator[Cluster]:
    with Cluster(tmp_path / "cluster", agents=3, netns=True, node_engines=True) as cluster:
        yield cluster


def test_compose_app_on_three_nodes_built_pushed_and_pulled(
    engines: Cluster, nginx: None, tmp_path: Path
) -> None:
    builder = engines.docker_host("n1")
    ensure_image(builder)  # the base image, on the engine the CLI builds with
    registry = engines.engines.registry if engines.engines else None
    assert registry is not None
    app_port = 18081
    project = _project(tmp_path / "shop", app_port, replicas=3)

    def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return engines.cli(
            *args,
            *(["--registry", registry.address] if args[0] == "deploy" else []),
            env={"DOCKER_HOST": builder},
            timeout=timeout,
        )

    def docker_of(node: str) -> list[str]:
        return ["docker", "-H", engines.docker_host(node)]

    _must_show(
        cli,
        project,
        engines.tasks,
        engines.addresses,
        docker_of,
        app_port,
        lambda path: engines.http.get(path).json(),
    )
    assert registry.tags("shop-app") and registry.tags("shop-proxy")
    nodes = {t["node"] for t in engines.running("app")}
    assert nodes == {"n1", "n2", "n3"}  # n2 and n3 pulled it from the registry
    pulled = subprocess.run(
        [*docker_of("n3"), "images", "--format", "{{.Repository}}"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.split()
    assert f"{registry.address}/shop-app" in pulled


def test_ecs_host_network_gets_its_static_port_once_per_node(
    engines: Cluster, tmp_path: Path
) -> None:
    registry = engines.engines.registry if engines.engines else None
    assert registry is not None
    image = f"{registry.address}/busybox:1"
    n1 = ["docker", "-H", engines.docker_host("n1")]
    ensure_image(engines.docker_host("n1"))
    for args in (["tag", IMAGE, image], ["push", image]):
        subprocess.run([*n1, *args], check=True, capture_output=True, timeout=120)
    edge = {
        "family": "edge",
        "networkMode": "host",
        "containerDefinitions": [
            {
                "name": "edge",
                "image": image,
                "memory": 32,
                "command": [
                    "sh",
                    "-c",
                    "echo edge on $MOORAGE_NODE > /www/index.html; exec httpd -f -p 18090 -h /www",
                ],
                "portMappings": [{"containerPort": 18090}],
            }
        ],
    }
    path = tmp_path / "edge.json"
    path.write_text(json.dumps(edge))
    engines.cli("deploy", "--ecs", str(path), "--count", "2")
    running = engines.wait_running("edge", 2, timeout=60)
    assert len({t["node"] for t in running}) == 2  # never two on one node: the port is static
    for task in running:
        assert task["ports"] == {"p18090": 18090}
        url, want = f"http://{engines.addresses[task['node']]}:18090/", f"edge on {task['node']}\n"
        wait_for(lambda url=url, want=want: _get(url) == want, 20)
    engines.cli("scale", "edge", "4")
    wait_for(lambda: "host port 18090" in engines.cli("events", "-o", "json").stdout, 20)
    assert len(engines.running("edge")) == 3
