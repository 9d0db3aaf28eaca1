"""A read-only view of the whole cluster at one revision: what the control loops decide over.

`StateCache.snapshot()` builds it from the cache's tables without copying them; a decision reads
it synchronously (before any await), so it sees one revision.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .deployment import Deployment
from .node import Node
from .service import Service
from .task import Task
from .taskdef import TaskDefinition
from .volume import Volume


@dataclass(frozen=True)
class ClusterSnapshot:
    services: Mapping[str, Service]
    taskdefs: Mapping[tuple[str, int], TaskDefinition]
    tasks: Mapping[str, Task]
    nodes: Mapping[str, Node]
    deployments: Mapping[str, Deployment] = field(default_factory=dict)
    volumes: Mapping[str, Volume] = field(default_factory=dict)
