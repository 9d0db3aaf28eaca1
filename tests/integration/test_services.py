"""A single-node moorage running real services: the foundation's must-show list."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable

import pytest

from .cluster import MOORAGE, Cluster, http_spec, page, pid_alive, wait_for

pytestmark = pytest.mark.integration


def child_pids(tasks: list[dict]) -> list[int]:
    return [c["pid"] for t in tasks for c in t["containers"] if c.get("pid")]


def test_three_tasks_come_up_and_answer_on_their_host_ports(cluster: Cluster) -> None:
    cluster.deploy(http_spec(count=3))
    tasks = cluster.wait_running("web", 3)
    ports = sorted(t["ports"]["http"] for t in tasks)
    assert len(set(ports)) == 3
    for task in tasks:
        answer = wait_for(lambda t=task: _get(t["ports"]["http"]), 10, what="an HTTP answer")
        assert answer == f"task={task['id']} port={task['ports']['http']} version=?\n"
    table = cluster.cli("services").stdout
    assert "web" in table and ("running" in table or "successful" in table)
    (node,) = cluster.cli_json("nodes")
    assert node["allocated"] == {"cpu": 150, "memory": 192, "tasks": 3}
    assert "150/" in cluster.cli("nodes").stdout


def _get(port: int, path: str = "/") -> str | None:
    return page(f"http://127.0.0.1:{port}{path}")


def test_kill9_of_a_task_is_restarted_within_2s_and_counted(cluster: Cluster) -> None:
    cluster.deploy(http_spec(count=3))
    tasks = cluster.wait_running("web", 3)
    victim = tasks[0]
    pid = child_pids([victim])[0]
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)

    def restarted() -> bool:
        task = cluster.http.get(f"/v1/tasks/{victim['id']}").json()
        return (
            task["restarts"] == 1
            and task["status"] == "running"
            and len(cluster.running("web")) == 3
        )

    wait_for(restarted, 10, 0.02, "the killed task to run again")
    elapsed = time.monotonic() - killed_at
    assert elapsed < 2.0, f"back to 3 running after {elapsed:.2f}s"
    listed = {t["id"]: t for t in cluster.cli_json("ps", "web")}
    history = [e["message"] for e in cluster.events()][-8:]
    assert listed[victim["id"]]["restarts"] == 1, "\n".join(history)
    assert child_pids([listed[victim["id"]]])[0] != pid
    assert sum(t["restarts"] for t in listed.values()) == 1
    events = cluster.cli("events").stdout
    assert f"restarting task {victim['id']}" in events
    assert "exit code" in events or "signal" in events


def test_agent_sigkill_and_restart_reattaches_without_restarts(cluster: Cluster) -> None:
    cluster.deploy(http_spec(count=2))
    before = cluster.wait_running("web", 2)
    pids = child_pids(before)
    cluster.agent.kill9()
    assert all(pid_alive(p) for p in pids), "tasks must survive the agent"
    cluster.agent.start()
    time.sleep(1.0)  # let the new agent settle and report
    after = cluster.wait_running("web", 2)
    assert sorted(child_pids(after)) == sorted(pids)
    assert all(t["restarts"] == 0 for t in after)
    # The recovered tasks are managed: scale up, then stop acts on the old ones too.
    cluster.cli("scale", "web", "3")
    cluster.wait_running("web", 3)
    cluster.cli("stop", "web")
    wait_for(lambda: not any(pid_alive(p) for p in pids), 15, what="recovered tasks to stop")
    wait_for(
        lambda: not [t for t in cluster.tasks("web") if t["status"] not in ("stopped",)],
        15,
        what="every task stopped",
    )


def test_server_kill9_keeps_state_intact(cluster: Cluster) -> None:
    cluster.deploy(http_spec(count=2))
    cluster.deploy(http_spec(count=2, memory=65))  # a second revision
    tasks = cluster.wait_running("web", 2)
    before_services = cluster.http.get("/v1/services").json()
    before_defs = cluster.http.get("/v1/taskdefs/web").json()
    before_ids = sorted(t["id"] for t in cluster.tasks("web"))
    cluster.server.kill9()
    cluster.server.start()
    assert cluster.http.get("/v1/services").json() == before_services
    assert cluster.http.get("/v1/taskdefs/web").json() == before_defs
    assert [d["revision"] for d in before_defs] == [1, 2]
    time.sleep(1.5)  # the reconciler runs again: nothing may be duplicated
    after = cluster.wait_running("web", 2)
    assert sorted(t["id"] for t in after) == sorted(t["id"] for t in tasks)
    assert sorted(t["id"] for t in cluster.tasks("web")) == before_ids


def test_scale_up_and_down_converge_exactly_and_stop_removes_everything(cluster: Cluster) -> None:
    cluster.deploy(http_spec(count=1))
    cluster.wait_running("web", 1)
    for count in (4, 2, 5, 0, 3):
        cluster.cli("scale", "web", str(count))
        cluster.wait_running("web", count)
        live = [t for t in cluster.tasks("web") if t["desired"] == "run"]
        assert len(live) == count
    pids = child_pids(cluster.running("web"))
    cluster.cli("stop", "web")
    wait_for(lambda: all(not pid_alive(p) for p in pids), 15, what="processes to end")
    wait_for(lambda: cluster.cli_json("ps", "web") == [], 15, what="ps to be empty")
    summary = cluster.cli_json("services")[0]
    assert summary["status"] == "stopped" and summary["running"] == 0


def test_a_task_that_fits_nowhere_stays_pending_with_its_reason(small_cluster: Cluster) -> None:
    c = small_cluster
    c.deploy(http_spec(name="big", count=1, memory=4096))
    reason = "no node has 4096 MiB of free memory"
    wait_for(
        lambda: [t for t in c.tasks("big") if t["message"] == reason],
        10,
        what="the unplaced reason",
    )
    row = c.cli_json("ps", "big")[0]
    assert row["status"] == "pending" and row["message"] == reason and row["node"] is None
    assert reason in c.cli("ps", "big").stdout
    assert reason in c.cli("events").stdout
    assert reason in c.cli_json("services")[0]["message"]


def test_logs_are_prefixed_by_task_id(cluster: Cluster) -> None:
    cluster.deploy(http_spec(count=2))
    tasks = cluster.wait_running("web", 2)
    for task in tasks:
        wait_for(lambda t=task: _get(t["ports"]["http"]), 10)
    out = wait_for(
        lambda: (o := cluster.cli("logs", "web").stdout).count("listening on") >= 2 and o, 10
    )
    for task in tasks:
        assert f"{task['id']} | listening on {task['ports']['http']}" in out


class LineReader:
    """A CLI process whose stdout is read line by line on a thread, with timeouts."""

    def __init__(self, cluster: Cluster, *args: str) -> None:
        self.proc = subprocess.Popen(
            [*MOORAGE, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **cluster.env},
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_line(self, predicate: Callable[[str], bool], timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                break
            seen.append(line)
            if predicate(line):
                return line
        raise AssertionError(f"no matching line within {timeout}s; saw {seen[-10:]}")

    def close(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def test_logs_follow_streams_new_lines_of_every_task(cluster: Cluster) -> None:
    cluster.deploy(http_spec(count=2))
    tasks = cluster.wait_running("web", 2)
    reader = LineReader(cluster, "logs", "-f", "web")
    try:
        reader.wait_line(lambda line: "listening on" in line)
        for task in tasks:  # each request is logged by the task after the follow began
            _get(task["ports"]["http"], "/followed")
        for task in tasks:
            reader.wait_line(lambda line, t=task: line == f"{t['id']} | request /followed")
    finally:
        reader.close()


def test_events_follow_shows_changes_as_they_happen(cluster: Cluster) -> None:
    reader = LineReader(cluster, "events", "-f")
    try:
        time.sleep(0.5)  # let it connect before the change it must see
        cluster.deploy(http_spec(count=1))
        reader.wait_line(lambda line: "service.deployed" in line and "web deployed" in line)
        reader.wait_line(lambda line: "task.started" in line)
        cluster.cli("scale", "web", "2")
        reader.wait_line(lambda line: "service.scaled" in line)
    finally:
        reader.close()
