"""The agent side of volumes: claimed before a task starts, mounted where its containers see
them (size-enforced ext4 images as root), renewed, released on stop, fenced when the lease may
run out — even after the agent was SIGKILLed."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .cluster import AgentSpec, Cluster, containers_of, pid_alive, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def mounts() -> None:
    """Loop mounts and mount namespaces need root and util-linux: skip loudly without them,
    unless MOORAGE_REQUIRE_NETNS=1 (CI runs as root), where their absence is an error."""
    why = None
    if os.geteuid() != 0:
        why = "loop-mounted volumes need root"
    for tool in ("mount", "umount", "mkfs.ext4", "unshare", "blkid"):
        if why is None and shutil.which(tool) is None:
            why = f"`{tool}` is not installed (util-linux, e2fsprogs)"
    if why is not None:
        if os.environ.get("MOORAGE_REQUIRE_NETNS") == "1":
            pytest.fail(f"MOORAGE_REQUIRE_NETNS=1 but {why}")
        pytest.skip(f"SKIPPED LOUDLY: {why} (CI runs these as root)")


def cluster_of(tmp_path: Path, *agent_args: str) -> Cluster:
    return Cluster(tmp_path, agents=[AgentSpec("n1", {"zone": "a"}, args=list(agent_args))])


@pytest.fixture
def cluster1(tmp_path: Path, mounts: None) -> Iterator[Cluster]:
    c = cluster_of(tmp_path).start()
    try:
        yield c
    finally:
        c.stop()


def volume(cluster: Cluster, name: str) -> dict[str, Any]:
    response = cluster.http.get(f"/v1/volumes/{name}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def mounted(path: Path) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == str(path) for line in f)


SCRIPT = """
echo "env-path=$MOORAGE_VOLUME_APP_DATA env-epoch=$MOORAGE_VOLUME_APP_DATA_EPOCH"
if [ -f "$INSIDE/marker" ]; then echo "marker-found=$(cat "$INSIDE/marker")"; fi
echo "{marker}" > "$INSIDE/marker"
dd if=/dev/zero of="$INSIDE/big" bs=1M count=40 2>&1 | head -n 1
rm -f "$INSIDE/big"
echo "done"
while true; do sleep 0.2; done
"""


def process_spec(name: str, inside: Path, marker: str, size: str = "16MiB") -> str:
    script = SCRIPT.format(marker=marker).strip().replace("\n", "; ")
    return f"""
service: {name}
count: 1
containers:
  - name: app
    command: ["sh", "-c", {script!r}]
    env: {{INSIDE: "{inside}"}}
    memory: 64
    stop_timeout: 2s
    mounts: [{{volume: app-data, path: "{inside}"}}]
    health: {{command: [test, -f, "{inside}/marker"], interval: 1s}}
volumes:
  app-data: {{driver: shared, source: data, size: {size}, scope: shared}}
"""


def stdout(cluster: Cluster, task: dict[str, Any], node: int = 1) -> str:
    path = cluster.root / f"node{node}" / "agent" / "alloc" / task["id"] / "logs" / "app.stdout"
    return path.read_text() if path.exists() else ""


def wait_output(cluster: Cluster, task: dict[str, Any], text: str, node: int = 1) -> str:
    return str(
        wait_for(lambda: text in stdout(cluster, task, node) and stdout(cluster, task, node), 20)
    )


def test_process_task_gets_a_size_enforced_volume_kept_across_tasks(
    cluster1: Cluster, tmp_path: Path
) -> None:
    cluster = cluster1
    inside = tmp_path / "inside" / "data"  # the path the task sees; on the host it stays empty
    cluster.deploy(process_spec("db", inside, "first"))
    (task,) = cluster.wait_running("db", 1)
    out = wait_output(cluster, task, "done")
    mountpoint = cluster.root / "node1" / "agent" / "volume-mounts" / "data"
    assert f"env-path={mountpoint} env-epoch=1" in out
    assert "No space left on device" in out  # 40 MiB do not fit in 16
    assert "marker-found" not in out
    image = cluster.shared_volume_root / "data" / "disk.img"
    assert image.stat().st_size == 16 * 1024 * 1024
    assert image.stat().st_blocks * 512 < 16 * 1024 * 1024  # sparse
    assert mounted(mountpoint)
    assert (mountpoint / "marker").read_text().strip() == "first"  # through the bind mount
    assert not (inside / "marker").exists()  # the bind lives in the task's mount namespace
    seen = cluster.cli("exec", task["id"], "--", "cat", str(inside / "marker"))
    assert seen.stdout.strip() == "first"  # exec runs in the task's mount namespace
    # the command check runs in the task's mount namespace too: it finds the marker
    wait_for(lambda: cluster.tasks("db")[0].get("health") == "passing", 20)
    held = volume(cluster, "data")
    assert held["state"] == "attached" and held["size_enforced"] is True
    assert [(a["task"], a["node"], a["epoch"]) for a in held["attachments"]] == [
        (task["id"], "n1", 1)
    ]

    # stopped: unmounted, then released
    cluster.cli("stop", "db")
    wait_for(lambda: volume(cluster, "data")["state"] == "detached", 20, what="released")
    assert not mounted(mountpoint)

    # a new task on the same volume: the data is there (never reformatted), the epoch moved on
    cluster.deploy(process_spec("db2", inside, "second"))
    (task2,) = cluster.wait_running("db2", 1)
    out2 = wait_output(cluster, task2, "done")
    assert "marker-found=first" in out2
    assert "env-epoch=2" in out2


def test_second_task_waits_while_another_holds_the_volume(
    cluster1: Cluster, tmp_path: Path
) -> None:
    cluster = cluster1
    cluster.cli("volume", "create", "data", "--driver", "shared", "--size", "16")
    # another node (registered, running nothing, room for its holder task only) holds it
    other = cluster.fake_node("n9", memory=16)
    holder = cluster.task_on("n9", "holder")
    held = other.post(
        "/v1/volumes/data/claim", json={"node": "n9", "task": holder, "lease_ttl": 3600}
    )
    assert held.status_code == 200, held.text
    cluster.deploy(process_spec("db", tmp_path / "inside", "x"))

    def waiting() -> dict[str, Any] | None:
        tasks = cluster.tasks("db")
        return tasks[0] if tasks and "waiting for volume data" in tasks[0]["message"] else None

    task = wait_for(waiting, 20, what="the task waiting for the volume")
    assert task["status"] == "starting" and task["node"] == "n1"
    assert f"held by task {holder} on node n9 (epoch 1)" in task["message"]
    time.sleep(1.5)  # still waiting, and retrying
    assert cluster.tasks("db")[0]["status"] == "starting"
    assert not (cluster.root / "node1" / "agent" / "alloc" / task["id"] / "logs").exists()

    released = other.post(
        "/v1/volumes/data/release", json={"node": "n9", "task": holder, "epoch": 1}
    )
    assert released.status_code == 200
    (running,) = cluster.wait_running("db", 1)
    assert "env-epoch=2" in wait_output(cluster, running, "done")


def test_docker_task_sees_the_volume_at_its_path(
    cluster1: Cluster, docker_image: str, tmp_path: Path
) -> None:
    cluster = cluster1
    script = 'echo from-docker > /data/marker; cat /ro/marker; echo "done"; sleep 300'
    cluster.deploy(f"""
