"""The per-container executor of the process driver (Nomad's executor pattern).

    agent ──spawns──▶ executor (own session; outlives the agent) ──▶ child (own process group)
                        │ pumps stdout/stderr into rotating files
                        │ puts the child in a memory cgroup
                        └ writes <exit file> {exit_code, signal, oom_killed} atomically, then exits

Run as `python -m moorage.drivers._executor SPEC.json`. Nothing here imports the rest of moorage,
so it starts fast and keeps working whatever the agent does.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any


class RotatingFile:
    """Append-only file that rotates to .1, .2 … when it exceeds max_bytes."""

    def __init__(self, path: Path, max_bytes: int, keep: int) -> None:
        self.path, self.max_bytes, self.keep = path, max_bytes, keep
        self.file = path.open("ab")
        self.size = self.file.tell()

    def write(self, data: bytes) -> None:
        if self.size + len(data) > self.max_bytes and self.size > 0:
            self.rotate()
        self.file.write(data)
        self.file.flush()
        self.size += len(data)

    def rotate(self) -> None:
        self.file.close()
        for index in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{index + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        self.file = self.path.open("ab")
        self.size = 0


def pump(source: IO[bytes], sink: RotatingFile) -> None:
    for line in iter(source.readline, b""):
        sink.write(line)
    source.close()


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def oom_killed(cgroup: str) -> bool:
    for name, marker in (("memory.events", "oom_kill "), ("memory.oom_control", "oom_kill ")):
        try:
            for line in Path(cgroup, name).read_text().splitlines():
                if line.startswith(marker) and int(line.split()[1]) > 0:
                    return True
        except (OSError, ValueError, IndexError):
            continue
    return False


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    Path(spec_path).unlink(missing_ok=True)  # it holds the environment, secrets included
    exit_path = Path(spec["exit_file"])
    cgroup = spec.get("cgroup") or ""

    def join_cgroup() -> None:
        if cgroup:
            Path(cgroup, "cgroup.procs").write_text(str(os.getpid()))

    logs = [
        RotatingFile(Path(spec[k]), spec["log_max_bytes"], spec["log_keep"])
        for k in ("stdout", "stderr")
    ]
    try:
        child = subprocess.Popen(
            spec["command"],
            env=spec["env"],
            cwd=spec["cwd"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=join_cgroup,
        )
    except OSError as exc:
        write_json(
            exit_path,
            {
                "exit_code": 127,
                "signal": None,
                "oom_killed": False,
                "message": f"cannot start {spec['command'][0]!r}: {exc.strerror}",
            },
        )
        return 0
    write_json(Path(spec["pid_file"]), {"pid": child.pid})

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    assert child.stdout is not None and child.stderr is not None
    pumps = [
        threading.Thread(target=pump, args=(s, f), daemon=True)
        for s, f in ((child.stdout, logs[0]), (child.stderr, logs[1]))
    ]
    for thread in pumps:
        thread.start()
    code = child.wait()
    for thread in pumps:
        thread.join(timeout=2)
    result = {
        "exit_code": code if code >= 0 else None,
        "signal": -code if code < 0 else None,
        "oom_killed": bool(cgroup) and oom_killed(cgroup),
        "message": "",
    }
    write_json(exit_path, result)
    if cgroup:
        with contextlib.suppress(OSError):
            os.rmdir(cgroup)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
