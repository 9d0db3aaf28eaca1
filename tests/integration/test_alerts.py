"""Alerts end to end: a real server and agent, a local webhook receiver.

A node_down rule (loaded with `--alert-rules`) fires when the agent is SIGKILLed — the node itself
reports nothing — and the receiver gets one Alertmanager v4 payload, then one resolved payload
when the agent is back. A receiver answering 500 is retried, and the failure shows in
`moorage alerts`."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from .cluster import Cluster, http_spec, wait_for

pytestmark = pytest.mark.integration


class Receiver:
    """A webhook receiver on 127.0.0.1: records every JSON body, answers `status`."""

    def __init__(self) -> None:
        self.got: list[dict[str, Any]] = []
        self.status = 200
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.got.append(json.loads(body))
                self.send_response(outer.status)
                self.end_headers()
                self.wfile.write(b"receiver says no" if outer.status >= 400 else b"ok")

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def statuses(self) -> list[str]:
        return [body["status"] for body in self.got]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


def test_node_down_fires_once_then_resolves_with_alertmanager_payloads(
    tmp_path: Path, receiver: Receiver
) -> None:
    rules = tmp_path / "alerts.yaml"
    rules.write_text(
        f"""
rules:
  - name: node-down
    kind: node_down
    severity: critical
    group_by: [alertname, node]
    summary: "node {{{{ $labels.node }}}} stopped answering"
notifiers:
  hook: {{kind: webhook, url: "{receiver.url}"}}
"""
    )
    args = ["--alert-rules", str(rules), "--alert-interval", "1s"]
    with Cluster(tmp_path / "c", server_args=args) as cluster:
        assert [r["name"] for r in cluster.http.get("/v1/alerts/rules").json()] == ["node-down"]
        cluster.kill("n1")
        wait_for(lambda: receiver.got, 30, 0.2, "a firing notification")
        time.sleep(3)  # evaluations go on: nothing more is sent while it keeps firing
        assert receiver.statuses() == ["firing"]
        body = receiver.got[0]
        assert body["version"] == "4" and body["receiver"] == "hook"
        assert body["groupKey"] == '{}:{alertname="node-down", node="n1"}'
        assert body["groupLabels"] == {"alertname": "node-down", "node": "n1"}
        (alert,) = body["alerts"]
        assert alert["labels"] == {"alertname": "node-down", "node": "n1", "severity": "critical"}
        assert alert["annotations"]["summary"] == "node n1 stopped answering"
        assert alert["endsAt"] == "0001-01-01T00:00:00Z" and alert["fingerprint"]
        shown = cluster.cli_json("alerts")["alerts"]
        assert [(a["rule"], a["state"]) for a in shown] == [("node-down", "firing")]
        assert shown[0]["last_notified"] is not None
        table = cluster.cli("alerts").stdout
        assert "node-down" in table and "firing" in table and "node=n1" in table

        cluster.restart("n1")
        wait_for(lambda: len(receiver.got) >= 2, 30, 0.2, "a resolved notification")
        time.sleep(2)
        assert receiver.statuses() == ["firing", "resolved"]
        (resolved,) = receiver.got[1]["alerts"]
        assert resolved["status"] == "resolved" and resolved["endsAt"] != alert["endsAt"]
        assert resolved["fingerprint"] == alert["fingerprint"]
        types = [e["type"] for e in cluster.events()]
        assert "alert.firing" in types and "alert.resolved" in types


def test_a_failing_receiver_is_retried_and_the_failure_shows(
    tmp_path: Path, receiver: Receiver
) -> None:
    receiver.status = 500
    with Cluster(tmp_path, server_args=["--alert-interval", "1s"]) as cluster:
        rules = tmp_path / "rules.yaml"
        rules.write_text(
            f"""
rules:
  - {{name: web-unhealthy, kind: service_health, match: {{service: web}}}}
notifiers:
  broken: {{kind: webhook, url: "{receiver.url}"}}
