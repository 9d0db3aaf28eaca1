"""Where an agent started with only `--server` says it is, and where it listens."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from click.testing import CliRunner

from moorage import daemon
from moorage.cli import daemons
from moorage.model import Unavailable


def test_a_local_server_is_reached_over_loopback() -> None:
    assert daemon.local_address(["http://127.0.0.1:7070"]) == "127.0.0.1"
    assert daemon.local_address(["http://localhost:7070"]) == "127.0.0.1"  # IPv4 first


def test_the_first_server_with_a_route_decides() -> None:
    # No socket may send to the broadcast address without SO_BROADCAST: nothing goes out.
    servers = ["http://255.255.255.255:7070", "http://127.0.0.1:7070"]
    assert daemon.local_address(servers) == "127.0.0.1"


def test_no_server_to_send_to_asks_for_advertise(monkeypatch: pytest.MonkeyPatch) -> None:
    def unknown(*args: object, **kwargs: object) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(Unavailable, match="--advertise") as raised:
        daemon.local_address(["http://255.255.255.255:7070"])
    assert "255.255.255.255" in str(raised.value)
    monkeypatch.setattr(socket, "getaddrinfo", unknown)
    with pytest.raises(Unavailable, match=r"nowhere\.example: Name or service not known"):
        daemon.local_address(["http://nowhere.example:7070"])


class Started(Exception):
    pass


def start(monkeypatch: pytest.MonkeyPatch, *args: str) -> dict[str, Any]:
    """Run `moorage agent ARGS` up to the Agent it would start; its configuration's fields."""
    seen: dict[str, Any] = {}

    def agent(config: Any) -> None:
        seen.update(vars(config))
        raise Started

    monkeypatch.setattr(daemon, "Agent", agent)
    monkeypatch.setattr(daemon, "local_address", lambda servers: f"10.0.0.{len(servers)}")
    result = CliRunner().invoke(daemons.agent, args, env={"MOORAGE_TOKEN": "t"})
    assert isinstance(result.exception, Started), result.output
    return seen


def test_by_default_the_agent_advertises_and_listens_at_its_address_to_the_servers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen = start(monkeypatch, "--server", "10.0.0.9:7072")
    assert (seen["advertise_address"], seen["http_addr"]) == ("10.0.0.1", ("10.0.0.1", 7071))
    assert seen["servers"] == ("https://10.0.0.9:7072",) and seen["token"] == "t"
    seen = start(monkeypatch, "--server", "a:7072,https://b:7072", "--advertise", "1.2.3.4")
    assert (seen["advertise_address"], seen["http_addr"]) == ("1.2.3.4", ("1.2.3.4", 7071))


def test_agents_speak_tls_to_the_cluster_port() -> None:
    from moorage.cli.main import cli

    result = CliRunner().invoke(cli, ["agent", "--server", "http://10.0.0.9:7070"])
    assert result.exit_code == 2 and "cluster port" in result.output


def test_the_join_token_comes_from_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    token = tmp_path / "join-token"
    token.write_text("mrg1:" + "a" * 64 + ":secret-secret-secret\n")
    seen = start(monkeypatch, "--token-file", str(token))
    assert seen["token"] == "mrg1:" + "a" * 64 + ":secret-secret-secret"


def test_explicit_addresses_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = start(monkeypatch, "--advertise", "10.9.9.9", "--agent-addr", "0.0.0.0:7171")
    assert (seen["advertise_address"], seen["http_addr"]) == ("10.9.9.9", ("0.0.0.0", 7171))
    seen = start(monkeypatch, "--agent-addr", "127.0.0.1:7172")
    assert (seen["advertise_address"], seen["http_addr"]) == ("10.0.0.1", ("127.0.0.1", 7172))


@pytest.mark.parametrize("flag", ["--http-addr", "--dns-addr"])
def test_the_agent_takes_no_server_options(flag: str) -> None:
    result = CliRunner().invoke(daemons.agent, [flag, "127.0.0.1:1"])
    assert result.exit_code == 2 and f"No such option '{flag}'" in result.output


def test_the_servers_join_line_names_an_address_agents_can_use() -> None:
    from pathlib import Path

    token = Path("/data/join-token")
    wide = daemon._join_line(("0.0.0.0", 7072), token)
    assert "--server <this machine>:7072 --token-file <that file>" in wide
    assert "in /data/join-token" in wide and "only on this machine" not in wide
    assert "--server 10.1.2.3:7072" in daemon._join_line(("10.1.2.3", 7072), token)
    local = daemon._join_line(("127.0.0.1", 7072), token)
    assert "only on this machine: --cluster-addr 0.0.0.0:7072 lets others join" in local


@pytest.mark.parametrize(
    ("listen", "advertise", "reached"),
    [
        (("10.0.0.5", 7071), "10.0.0.5", "10.0.0.5:7071"),
        (("0.0.0.0", 7071), "10.0.0.5", "10.0.0.5:7071"),
        (("::", 7071), "fd00::5", "[fd00::5]:7071"),
        (("fd00::5", 7072), "fd00::5", "[fd00::5]:7072"),
    ],
)
def test_the_servers_reach_the_agent_at_its_listen_or_advertised_address(
    tmp_path: Any, listen: tuple[str, int], advertise: str, reached: str
) -> None:
    from moorage.agent.agent import Agent
    from moorage.agent.config import AgentConfig

    agent = Agent(
        AgentConfig(
            servers=("http://127.0.0.1:7070",),
            name="n1",
            data_dir=tmp_path,
            http_addr=listen,
            advertise_address=advertise,
            cpu=1024,
            memory=1024,
        )
    )
    assert agent.reachable_at() == reached
    assert agent.node().agent_addr == reached
