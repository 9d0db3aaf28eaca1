"""`moorage dev --demo`: one process, demo deployed, Ctrl-C stops cleanly, next start resumes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from .cluster import MOORAGE, REPO, Proc, dev_command, free_port, pid_alive, wait_for

pytestmark = pytest.mark.integration


def _dev(tmp_path: Path, port: int, agent_port: int) -> Proc:
    return Proc(dev_command(tmp_path / "data", port, agent_port), tmp_path / "dev.log")


def _running(addr: str) -> dict[str, int]:
    summaries = httpx.get(f"{addr}/v1/services", timeout=10).json()
    return {s["name"]: s["running"] for s in summaries}


def test_dev_demo_ctrl_c_and_resume(tmp_path: Path) -> None:
    port, agent_port = free_port(), free_port()
    addr = f"http://127.0.0.1:{port}"
    dev = _dev(tmp_path, port, agent_port).start(ready_timeout=30)
    try:
        out = dev.output()
        assert f"server: {addr}" in out and "demo: deployed web" in out
        wait_for(
            lambda: _running(addr) == {"web": 3, "worker": 1}, 20, what="demo services running"
        )
        tasks = httpx.get(f"{addr}/v1/tasks", timeout=10).json()
        pids = [c["pid"] for t in tasks for c in t["containers"] if c.get("pid")]
        assert len(pids) == 4
        env = {"MOORAGE_ADDR": addr}
        services = subprocess.run(
            [*MOORAGE, "services", "-o", "json"],
            capture_output=True,
            text=True,
            env={**_env(), **env},
            cwd=REPO,
            check=True,
        )
        assert {s["name"] for s in json.loads(services.stdout)} == {"web", "worker"}
        wait_for(
            lambda: (
                "tick"
                in subprocess.run(
                    [*MOORAGE, "logs", "worker"],
                    capture_output=True,
                    text=True,
                    env={**_env(), **env},
                    cwd=REPO,
                ).stdout
            ),
            10,
            0.2,
        )
    finally:
        code = dev.stop()
    assert code == 0, dev.output()
    assert "stopping: tasks stopped, state saved" in dev.output()
    wait_for(lambda: not any(pid_alive(p) for p in pids), 5, what="tasks to be stopped by Ctrl-C")

    again = _dev(tmp_path, port, agent_port).start(ready_timeout=30)
    try:
        wait_for(lambda: _running(addr) == {"web": 3, "worker": 1}, 20, what="services resumed")
        revisions = {s["name"]: s["revision"] for s in httpx.get(f"{addr}/v1/services").json()}
        assert revisions == {"web": 1, "worker": 1}, "the demo redeploy must not make new revisions"
        # the worker's counter is on its volume: it goes on from where it was
        wait_for(
            lambda: (
                "resumed at tick"
                in subprocess.run(
                    [*MOORAGE, "logs", "worker"],
                    capture_output=True,
                    text=True,
                    env={**_env(), "MOORAGE_ADDR": addr},
                    cwd=REPO,
                ).stdout
            ),
            10,
            0.2,
        )
        (volume,) = httpx.get(f"{addr}/v1/volumes").json()
        assert (volume["name"], volume["state"]) == ("worker-state", "attached")
    finally:
        assert again.stop() == 0


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


def test_cli_errors_are_one_line_and_exit_codes(tmp_path: Path) -> None:
    env = {**_env(), "MOORAGE_ADDR": f"http://127.0.0.1:{free_port()}"}
    down = subprocess.run([*MOORAGE, "services"], capture_output=True, text=True, env=env, cwd=REPO)
    assert down.returncode == 1
    assert (
        down.stderr.startswith("error: cannot reach the moorage server")
        and "Traceback" not in down.stderr
    )
    missing = subprocess.run(
        [*MOORAGE, "validate", "-f", str(tmp_path / "nope.yaml")],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )
    assert missing.returncode == 2 and "file" in missing.stderr
    bad_flag = subprocess.run(
        [*MOORAGE, "dev", "--http-addr", "nowhere"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )
    assert bad_flag.returncode == 2 and "http-addr" in bad_flag.stderr
