"""Compose files and ECS task definitions as teams have them: builds, bind-mounted configs, host
volumes, Docker's runtime options and every ECS network mode (docs/formats.md)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from moorage.model import SpecError, TaskDefinition, parse_specs
from moorage.model.compose import Build, from_compose
from moorage.model.ecs import from_ecs

APP = """
name: shop
services:
  app:
    build:
      context: ./app
      dockerfile: Dockerfile.prod
      args: {VERSION: "2"}
      target: runtime
    cap_add: [NET_ADMIN]
    cap_drop: [ALL]
    ulimits: {nofile: {soft: 1024, hard: 4096}, nproc: 512}
    sysctls: [net.core.somaxconn=1024]
    shm_size: 64m
    tmpfs: ["/run:size=16m,mode=1777", /tmp]
    init: false
    stop_signal: SIGQUIT
    extra_hosts: ["db.local:10.0.0.5", "host.docker.internal=host-gateway"]
    read_only: true
    expose: ["8080"]
  proxy:
    image: nginx:1.27
    ports: ["80:80"]
    volumes:
      - ./nginx.conf:/etc/nginx/nginx.conf:ro
      - ./html:/usr/share/nginx/html
      - /srv/certs:/certs:ro
    configs:
      - site
      - {source: motd, target: /etc/motd}
configs:
  site: {file: ./site.conf}
  motd: {content: "welcome"}
