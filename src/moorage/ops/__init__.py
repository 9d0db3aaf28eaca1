"""The domain operations: what the API does, with no HTTP in it.

    server/<noun>.py (HTTP adapter: decode, call one operation, encode)
        │
        ▼
    ops/<noun>.py ── typed input (model classes) ──▶ rules (model, controllers' pure
        │                                             decisions) ──▶ CAS writes (StateWriter)
        └─ typed output, or a moorage error (mapped to HTTP in server/errors.py, once)

One module per noun: services (deploy, scale, images, rollback, rebalance, stop) and deploy
(revisions, deployments), nodes, tasks, volumes, snapshots, secrets, kv, acl, events,
registrations, alerts, metrics. Each class takes the state cache (reads), the writer (writes)
and a clock; nothing here imports aiohttp (an import-linter contract), so every operation is
unit-tested against the in-memory store (`moorage.testing.memstore`). Calls to agents go through
the `AgentCalls` protocol, which the server implements over HTTP.
"""

from .acl import Acl
from .agents import AgentCalls, AgentLost, AgentUnreachable, NoAgents
from .alerts import Alerts
from .deploy import Deployer
from .events import Events
from .kv import Kv
from .metrics import Metrics
from .nodes import Nodes
from .registrations import Registrations
from .secrets import SecretBox, Secrets
from .services import Services
from .snapshots import Snapshots
from .tasks import Tasks
from .volumes import Volumes

__all__ = [
    "Acl",
    "AgentCalls",
    "AgentLost",
    "AgentUnreachable",
    "Alerts",
    "Deployer",
    "Events",
    "Kv",
    "Metrics",
    "NoAgents",
    "Nodes",
    "Registrations",
    "SecretBox",
    "Secrets",
    "Services",
    "Snapshots",
    "Tasks",
    "Volumes",
]