service: box
count: 1
containers:
  - name: app
    image: {docker_image}
    command: ["sh", "-c", {script!r}]
    memory: 64
    stop_timeout: 1s
    mounts: [{{volume: data, path: /data}}, {{volume: data, path: /ro, read_only: true}}]
volumes:
  data: {{driver: shared, size: 16MiB, scope: shared}}
""")
    (task,) = cluster.wait_running("box", 1, timeout=60)
    mountpoint = cluster.root / "node1" / "agent" / "volume-mounts" / "data"
    wait_for(lambda: (mountpoint / "marker").exists(), 20, what="the container's write")
    assert (mountpoint / "marker").read_text() == "from-docker\n"
    assert "from-docker" in wait_output(cluster, task, "done")
    cluster.cli("stop", "box")
    wait_for(lambda: volume(cluster, "data")["state"] == "detached", 30, what="released")
    assert not mounted(mountpoint)


PROBE = (
    'for d in "$@"; do if echo x > "$d/probe" 2>/dev/null; then echo "$d writable"; '
    'else echo "$d read-only"; fi; done; echo done; sleep 300'
)


def test_read_only_mounts_refuse_writes_in_docker_and_process_tasks(
    cluster1: Cluster, docker_image: str, tmp_path: Path
) -> None:
    """compose's `name:/path:ro` and `read_only: true` stay read-only (a Docker bind with
    `:ro`); a spec's `read_only` mount is a read-only bind for a process task too."""
    cluster = cluster1
    compose = {
        "services": {
            "box": {
                "image": docker_image,
                "command": ["sh", "-c", PROBE, "probe", "/rw", "/ro", "/long"],
                "volumes": [
                    "conf:/rw",
                    "conf:/ro:ro",
                    {"type": "volume", "source": "conf", "target": "/long", "read_only": True},
                ],
            }
        },
        "volumes": {"conf": {"driver": "rexray/ebs"}},
    }
    path = tmp_path / "compose.yaml"
    path.write_text(json.dumps(compose))  # JSON is YAML
    cluster.cli("compose", "up", "-f", str(path))
    (task,) = cluster.wait_running("box", 1, timeout=60)
    out = wait_output(cluster, task, "done")
    assert tuple(out.splitlines()[:3]) == ("/rw writable", "/ro read-only", "/long read-only")
    cluster.cli("stop", "box")
    wait_for(lambda: volume(cluster, "conf")["state"] == "detached", 30, what="released")

    rw, ro = tmp_path / "rw", tmp_path / "ro"
    cluster.deploy(f"""
service: probe
count: 1
containers:
  - name: app
    command: ["sh", "-c", {PROBE!r}, "probe", "{rw}", "{ro}"]
    memory: 32
    stop_timeout: 1s
    mounts: [{{volume: conf, path: "{rw}"}}, {{volume: conf, path: "{ro}", read_only: true}}]
volumes:
  conf: {{driver: shared, scope: shared}}
""")
    (task,) = cluster.wait_running("probe", 1, timeout=60)
    out = wait_output(cluster, task, "done")
    assert tuple(out.splitlines()[:2]) == (f"{rw} writable", f"{ro} read-only")
    data = cluster.shared_volume_root / "conf" / "data"
    assert (data / "probe").exists()  # the writes that were allowed landed on the volume