"""


def _tree(root: Path) -> None:
    (root / "app").mkdir()
    (root / "app" / "Dockerfile.prod").write_text("FROM scratch\n")
    (root / "nginx.conf").write_text("events {}\n")
    (root / "html").mkdir()
    (root / "html" / "index.html").write_text("hi\n")
    (root / "html" / "img").mkdir()
    (root / "html" / "img" / "logo.png").write_bytes(b"\x89PNG\xff")
    (root / "site.conf").write_text("server {}\n")


def test_a_build_is_planned_and_the_spec_names_its_image(tmp_path: Path) -> None:
    _tree(tmp_path)
    loaded = from_compose(APP, tmp_path, lambda b: f"registry.local:5000/{b.repository}:abc123")
    (build,) = loaded.builds
    assert build == Build(
        service="app",
        repository="shop-app",
        context=tmp_path / "app",
        dockerfile="Dockerfile.prod",
        args={"VERSION": "2"},
        target="runtime",
        image="registry.local:5000/shop-app:abc123",
    )
    app = {s.service: s for s in loaded.specs}["app"].containers[0]
    assert app.image == "registry.local:5000/shop-app:abc123"


def test_docker_runtime_options_pass_through(tmp_path: Path) -> None:
    _tree(tmp_path)
    app = {s.service: s for s in from_compose(APP, tmp_path).specs}["app"].containers[0]
    assert (app.cap_add, app.cap_drop) == (["NET_ADMIN"], ["ALL"])
    limits = {k: (v.soft, v.hard) for k, v in app.ulimits.items()}
    assert limits == {"nofile": (1024, 4096), "nproc": (512, 512)}
    assert app.sysctls == {"net.core.somaxconn": "1024"}
    assert app.shm_size == f"{64 * 1024 * 1024}B"
    assert [(t.path, t.size, t.mode) for t in app.tmpfs] == [
        ("/run", f"{16 * 1024 * 1024}B", 0o1777),
        ("/tmp", None, None),
    ]
    assert (app.init, app.stop_signal, app.read_only) == (False, "SIGQUIT", True)
    assert app.extra_hosts == {"db.local": "10.0.0.5", "host.docker.internal": "host-gateway"}


def test_bind_mounts_under_the_compose_dir_become_configs(tmp_path: Path) -> None:
    _tree(tmp_path)
    proxy = {s.service: s for s in from_compose(APP, tmp_path).specs}["proxy"]
    mounts = [(m.config, m.path, m.read_only) for m in proxy.containers[0].configs]
    assert mounts == [
        ("nginx-conf", "/etc/nginx/nginx.conf", True),
        ("html", "/usr/share/nginx/html", False),  # compose binds are writable: a private copy
        ("site", "/site", True),
        ("motd", "/etc/motd", True),
    ]
    assert proxy.configs["nginx-conf"].text == "events {}\n"
    assert proxy.configs["motd"].text == "welcome"
    html = proxy.configs["html"].contents()
    assert html == {"index.html": b"hi\n", "img/logo.png": b"\x89PNG\xff"}
    # an absolute path is the node's own directory: a host volume
    (mount,) = proxy.containers[0].mounts
    assert proxy.volumes[mount.volume].host_path == "/srv/certs" and mount.read_only


def test_a_changed_config_file_is_a_new_revision(tmp_path: Path) -> None:
    _tree(tmp_path)

    def taskdef() -> TaskDefinition:
        proxy = {s.service: s for s in from_compose(APP, tmp_path).specs}["proxy"]
        return TaskDefinition(
            family="proxy", revision=1, containers=proxy.containers, configs=proxy.configs
        )

    before = taskdef().content_hash()
    assert taskdef().content_hash() == before
    (tmp_path / "nginx.conf").write_text("events { worker_connections 64; }\n")
    assert taskdef().content_hash() != before


def test_revisions_stored_before_these_fields_keep_their_hash() -> None:
    """A spec deployed again after an upgrade is no new revision."""
    container = {"name": "web", "image": "x", "ports": [{"name": "http", "container": 80}]}
    taskdef = TaskDefinition(family="web", revision=1, containers=[container])  # type: ignore[list-item]
    old_fields = {
        *("name", "image", "command", "entrypoint", "workdir", "user", "cpu", "memory"),
        *("memory_reservation", "ports", "env", "secrets", "health", "mounts", "essential"),
        *("depends_on", "stop_timeout", "labels"),
    }
    dumped = taskdef.containers[0].model_dump(mode="json")
    body = {"containers": [{k: v for k, v in dumped.items() if k in old_fields}], "volumes": {}}
    raw = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    assert taskdef.content_hash() == hashlib.sha256(raw).hexdigest()[:16]


def test_configs_are_capped_and_stay_inside_the_compose_dir(tmp_path: Path) -> None:
    (tmp_path / "big.bin").write_bytes(b"x" * (1024 * 1024 + 1))
    (tmp_path / "outside").mkdir()
    (tmp_path / "project").mkdir()
    (tmp_path / "outside" / "secret").write_text("s3cret")
    (tmp_path / "project" / "conf").mkdir()
    (tmp_path / "project" / "conf" / "leak").symlink_to(tmp_path / "outside" / "secret")
    text = "services:\n  a:\n    image: x\n    volumes: ['../big.bin:/big']\n"
    with pytest.raises(SpecError, match="outside the compose file's directory"):
        from_compose(text, tmp_path / "project")
    text = "services:\n  a:\n    image: x\n    volumes: ['./conf:/conf']\n"
    with pytest.raises(SpecError, match="leads out of the compose directory"):
        from_compose(text, tmp_path / "project")
    with pytest.raises(SpecError) as caught:
        from_compose("services:\n  a:\n    image: x\n    volumes: ['./big.bin:/big']\n", tmp_path)
    (error,) = caught.value.errors
    assert error.field == "services.a.configs.big-bin" and "at most 1 MiB" in error.message


def test_network_mode_host_pins_ports_as_static_host_ports(tmp_path: Path) -> None:
    text = "services:\n  lb:\n    image: x\n    network_mode: host\n    ports: ['8443']\n"
    (lb,) = from_compose(text, tmp_path).specs
    container = lb.containers[0]
    assert container.network_mode == "host"
    assert [(p.container, p.host) for p in container.ports] == [(8443, 8443)]


def test_runtime_options_are_bounded_naming_the_field() -> None:
    spec = """
service: bad
containers:
  - name: app
    image: x
    sysctls: {vm.swappiness: "10"}
    stop_signal: SIGNOPE
    cap_add: ["net_admin; rm -rf /"]
    ulimits: {nofile: {soft: 10, hard: 5}}
    extra_hosts: {db: not-an-ip}
"""
    with pytest.raises(SpecError) as caught:
        parse_specs(spec)
    fields = {e.field for e in caught.value.errors}
    assert fields == {
        "containers[0].sysctls",
        "containers[0].stop_signal",
        "containers[0].cap_add",
        "containers[0].ulimits.nofile",
        "containers[0].extra_hosts",
    }
    messages = " ".join(e.message for e in caught.value.errors)
    assert "not namespaced" in messages
    with pytest.raises(SpecError, match="'bogus' is not a ulimit"):
        parse_specs("service: b\ncontainers: [{name: a, image: x, ulimits: {bogus: 1}}]\n")


def test_the_process_driver_refuses_docker_only_options() -> None:
    spec = """
service: p
containers:
  - name: app
    command: [sleep, "1"]
    user: nobody
    ulimits: {nofile: 1024}
    stop_signal: SIGINT
    cap_add: [NET_ADMIN]
    privileged: true
