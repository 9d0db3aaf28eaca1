"""Persistent volumes under faults: what issue 6 must show, on a 3-node network-namespace
cluster (root; CI sets MOORAGE_REQUIRE_NETNS=1 and MOORAGE_REQUIRE_DOCKER=1).

One writer task appends `<task-id> <epoch> <seq>` lines to a shared single-writer volume, 50 a
second. The cluster goes through each fault in turn — its node's agent SIGKILLed, frozen for 3x
the lease, cut off the network for 3x the lease, the node drained, a new revision deployed —
and after each the log shows one writer at a time (volume_helpers.check_log), the writer moved
where the fault demands it, and no second writer process or second mount of the volume's image
was ever seen while the fault ran. Then: the size is enforced (ENOSPC inside the task), the
first writer's marker survived every move, `volume rm` refuses an attached volume and removes
a detached one with its data (the same name re-created is empty, with its new size).
Seed 000 (InfluxDB on a shared volume, found through moorage's DNS) and seed 004 (the ECS task
definition with a rexray/ebs volume, run by Docker) run end to end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.exception
import dns.resolver
import httpx
import pytest

from moorage.volumes.layout import IMAGE

from .cluster import AgentSpec, Cluster, free_port, task_processes, wait_for
from .volume_helpers import (
    Holder,
    Watch,
    check_log,
    describe,
    loop_mounts,
    moved,
    read_log,
    require_netns,
    steady,
    volume,
    writer_spec,
    writers,
)

pytestmark = pytest.mark.integration

LEASE = 3.0  # the agents' --volume-lease: short, to keep every wait bounded
FAULT = 3 * LEASE  # how long a frozen agent stays frozen, a cut node cut
MOVE = 60.0  # the deadline for the writer to move after a fault begins


def lease_agents(lease: float = LEASE) -> list[AgentSpec]:
    return [
        AgentSpec(f"n{i}", {"zone": zone}, args=["--volume-lease", f"{lease:g}s"])
        for i, zone in enumerate("abc", start=1)
    ]


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The writer on its volume in a 3-node netns cluster, shared by the fault tests in order."""
    require_netns()
    with Cluster(tmp_path_factory.mktemp("volfaults"), agents=lease_agents(), netns=True) as c:
        c.deploy(writer_spec())
        yield c


def check_after(cluster: Cluster, watch: Watch, after: Holder, scenario: str) -> None:
    """The single-writer checks once the writer runs again after a fault."""
    assert not watch.overlaps, f"{scenario}: two writers at once: {watch.overlaps[:5]}"
    assert (after.task, after.epoch) in watch.seen, f"{scenario}: {watch.seen}"
    assert watch.samples >= 3, f"{scenario}: the watch sampled {watch.samples} times"
    assert watch.mounted == 1, f"{scenario}: the image was never seen loop-mounted"
    time.sleep(1.0)  # lines of the new holder keep coming; any late old writer shows up too
    holder = steady(cluster, timeout=10, all_ready=False)
    runs = check_log(read_log(holder.writer))
    last = runs[-1]
    assert (last.task, last.epoch) == (after.task, after.epoch), (
        f"{scenario}: the log ends with {last.task}@{last.epoch}, the writer is "
        f"{after.task}@{after.epoch} ({describe(runs)})"
    )
    assert volume(cluster, "data")["epoch"] == after.epoch
    gap = last.first.time - runs[-2].last.time
    print(
        f"{scenario}: {describe(runs[-2:])}, {gap:.2f}s between the writers' lines, {watch.samples} samples"
    )


def test_a_killed_agent_fences_its_writer_and_the_volume_moves(faults: Cluster) -> None:
    cluster = faults
    before = steady(cluster)
    try:
        with Watch(cluster.root) as watch:
            cluster.kill(before.node)
            after = moved(cluster, before, other_node=True, new_task=True, timeout=MOVE)
        check_after(cluster, watch, after, "kill")
        assert cluster.nodes()[before.node] == "down"
    finally:
        cluster.restart(before.node)  # the next tests start from three ready nodes
    steady(cluster)  # the restarted agent starts no second writer
    assert [w.task for w in writers(cluster.root)] == [after.task]


