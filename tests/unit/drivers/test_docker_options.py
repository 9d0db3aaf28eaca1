"""What the Docker driver asks the engine for: runtime options as HostConfig fields."""

from __future__ import annotations

from pathlib import Path

from moorage.drivers.base import StartRequest
from moorage.drivers.docker import DockerDriver
from moorage.model import Container


def _config(container: dict[str, object]) -> dict[str, object]:
    spec = Container.model_validate({"name": "app", "image": "x", **container})
    request = StartRequest("t1", spec, {"MOORAGE_SERVICE": "web"}, {"http": 23000}, Path("/tmp"))
    return DockerDriver()._config(request)


def test_runtime_options_become_host_config_fields() -> None:
    config = _config(
        {
            "cap_add": ["NET_ADMIN"],
            "cap_drop": ["ALL"],
            "ulimits": {"nofile": {"soft": 1024, "hard": 4096}},
            "sysctls": {"net.core.somaxconn": "1024"},
            "shm_size": "64MiB",
            "tmpfs": [{"path": "/run", "size": "16MiB", "mode": 0o1777}],
            "init": False,
            "stop_signal": "SIGQUIT",
            "extra_hosts": {"db": "10.0.0.5"},
            "read_only": True,
            "privileged": True,
            "ports": [{"name": "http", "container": 8080}],
        }
    )
    host = config["HostConfig"]
    assert isinstance(host, dict)
    assert host["CapAdd"] == ["NET_ADMIN"] and host["CapDrop"] == ["ALL"]
    assert host["Ulimits"] == [{"Name": "nofile", "Soft": 1024, "Hard": 4096}]
    assert host["Sysctls"] == {"net.core.somaxconn": "1024"}
    assert host["ShmSize"] == 64 * 1024 * 1024
    assert host["Tmpfs"] == {"/run": f"size={16 * 1024 * 1024},mode=1777"}
    assert host["Init"] is False and config["StopSignal"] == "SIGQUIT"
    assert host["ExtraHosts"] == ["db:10.0.0.5"]
    assert host["ReadonlyRootfs"] is True and host["Privileged"] is True
    assert host["PortBindings"] == {"8080/tcp": [{"HostIp": "", "HostPort": "23000"}]}


def test_defaults_ask_for_nothing_new() -> None:
    host = _config({})["HostConfig"]
    assert isinstance(host, dict)
    assert set(host) == {"PortBindings", "Memory", "CpuShares", "Init"} and host["Init"] is True


def test_the_host_network_publishes_nothing() -> None:
    config = _config({"network_mode": "host", "ports": [{"name": "http", "container": 8443}]})
    host = config["HostConfig"]
    assert isinstance(host, dict)
    assert host["NetworkMode"] == "host" and "PortBindings" not in host
    assert config["ExposedPorts"] == {}