"""
    with pytest.raises(SpecError) as caught:
        parse_specs(spec)
    assert {e.field for e in caught.value.errors} == {
        "containers[0].cap_add",
        "containers[0].privileged",
    }


def test_a_config_spec_holds_one_kind_of_content_and_safe_paths() -> None:
    base = "service: c\ncontainers: [{name: a, image: x, configs: [{config: c, path: /c}]}]\n"
    good = (
        base + "configs: {c: {files: {'conf.d/a.conf': " + base64.b64encode(b"a").decode() + "}}}\n"
    )
    (spec,) = parse_specs(good)
    assert spec.configs["c"].contents() == {"conf.d/a.conf": b"a"}
    for bad in ("'../etc/passwd'", "'/abs'", "'a/../../b'"):
        with pytest.raises(SpecError, match="relative path"):
            parse_specs(base + f"configs: {{c: {{files: {{{bad}: YQ==}}}}}}\n")
    with pytest.raises(SpecError, match="exactly one of"):
        parse_specs(base + "configs: {c: {text: a, data: YQ==}}\n")
    with pytest.raises(SpecError, match="unknown config"):
        parse_specs(base.replace("config: c", "config: d") + "configs: {c: {text: a}}\n")


FARGATE = {
    "taskDefinition": {
        "family": "sample-fargate",
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "cpu": "256",
        "memory": "0.5 GB",
        "executionRoleArn": "arn:aws:iam::123456789012:role/ecsTaskExecutionRole",
        "containerDefinitions": [
            {
                "name": "fargate-app",
                "image": "public.ecr.aws/docker/library/httpd:latest",
                "portMappings": [{"containerPort": 80, "hostPort": 80, "protocol": "tcp"}],
                "essential": True,
            },
            {"name": "sidecar", "image": "busybox", "memory": 64, "essential": False},
        ],
        "status": "ACTIVE",
    }
}


def test_a_fargate_task_definition_shares_its_task_resources() -> None:
    spec, warnings = from_ecs(json.loads(json.dumps(FARGATE)))
    app, sidecar = spec.containers
    assert (app.memory, sidecar.memory) == (512 - 64, 64)
    assert (app.cpu, sidecar.cpu) == (128, 128)  # neither sets cpu: halves of 256
    assert [(p.container, p.host) for p in app.ports] == [(80, None)]  # dynamic on the node
    notices = {w.field: w.message for w in warnings}
    assert "dynamic host port" in notices["containerDefinitions[0].portMappings[0]"]
    assert {"requiresCompatibilities", "executionRoleArn", "status"} <= set(notices)


def test_ecs_host_mode_and_linux_parameters() -> None:
    data = {
        "family": "edge",
        "networkMode": "host",
        "containerDefinitions": [
            {
                "name": "edge",
                "image": "haproxy",
                "memory": 128,
                "portMappings": [{"containerPort": 8443}],
                "ulimits": [{"name": "nofile", "softLimit": 65536, "hardLimit": 65536}],
                "linuxParameters": {
                    "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["MKNOD"]},
                    "initProcessEnabled": True,
                    "sharedMemorySize": 128,
                    "tmpfs": [{"containerPath": "/run", "size": 16}],
                    "swappiness": 10,
                },
                "systemControls": [{"namespace": "net.ipv4.tcp_keepalive_time", "value": "60"}],
                "extraHosts": [{"hostname": "db", "ipAddress": "10.0.0.9"}],
                "readonlyRootFilesystem": True,
            }
        ],
    }
    with pytest.raises(SpecError, match=r"net\.\* sysctls need the container's own network"):
        from_ecs(json.loads(json.dumps(data)))
    del data["containerDefinitions"][0]["systemControls"]  # type: ignore[index, attr-defined]
    spec, warnings = from_ecs(data)
    edge = spec.containers[0]
    assert edge.network_mode == "host"
    assert [(p.container, p.host) for p in edge.ports] == [(8443, 8443)]
    assert (edge.cap_add, edge.cap_drop, edge.init) == (["NET_BIND_SERVICE"], ["MKNOD"], True)
    assert (edge.shm_size, edge.read_only) == ("128MiB", True)
    assert [(t.path, t.size) for t in edge.tmpfs] == [("/run", "16MiB")]
    assert edge.ulimits["nofile"].soft == 65536 and edge.extra_hosts == {"db": "10.0.0.9"}
    assert [w.field for w in warnings] == ["containerDefinitions[0].linuxParameters.swappiness"]
    assert "docs/formats.md#" in warnings[0].message
