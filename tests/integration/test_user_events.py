"""User events: `moorage event fire` reaches the agents' handlers (seed 002's event-based
configuration), the list is Consul's `/v1/event/list` with blocking queries."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .cluster import AgentSpec, Cluster, http_spec, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def handlers(tmp_path: Path) -> Iterator[Cluster]:
    out = tmp_path / "out"
    out.mkdir()
    agents = [
        AgentSpec(
            name,
            {"zone": zone},
            args=[
                "--event-handler",
                f'reload=cat > {out}/{name}-$MOORAGE_EVENT_ID.json; echo "$MOORAGE_EVENT_PAYLOAD"'
                f" > {out}/{name}-$MOORAGE_EVENT_ID.payload",
            ],
        )
        for name, zone in (("n1", "a"), ("n2", "b"))
    ]
    with Cluster(tmp_path / "cluster", agents=agents) as cluster:
        yield cluster


def test_a_fired_event_runs_the_handlers_of_the_nodes_it_targets(
    handlers: Cluster, tmp_path: Path
) -> None:
    cluster = handlers
    out = tmp_path / "out"
    before = cluster.http.get("/v1/event/list")
    index = int(before.headers["X-Consul-Index"])
    assert before.json() == []

    woke: dict[str, Any] = {}

    def blocked() -> None:
        with httpx.Client(base_url=cluster.addr, timeout=60) as client:
            woke["response"] = client.get("/v1/event/list", params={"index": index, "wait": "30s"})

    waiter = threading.Thread(target=blocked)
    waiter.start()
    time.sleep(0.3)
    fired = cluster.cli_json("event", "fire", "reload", '{"version": 2}')
    waiter.join(30)
    assert [e["ID"] for e in woke["response"].json()] == [fired["ID"]]

    def ran(node: str) -> Path | None:
        path = out / f"{node}-{fired['ID']}.json"
        return path if path.exists() and path.stat().st_size else None

    for node in ("n1", "n2"):
        [event] = json.loads(wait_for(lambda n=node: ran(n), 15).read_text())
        assert event["Name"] == "reload" and base64.b64decode(event["Payload"]) == b'{"version": 2}'
        payload = (out / f"{node}-{fired['ID']}.payload").read_text()
        assert payload.strip() == '{"version": 2}'

    # a node filter: only n2 runs it; an event without a handler runs nothing
    only = cluster.cli_json("event", "fire", "reload", "x", "--node", "n2")
    cluster.cli("event", "fire", "other", "y")
    wait_for(lambda: ran("n2") and (out / f"n2-{only['ID']}.json").exists(), 15)
    time.sleep(1.0)
    assert not (out / f"n1-{only['ID']}.json").exists()
    listed = cluster.cli_json("event", "ls")
    assert [e["Name"] for e in listed] == ["reload", "reload", "other"]
    assert [e["Name"] for e in cluster.cli_json("event", "ls", "--name", "other")] == ["other"]
    ltimes = [e["LTime"] for e in listed]
    assert ltimes == sorted(ltimes) and len(set(ltimes)) == 3

    bad = cluster.cli("event", "fire", "no spaces", check=False)
    assert bad.returncode == 2 and "name" in bad.stderr


def test_service_and_tag_filters_pick_the_nodes_running_that_service(
    handlers: Cluster, tmp_path: Path
) -> None:
    cluster = handlers
    out = tmp_path / "out"
    placement = 'placement: {constraints: ["zone == a"]}\ndiscovery: {tags: [blue, v2]}'
    cluster.deploy(http_spec(count=1, extra=placement))
    (task,) = cluster.wait_running("web", 1)
    assert task["node"] == "n1"

    def handled(event_id: str) -> set[str]:
        return {node for node in ("n1", "n2") if (out / f"{node}-{event_id}.json").exists()}

    cases = [
        ({"service": "web"}, {"n1"}),
        ({"service": "^w", "tag": "^blu"}, {"n1"}),  # unanchored regexps, as Consul's
        ({"service": "web", "tag": "green"}, set()),
        ({"node": "n"}, {"n1", "n2"}),
        ({"node": "n", "service": "db"}, set()),
    ]
    fired = []
    for filters, _ in cases:
        args = [arg for key, value in filters.items() for arg in (f"--{key}", value)]
        fired.append(cluster.cli_json("event", "fire", "reload", "x", *args)["ID"])
    # the server sends each agent only the events aimed at it
    for (filters, nodes), event_id in zip(cases, fired, strict=True):
        for node in ("n1", "n2"):
            aimed = cluster.http.get("/v1/event/list", params={"node": node}).json()
            assert (event_id in [e["ID"] for e in aimed]) == (node in nodes), (filters, node)
    # and the handlers ran exactly there (a later event proves the earlier ones were seen)
    marker = cluster.cli_json("event", "fire", "reload", "end")["ID"]
    wait_for(lambda: handled(marker) == {"n1", "n2"}, 15)
    for (filters, nodes), event_id in zip(cases, fired, strict=True):
        assert handled(event_id) == nodes, filters

    refused = cluster.cli("event", "fire", "reload", "--tag", "blue", check=False)
    assert refused.returncode == 2 and "tag" in refused.stderr
    bad = cluster.cli("event", "fire", "reload", "--service", "(", check=False)
    assert bad.returncode == 2 and "service" in bad.stderr
    unsupported = cluster.http.get("/v1/event/list", params={"service": "web"})
    assert unsupported.status_code == 400 and "service" in unsupported.text
