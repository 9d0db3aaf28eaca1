"""The scheduler: a pure function from a cluster snapshot and asks to placements.

    place(ClusterState.build(nodes, allocs), [Ask, ...], seed) -> Plan(placements, unplaced)

No I/O, no clock, no global randomness: the same input and seed give the same plan.
"""

from ._place import place
from ._state import Alloc, Ask, ClusterState, NodeInfo, Placed, Plan, Unplaced

__all__ = ["Alloc", "Ask", "ClusterState", "NodeInfo", "Placed", "Plan", "Unplaced", "place"]