"""
        )
        out = cluster.cli("alerts", "rules", "apply", "-f", str(rules)).stdout
        assert "rule web-unhealthy applied (service_health, warning)" in out
        # Nowhere to place it: 0 healthy of 1.
        cluster.deploy(http_spec(count=1, extra='placement: {constraints: ["zone == nowhere"]}'))
        wait_for(lambda: len(receiver.got) >= 3, 30, 0.2, "three attempts")
        time.sleep(1.5)

        def failure_shown() -> str | None:
            table = cluster.cli("alerts").stdout
            return table if "failed notifications" in table else None

        table = wait_for(failure_shown, 15, 0.5, "the failure in `moorage alerts`")
        assert "broken" in table and "HTTP 500: receiver says no" in table
        data = cluster.cli_json("alerts")
        (alert,) = data["alerts"]
        assert alert["failures"] >= 1 and alert["last_error"].startswith("HTTP 500")
        assert alert["last_notified"] is None

        receiver.status = 200  # the receiver is back: the retry after the backoff delivers
        attempts = len(receiver.got)
        wait_for(lambda: receiver.got[-1:] and len(receiver.got) > attempts, 30, 0.2, "retry")
        wait_for(lambda: cluster.cli_json("alerts")["alerts"][0]["failures"] == 0, 10, 0.5)

        silence = cluster.cli("silence", "add", "-m", "alertname=web-unhealthy", "-d", "1h")
        silence_id = silence.stdout.strip()
        listed = cluster.cli_json("silence", "ls")
        assert [(s["id"], s["state"]) for s in listed] == [(silence_id, "active")]
        assert cluster.cli_json("alerts")["alerts"][0]["silenced"] is True
        cluster.cli("silence", "rm", silence_id)
        assert cluster.cli_json("silence", "ls") == []


def test_a_cpu_burning_task_fires_a_threshold_rule_then_resolves(
    tmp_path: Path, receiver: Receiver
) -> None:
    """The issue's must-show: `task_cpu_percent > 80 for 30s` over collected metrics. The
    receiver gets one firing Alertmanager payload, then one resolved after the burn stops."""
    from .cluster import AgentSpec

    rules = tmp_path / "alerts.yaml"
    rules.write_text(
        f"""
rules:
  - name: cpu-hot
    query: {{metric: task_cpu_percent, matchers: {{service: burn}}, agg: avg, window: 6s}}
    op: ">"
    value: 80
    for: 30s
    severity: critical
    group_by: [alertname, service]
notifiers:
  hook: {{kind: webhook, url: "{receiver.url}"}}
"""
    )
    burn = """
service: burn
count: 1
containers:
  - name: app
    command: [sh, -c, "while :; do :; done"]
    cpu: 100
    memory: 32
    stop_timeout: 1s
"""
    args = ["--alert-rules", str(rules), "--alert-interval", "1s"]
    agents = [AgentSpec("n1", args=["--metrics-interval", "2s"])]
    with Cluster(tmp_path / "c", agents=agents, server_args=args) as cluster:
        cluster.deploy(burn)
        (task,) = cluster.wait_running("burn", 1)
        started = time.monotonic()

        def state() -> str | None:
            shown = cluster.cli_json("alerts")["alerts"]
            return shown[0]["state"] if shown else None

        wait_for(lambda: state() == "pending", 30, 0.5, "the rule pending on the burn")
        assert receiver.got == []  # pending: nothing sent before `for` has passed
        wait_for(lambda: receiver.got, 60, 0.5, "a firing notification")
        assert time.monotonic() - started >= 30  # not before `for: 30s`
        assert receiver.statuses() == ["firing"]
        body = receiver.got[0]
        assert body["version"] == "4" and body["status"] == "firing"
        (alert,) = body["alerts"]
        assert alert["labels"]["alertname"] == "cpu-hot"
        assert alert["labels"]["task"] == task["id"] and alert["labels"]["service"] == "burn"

        cluster.cli("stop", "burn")  # the burn stops: no more samples above 80
        wait_for(lambda: len(receiver.got) >= 2, 60, 0.5, "a resolved notification")
        time.sleep(3)
        assert receiver.statuses() == ["firing", "resolved"]
        assert receiver.got[1]["alerts"][0]["fingerprint"] == alert["fingerprint"]