def test_an_agent_frozen_for_three_leases_loses_the_volume(faults: Cluster) -> None:
    cluster = faults
    before = steady(cluster)
    with Watch(cluster.root) as watch:
        cluster.freeze(before.node)
        frozen_at = time.monotonic()
        try:
            after = moved(cluster, before, other_node=True, new_task=True, timeout=MOVE)
            time.sleep(max(0.0, FAULT - (time.monotonic() - frozen_at)))
        finally:
            cluster.thaw(before.node)
        wait_for(lambda: cluster.nodes()[before.node] == "ready", 30, 0.2, "thawed node ready")
        time.sleep(2 * LEASE)  # the thawed agent finds its claim lost and starts nothing
    check_after(cluster, watch, after, "freeze")


def test_a_node_cut_off_for_three_leases_loses_the_volume(faults: Cluster) -> None:
    cluster = faults
    before = steady(cluster)
    with Watch(cluster.root) as watch:
        cluster.cut(before.node)
        cut_at = time.monotonic()
        try:
            after = moved(cluster, before, other_node=True, new_task=True, timeout=MOVE)
            time.sleep(max(0.0, FAULT - (time.monotonic() - cut_at)))
        finally:
            cluster.heal(before.node)
        wait_for(lambda: cluster.nodes()[before.node] == "ready", 30, 0.2, "healed node ready")
        time.sleep(2 * LEASE)
    check_after(cluster, watch, after, "cut")


def test_a_drained_node_hands_the_volume_over(faults: Cluster) -> None:
    """The drain's default deadline is an hour: a single-writer task cannot be replaced before
    it stops (its replacement could not claim the volume), so it must be stopped first."""
    cluster = faults
    before = steady(cluster)
    try:
        with Watch(cluster.root) as watch:
            cluster.cli("node", "drain", before.node)
            after = moved(cluster, before, other_node=True, new_task=True, timeout=MOVE)
    finally:
        cluster.cli("node", "eligible", before.node)
    check_after(cluster, watch, after, "drain")


def test_a_new_revision_stops_the_old_writer_before_the_new_one_starts(faults: Cluster) -> None:
    cluster = faults
    before = steady(cluster)
    with Watch(cluster.root) as watch:
        cluster.deploy(writer_spec(revision=2))
        after = moved(cluster, before, other_node=False, new_task=True, timeout=MOVE)
    check_after(cluster, watch, after, "deploy")
    [task] = cluster.running("writer")
    assert task["revision"] == 2
    [old] = [t for t in cluster.tasks("writer") if t["id"] == before.task]
    assert old["finished_at"] is not None and task["started_at"] is not None, (old, task)
    assert old["finished_at"] <= task["started_at"], "the new revision started first"


def test_the_first_writers_marker_survived_every_move_and_the_size_is_enforced(
    faults: Cluster,
) -> None:
    cluster = faults
    holder = steady(cluster)
    runs = check_log(read_log(holder.writer))
    assert len(runs) >= 2, describe(runs)  # the fault tests above moved it (five times)
    marker = (holder.writer.folder / "marker").read_text().split()
    assert (marker[0], int(marker[1])) == (runs[0].task, runs[0].epoch), (marker, runs[0])
    data = volume(cluster, "data")
    assert data["size"] == 64 and data["size_enforced"] is True, data
    stat = os.statvfs(holder.writer.folder)
    assert 32 * 2**20 < stat.f_blocks * stat.f_frsize <= 64 * 2**20, stat  # the ext4 image


