"""Volumes across nodes, on a 3-node network-namespace cluster (root; CI sets
MOORAGE_REQUIRE_NETNS=1): a `read-only-many` volume attached on every node at once, its image
loop-mounted read-only on each and unwritable inside the tasks; a task on a `local` volume
pending, with its reason, while that volume's node is down, and running there again once it is
back; `volume rm` of a local volume whose node is down refused with the volume kept as it was,
and its files gone once the node is back."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from moorage.volumes.layout import IMAGE

from .cluster import AgentSpec, Cluster, wait_for
from .volume_helpers import require_netns, volume

pytestmark = pytest.mark.integration

LEASE = 3.0  # the agents' --volume-lease: a dead holder's claim runs out quickly


@pytest.fixture(scope="module")
def nodes3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require_netns()
    agents = [
        AgentSpec(f"n{i}", {"zone": zone}, args=["--volume-lease", f"{LEASE:g}s"])
        for i, zone in enumerate("abc", start=1)
    ]
    with Cluster(tmp_path_factory.mktemp("volnodes"), agents=agents, netns=True) as cluster:
        yield cluster


def stdout(cluster: Cluster, task: dict[str, Any]) -> str:
    number = task["node"].removeprefix("n")
    path = cluster.root / f"node{number}" / "agent" / "alloc" / task["id"] / "logs" / "app.stdout"
    return path.read_text() if path.exists() else ""


def image_mounts(cluster: Cluster, name: str) -> dict[Path, str]:
    """Mountpoint → mount options of every loop mount of shared volume `name`'s image."""
    image = str(cluster.root / "shared-volumes" / name / IMAGE)
    found = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields, source = line.split(" - ", 1)[0].split(), line.split(" - ", 1)[1].split()[1]
            if not source.startswith("/dev/loop"):
                continue
            device = source.removeprefix("/dev/")
            backing = Path(f"/sys/block/{device}/loop/backing_file")
            if backing.exists() and backing.read_text().strip() == image:
                found[Path(fields[4])] = fields[5]
    return found


SEEDER = """
service: seeder
count: 1
volumes:
  seed: {driver: shared, size: 16MiB, scope: shared, autoprovision: true}
containers:
  - name: app
    command: ["sh", "-c", "echo hello from the seeder > /seed/greeting && sync && sleep 300"]
    memory: 32
    stop_timeout: 1s
    mounts: [{volume: seed, path: /seed}]
"""
READERS = """
service: readers
count: 3
placement: {constraints: [distinct_hosts]}
volumes:
  ref: {driver: shared, scope: shared, access: read-only-many, autoprovision: false}
containers:
  - name: app
    command: ["sh", "-c", "cat /ref/greeting; if echo x > /ref/scribble; then echo ref-writable;
              else echo ref-read-only; fi; echo done; sleep 300"]
    memory: 32
    stop_timeout: 1s
    mounts: [{volume: ref, path: /ref, read_only: true}]
"""


def test_a_read_only_many_volume_is_attached_on_every_node_at_once(nodes3: Cluster) -> None:
    cluster = nodes3
    # fill a single-writer volume, then restore its snapshot as a read-only-many one
    cluster.deploy(SEEDER)
    [seeder] = cluster.wait_running("seeder", 1, timeout=60)
    number = seeder["node"].removeprefix("n")
    greeting = cluster.root / f"node{number}" / "agent" / "volume-mounts" / "seed" / "greeting"
    wait_for(greeting.exists, 20, 0.2, "the seeder's greeting")
    cluster.cli("stop", "seeder")
    wait_for(lambda: volume(cluster, "seed")["state"] == "detached", 30, 0.2, "seed detached")
    taken = cluster.http.post("/v1/volumes/seed/snapshots")
    assert taken.status_code == 200, taken.text
    restored = cluster.http.post(
        f"/v1/snapshots/seed/{taken.json()['id']}/restore",
        json={"name": "ref", "access": "read-only-many"},
    )
    assert restored.status_code == 200, restored.text

    cluster.deploy(READERS)
    tasks = cluster.wait_running("readers", 3, timeout=60)
    assert {t["node"] for t in tasks} == {"n1", "n2", "n3"}, tasks
    ref = volume(cluster, "ref")
    assert ref["state"] == "attached" and ref["size_enforced"] is True, ref
    assert sorted(a["node"] for a in ref["attachments"]) == ["n1", "n2", "n3"], ref
    assert len({a["epoch"] for a in ref["attachments"]}) == 3  # every grant bumps the epoch
    for task in tasks:
        out = wait_for(lambda t=task: "done" in stdout(cluster, t) and stdout(cluster, t), 20)
        assert "hello from the seeder" in out and "ref-read-only" in out, (task["node"], out)
    mounts = image_mounts(cluster, "ref")
    expected = {cluster.root / f"node{i}" / "agent" / "volume-mounts" / "ref" for i in (1, 2, 3)}
    assert set(mounts) == expected, mounts  # one loop mount of the image per node
    assert all("ro" in options.split(",") for options in mounts.values()), mounts
    listed = cluster.cli("volume", "ls").stdout
    assert "read-only-many" in listed and "16MiB (ext4)" in listed, listed

    refused = cluster.cli("volume", "rm", "ref", check=False)
    assert refused.returncode == 1 and "attached" in refused.stderr, refused
    cluster.cli("stop", "readers")
    wait_for(lambda: volume(cluster, "ref")["state"] == "detached", 30, 0.2, "ref detached")
    wait_for(lambda: not image_mounts(cluster, "ref"), 20, 0.2, "every reader unmounted")