def test_killed_agent_its_task_is_fenced_before_the_lease_can_move(
    tmp_path: Path, mounts: None
) -> None:
    with cluster_of(tmp_path, "--volume-lease", "2s") as cluster:
        cluster.deploy(process_spec("db", tmp_path / "inside", "x"))
        (task,) = cluster.wait_running("db", 1)
        wait_output(cluster, task, "done")
        pid = task["containers"][0]["pid"]
        mountpoint = cluster.root / "node1" / "agent" / "volume-mounts" / "data"
        assert pid_alive(pid) and mounted(mountpoint)

        cluster.kill("n1")
        killed = time.monotonic()
        # the server may grant the volume elsewhere 2 s (lease) + 2 s (grace) after the last
        # renewal it received, which was at most 2/3 s before the kill
        wait_for(lambda: not pid_alive(pid) and not mounted(mountpoint), 6, what="fenced")
        fenced_after = time.monotonic() - killed
        assert fenced_after < 2 + 2 - 0.5, fenced_after
        fence_log = cluster.root / "node1" / "agent" / "alloc" / task["id"] / "run" / "fence.log"
        # the watchdog says so just after its unmount returns
        wait_for(lambda: "stopped and unmounted" in fence_log.read_text(), 5, what="fence log")

        # the restarted agent finds the task ended and reports it; the service gets it back
        cluster.restart("n1")

        def exited_then_running() -> bool:
            kinds = [e["type"] for e in cluster.events() if e.get("task") == task["id"]]
            return "task.exited" in kinds and bool(cluster.running("db"))

        wait_for(exited_then_running, 30, what="reported exited, then running again")
        assert volume(cluster, "data")["epoch"] >= 2


def test_volume_env_without_size_is_a_plain_directory(cluster1: Cluster, tmp_path: Path) -> None:
    cluster = cluster1
    script = 'echo "path=$MOORAGE_VOLUME_SCRATCH"; echo hi > "$MOORAGE_VOLUME_SCRATCH/f"; sleep 300'
    cluster.deploy(f"""
service: plain
count: 1
containers:
  - name: app
    command: ["sh", "-c", {script!r}]
    memory: 32
    stop_timeout: 1s
volumes:
  scratch: {{driver: local, scope: task}}
""")
    (task,) = cluster.wait_running("plain", 1)
    data = cluster.root / "node1" / "agent" / "alloc" / task["id"] / "volumes" / "scratch" / "data"
    assert f"path={data}" in wait_output(cluster, task, "path=")
    wait_for(lambda: (data / "f").exists(), 10)
    cluster.cli("stop", "plain")
    wait_for(lambda: not data.exists(), 20, what="the task volume deleted with its task")


def test_killed_agent_its_container_is_fenced_by_the_watchdog(
    tmp_path: Path, mounts: None, docker_image: str
) -> None:
    with cluster_of(tmp_path, "--volume-lease", "2s") as cluster:
        cluster.deploy(f"""
service: box
count: 1
containers:
  - name: app
    image: {docker_image}
    command: ["sh", "-c", "while true; do date > /data/clock; sleep 0.2; done"]
    memory: 64
    stop_timeout: 1s
    mounts: [{{volume: data, path: /data}}]
volumes:
  data: {{driver: shared, size: 16MiB, scope: shared}}
""")
        cluster.wait_running("box", 1, timeout=60)
        mountpoint = cluster.root / "node1" / "agent" / "volume-mounts" / "data"
        wait_for(lambda: (mountpoint / "clock").exists(), 20, what="the container's writes")
        (container,) = containers_of("n1")

        cluster.kill("n1")
        killed = time.monotonic()

        def fenced() -> bool:
            return container not in containers_of("n1") and not mounted(mountpoint)

        wait_for(fenced, 6, what="the container killed and the volume unmounted")
        assert time.monotonic() - killed < 2 + 2 - 0.5


def test_restarted_agent_keeps_the_task_and_its_epoch(tmp_path: Path, mounts: None) -> None:
    with cluster_of(tmp_path, "--volume-lease", "6s") as cluster:
        cluster.deploy(process_spec("db", tmp_path / "inside", "x"))
        (task,) = cluster.wait_running("db", 1)
        wait_output(cluster, task, "done")
        pid = task["containers"][0]["pid"]
        cluster.kill("n1")
        cluster.restart("n1")
        time.sleep(8)  # longer than the lease: only renewals with the saved epoch keep it
        assert pid_alive(pid)
        held = volume(cluster, "data")
        assert [(a["task"], a["epoch"]) for a in held["attachments"]] == [(task["id"], 1)]
        assert held["epoch"] == 1
        assert [t["id"] for t in cluster.running("db")] == [task["id"]]
