"""The scheduler: a pure function from a cluster snapshot and asks to placements.

    place(ClusterState.build(nodes, allocs), [Ask, ...], seed) -> PlaceResult(placements, unplaced)

No I/O, no clock, no global randomness: the same input and seed give the same plan.
"""

from ._place import place
from ._state import (
    Alloc,
    Ask,
    ClusterState,
    NodeInfo,
    Placed,
    PlaceResult,
    Unplaced,
    shares,
)

__all__ = [
    "Alloc",
    "Ask",
    "ClusterState",
    "NodeInfo",
    "PlaceResult",
    "Placed",
    "Unplaced",
    "place",
    "shares",
]