def test_writing_past_the_size_fails_with_enospc_inside_the_task(faults: Cluster) -> None:
    cluster = faults
    cluster.deploy(writer_spec("filler", "fill", "16MiB", mode="fill", path="/fill"))
    [task] = cluster.wait_running("filler", 1, timeout=30)

    def result() -> str | None:
        found = writers(cluster.root, "FILL", "fill")
        if len(found) != 1:
            return None
        path = found[0].folder / "fill-result"
        return path.read_text() if path.exists() else None

    outcome, written = wait_for(result, 60, 0.2, "the filler's result").split()
    assert outcome == "ENOSPC", (outcome, written)
    assert 4 * 2**20 <= int(written) <= 16 * 2**20, written
    assert volume(cluster, "fill")["attachments"][0]["task"] == task["id"]


def test_volume_rm_refuses_an_attached_volume_and_removes_a_detached_one(
    faults: Cluster,
) -> None:
    cluster = faults
    [task] = cluster.wait_running("filler", 1, timeout=30)
    [filler] = writers(cluster.root, "FILL", "fill")
    (filler.folder / "old-data").write_text("written before rm\n")
    refused = cluster.cli("volume", "rm", "fill", check=False)
    assert refused.returncode == 1, refused
    assert task["id"] in refused.stderr and task["node"] in refused.stderr, refused.stderr
    assert volume(cluster, "fill")["state"] == "attached"

    cluster.cli("stop", "filler")
    wait_for(lambda: volume(cluster, "fill")["state"] == "detached", 30, 0.2, "fill detached")
    removed = cluster.cli("volume", "rm", "fill", check=False)
    assert removed.returncode == 0, removed
    assert cluster.http.get("/v1/volumes/fill").status_code == 404
    assert "fill" not in {v["name"] for v in cluster.http.get("/v1/volumes").json()}
    assert volume(cluster, "data")["state"] == "attached"  # the writer's is untouched
    folder = cluster.shared_volume_root / "fill"
    assert not folder.exists(), list(folder.rglob("*"))  # the 16 MiB image went with it
    assert not loop_mounts(cluster.root, "fill")
    trash = cluster.shared_volume_root / ".trash"
    assert not trash.exists() or not list(trash.iterdir())

    # the same name again: an empty volume, of its own (bigger) size
    cluster.cli("volume", "create", "fill", "--driver", "shared", "--size", "32")
    cluster.deploy(writer_spec("filler2", "fill", "32MiB", mode="fill", path="/fill"))
    cluster.wait_running("filler2", 1, timeout=30)

    def result() -> tuple[str, set[str]] | None:
        found = writers(cluster.root, "FILL", "fill")
        path = found[0].folder / "fill-result" if len(found) == 1 else None
        if path is None or not path.exists():
            return None
        return path.read_text(), {p.name for p in found[0].folder.iterdir()}

    text, names = wait_for(result, 60, 0.2, "the new filler's result")
    outcome, written = text.split()
    assert names == {"lost+found", "fill-result"}, names  # no old-data, no old fill-result
    assert outcome == "ENOSPC" and 16 * 2**20 < int(written) <= 32 * 2**20, text
    assert (folder / IMAGE).stat().st_size == 32 * 2**20
    assert volume(cluster, "fill")["size_enforced"] is True
    assert "32MiB (ext4)" in cluster.cli("volume", "ls").stdout
    cluster.cli("stop", "filler2")


# ---- seed 000: InfluxDB on a shared volume, found through DNS ----------------------------------
INFLUXD = shutil.which("influxd") or "/usr/bin/influxd"
INFLUX_SPEC = f"""
service: influxdb
count: 1
volumes:
  influxdb: {{driver: shared, size: 256MiB, scope: shared, autoprovision: true}}
containers:
  - name: influxdb
    command: ["env", "INFLUXDB_HTTP_BIND_ADDRESS=${{MOORAGE_NODE_IP}}:${{PORT_HTTP}}",
              "{INFLUXD}", "-config", "/dev/null"]
    cpu: 256
    memory: 512
    ports: [{{name: http}}]
    mounts: [{{volume: influxdb, path: /data/influxdb}}]
    env:
      INFLUXDB_META_DIR: /data/influxdb/meta
      INFLUXDB_DATA_DIR: /data/influxdb/data
      INFLUXDB_DATA_WAL_DIR: /data/influxdb/wal
      INFLUXDB_REPORTING_DISABLED: "true"
      INFLUXDB_HTTP_LOG_ENABLED: "false"
    health: {{http: /ping, port: http, interval: 1s, timeout: 1s, retries: 2}}
    stop_timeout: 10s
discovery: {{name: influxdb, port: http}}
"""
POINTS = 10_000
BATCH = 1_000


