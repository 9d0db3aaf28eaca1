"""Handles of the workloads this agent runs, saved on disk so a restarted agent recovers them.

<data_dir>/tasks/<task_id>.json    {"task_id", "generation", "started_at", "handles": [...],
                                    "volumes": {...}}

`volumes` is the task's attached volumes (`TaskVolumes.to_json`): claims with their epochs, so a
restarted agent renews with the same epoch, and the fence watchdog's pid.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moorage.drivers.base import TaskHandle


@dataclass
class SavedTask:
    task_id: str
    generation: int
    started_at: float
    handles: list[TaskHandle] = field(default_factory=list)
    volumes: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "generation": self.generation,
            "started_at": self.started_at,
            "handles": [h.to_json() for h in self.handles],
            "volumes": self.volumes,
        }


class HandleStore:
    def __init__(self, root: Path) -> None:
        self.root = root / "tasks"
        self.root.mkdir(parents=True, exist_ok=True)

    def save(self, saved: SavedTask) -> None:
        path = self.root / f"{saved.task_id}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(saved.to_json()))
        os.replace(tmp, path)  # atomic: a crash leaves the old or the new handle, never half

    def remove(self, task_id: str) -> None:
        (self.root / f"{task_id}.json").unlink(missing_ok=True)

    def load_all(self) -> list[SavedTask]:
        out = []
        for path in sorted(self.root.glob("*.json")):
            try:
                data = json.loads(path.read_text())
                handles = [TaskHandle.from_json(h) for h in data["handles"]]
                out.append(
                    SavedTask(
                        data["task_id"],
                        int(data["generation"]),
                        float(data["started_at"]),
                        handles,
                        dict(data.get("volumes") or {}),
                    )
                )
            except (OSError, ValueError, KeyError):
                path.unlink(missing_ok=True)
        return out