PINNED = """
service: pinned
count: 1
volumes:
  pg: {driver: local, scope: shared, autoprovision: false}
containers:
  - name: app
    command: ["sh", "-c", "cat /pg/row 2>/dev/null; echo row >> /pg/row; echo done; sleep 300"]
    memory: 32
    stop_timeout: 1s
    mounts: [{volume: pg, path: /pg}]
"""
WAITS = "volume pg is local to node n2, which is down: the task waits for that node"


def live(cluster: Cluster, service: str) -> list[dict[str, Any]]:
    return [t for t in cluster.tasks(service) if t["desired"] == "run"]


def test_a_task_on_a_local_volume_waits_for_its_node_and_rm_waits_too(nodes3: Cluster) -> None:
    cluster = nodes3
    cluster.cli("volume", "create", "pg", "--driver", "local", "--node", "n2")
    cluster.deploy(PINNED)
    [first] = cluster.wait_running("pinned", 1, timeout=60)
    assert first["node"] == "n2"
    files = cluster.root / "node2" / "agent" / "volumes" / "pg"
    wait_for(lambda: (files / "data" / "row").exists(), 20, 0.2, "the first row")

    cluster.kill("n2")
    try:
        wait_for(lambda: cluster.nodes()["n2"] == "down", 30, 0.2, "n2 down")

        def pending() -> dict[str, Any] | None:
            tasks = live(cluster, "pinned")
            ok = len(tasks) == 1 and tasks[0]["status"] == "pending"
            return tasks[0] if ok and tasks[0]["message"] == WAITS else None

        waiting = wait_for(pending, 30, 0.2, "the replacement pending with its reason")
        assert waiting["id"] != first["id"] and not waiting["node"], waiting
        time.sleep(2 * LEASE)  # n1 and n3 are ready: it still waits for n2
        assert pending() is not None, live(cluster, "pinned")
        assert WAITS in cluster.cli("ps", "pinned").stdout
    finally:
        cluster.restart("n2")
    [again] = cluster.wait_running("pinned", 1, timeout=60)
    assert again["node"] == "n2" and again["id"] == waiting["id"]
    out = wait_for(lambda: "done" in stdout(cluster, again) and stdout(cluster, again), 20)
    assert out.startswith("row\n"), out  # the first task's row: the same local data

    # rm cannot remove the data of a volume whose node is down: refused, the volume as it was
    cluster.cli("stop", "pinned")
    wait_for(lambda: volume(cluster, "pg")["state"] == "detached", 30, 0.2, "pg detached")
    before = volume(cluster, "pg")
    cluster.kill("n2")
    try:
        wait_for(lambda: cluster.nodes()["n2"] == "down", 30, 0.2, "n2 down")
        refused = cluster.cli("volume", "rm", "pg", check=False)
        assert refused.returncode == 1, refused
        assert "node n2 of local volume pg is down" in refused.stderr, refused.stderr
        assert volume(cluster, "pg") == before  # still detached, nothing changed
        assert (files / "data" / "row").exists()
    finally:
        cluster.restart("n2")
    wait_for(lambda: cluster.nodes()["n2"] == "ready", 30, 0.2, "n2 ready")
    removed = cluster.cli("volume", "rm", "pg")
    assert "removed" in removed.stdout
    assert not files.exists()  # the agent of n2 deleted the data
    assert cluster.http.get("/v1/volumes/pg").status_code == 404