def resolve(cluster: Cluster, name: str) -> tuple[str, int] | None:
    """The A and SRV answers of moorage's DNS for `name`: (address, port), or None."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = cluster.dns_port
    resolver.lifetime = 2.0
    try:
        [a] = list(resolver.resolve(name, "A"))
        [srv] = list(resolver.resolve(name, "SRV"))
    except (dns.exception.DNSException, ValueError):
        return None
    return str(a), int(srv.port)  # type: ignore[attr-defined]


def influx_query(client: httpx.Client, base: str, query: str) -> Any:
    response = client.post(f"{base}/query", params={"db": "seed"}, data={"q": query})
    assert response.status_code == 200, response.text
    return response.json()


def influx_count(client: httpx.Client, base: str) -> int:
    result = influx_query(client, base, "SELECT count(value) FROM cpu")
    series = result["results"][0].get("series") or [{"values": [[0, 0]]}]
    return int(series[0]["values"][0][1])


def test_seed_000_influxdb_keeps_its_points_when_its_node_agent_is_killed(
    tmp_path: Path,
) -> None:
    require_netns()
    if not Path(INFLUXD).exists():
        pytest.fail("influxd is not installed (Debian's influxdb package; .ci/run installs it)")
    with Cluster(tmp_path, agents=lease_agents(), netns=True) as cluster:
        cluster.deploy(INFLUX_SPEC)
        wait_for(lambda: cluster.healthy("influxdb"), 60, 0.2, "influxdb healthy")
        address, port = wait_for(
            lambda: resolve(cluster, "influxdb.service.moorage"), 20, 0.2, "influxdb in DNS"
        )
        [task] = cluster.running("influxdb")
        assert address == cluster.addresses[task["node"]]
        base = f"http://{address}:{port}"
        with httpx.Client(timeout=30) as client:
            influx_query(client, base, "CREATE DATABASE seed")
            start = 1_600_000_000
            for first in range(0, POINTS, BATCH):
                body = "\n".join(
                    f"cpu,host=h{i % 10},region=r{i % 3} value={i}i {start + i}"
                    for i in range(first, first + BATCH)
                )
                written = client.post(
                    f"{base}/write", params={"db": "seed", "precision": "s"}, content=body
                )
                assert written.status_code == 204, written.text
            assert influx_count(client, base) == POINTS

            cluster.kill(task["node"])

            def moved_and_serving() -> tuple[str, int] | None:
                healthy = [t for t in cluster.healthy("influxdb") if t["node"] != task["node"]]
                found = resolve(cluster, "influxdb.service.moorage") if healthy else None
                return found if found and found[0] != address else None

            address2, port2 = wait_for(moved_and_serving, 90, 0.5, "influxdb on another node")
            base2 = f"http://{address2}:{port2}"
            assert influx_count(client, base2) == POINTS
            total = influx_query(client, base2, "SELECT sum(value) FROM cpu")
            assert total["results"][0]["series"][0]["values"][0][1] == POINTS * (POINTS - 1) // 2
        live = [p for p in task_processes(cluster.root, INFLUXD) if p.name() == "influxd"]
        assert len(live) == 1, live  # the fenced one is gone
        assert volume(cluster, "influxdb")["epoch"] == 2  # the second node claimed it with epoch 2


# ---- seed 004: the ECS task definition with a rexray/ebs volume, run by Docker -----------------
def seed_004(image: str, host_port: int, version: str) -> dict[str, Any]:
    """The write-up's task definition, its Terraform placeholders filled: the `volume` block
    as JSON, the test image, and a free host port instead of 80 (no clash with the machine)."""
    return {
        "family": "ecs-task-definition",
        "containerDefinitions": [
            {
                "essential": True,
                "memory": 100,
                "name": "web-app",
                "cpu": 1,
                "image": image,
                "environment": [{"name": "VERSION", "value": version}],
                "portMappings": [{"hostPort": host_port, "containerPort": 8080}],
                "mountPoints": [
                    {"sourceVolume": "ecs-ebs-volume", "containerPath": "/mnt/ecs-ebs-volume"}
                ],
            }
        ],
        "volumes": [
            {
                "name": "ecs-ebs-volume",
                "dockerVolumeConfiguration": {
                    "scope": "shared",
                    "autoprovision": True,
                    "driver": "rexray/ebs",
                    "driverOpts": {"volumetype": "gp2", "size": "5"},
                },
            }
        ],
    }


def container_of(task_id: str) -> str | None:
    listed = subprocess.run(
        ["docker", "ps", "-q", "--filter", f"label=moorage.task={task_id}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return listed[0] if len(listed) == 1 else None


def in_container(container: str, command: str) -> str:
    return subprocess.run(
        ["docker", "exec", container, "sh", "-c", command],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_seed_004_ecs_rexray_volume_keeps_its_data_over_a_restart_and_a_redeploy(
    cluster: Cluster, docker_image: str, tmp_path: Path
) -> None:
    service, port = "ecs-task-definition", free_port()
    path = tmp_path / "task_definition.json"
    path.write_text(json.dumps(seed_004(docker_image, port, "1")))
    deployed = cluster.cli("deploy", "--ecs", str(path), "--count", "1", "--detach")
    assert f"{service}: registered revision 1" in deployed.stdout
    assert "rexray/ebs" in deployed.stderr and "shared" in deployed.stderr, deployed.stderr
    ebs = volume(cluster, "ecs-ebs-volume")
    assert (ebs["driver"], ebs["scope"], ebs["size"]) == ("shared", "shared", 5 * 1024), ebs

    [task] = cluster.wait_running(service, 1, timeout=60)
    first = wait_for(lambda: container_of(task["id"]), 20, 0.2, "the task's container")
    binds = subprocess.run(
        ["docker", "inspect", "-f", "{{json .Mounts}}", first],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    mounts = json.loads(binds)
    assert [m["Destination"] for m in mounts] == ["/mnt/ecs-ebs-volume"], mounts
    assert mounts[0]["Type"] == "bind" and mounts[0]["RW"] is True, mounts
    in_container(first, "echo test > /mnt/ecs-ebs-volume/file.txt")  # the write-up's check

    # a task restart: the container dies, the task restarts on the same volume
    subprocess.run(["docker", "kill", first], capture_output=True, check=True)
    second = wait_for(
        lambda: (c := container_of(task["id"])) not in (None, first) and c, 60, 0.2, "restart"
    )
    assert in_container(second, "cat /mnt/ecs-ebs-volume/file.txt") == "test\n"
    in_container(second, "echo again >> /mnt/ecs-ebs-volume/file.txt")

    # a redeploy: a new revision, a new task, the same data
    path.write_text(json.dumps(seed_004(docker_image, port, "2")))
    redeployed = cluster.cli("deploy", "--ecs", str(path), "--count", "1", "--detach")
    assert f"{service}: registered revision 2" in redeployed.stdout

    def new_revision() -> dict[str, Any] | None:
        running = [t for t in cluster.running(service) if t["revision"] == 2]
        live = [t for t in cluster.tasks(service) if t["desired"] == "run"]
        return running[0] if len(running) == 1 == len(live) else None

    task2 = wait_for(new_revision, 90, 0.2, "revision 2 running alone")
    third = wait_for(lambda: container_of(task2["id"]), 20, 0.2, "revision 2's container")
    assert in_container(third, "cat /mnt/ecs-ebs-volume/file.txt") == "test\nagain\n"
    assert in_container(third, "echo $VERSION").strip() == "2"
    assert container_of(task["id"]) is None
