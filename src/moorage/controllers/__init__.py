"""The control loops: pure decisions over a cluster snapshot, and the thin loops applying them.

cache.snapshot() ──reconcile()──▶ Plan ──PlanApplier──▶ CAS transactions
                 ──plan_rebalance()──▶ moves          (apply.py: the one place)
Reconciler · GarbageCollector · NodeLiveness · AlertLoop run only on the leader
(run_as_leader over a Leadership), restarted if they crash.
"""

from .alerts import AlertLoop
from .apply import PlanApplier
from .leader import Leadership, SoleLeader, run_as_leader
from .liveness import Heartbeats, NodeLiveness, heartbeat_interval, heartbeat_ttl
from .loops import GarbageCollector, Reconciler
from .plan import EventSpec, Plan
from .rebalance import Rebalance, plan_rebalance
from .reconcile import reconcile

__all__ = [
    "AlertLoop",
    "EventSpec",
    "GarbageCollector",
    "Heartbeats",
    "Leadership",
    "NodeLiveness",
    "Plan",
    "PlanApplier",
    "Rebalance",
    "Reconciler",
    "SoleLeader",
    "heartbeat_interval",
    "heartbeat_ttl",
    "plan_rebalance",
    "reconcile",
    "run_as_leader",
]
