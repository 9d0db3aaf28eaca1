"""Typed state over a Store: the registry of stored kinds, a watch-fed cache, and CAS writers.

Store (sqlite | etcd) ──watch──▶ StateCache (a table per kind + per-topic indexes) ──▶ reads,
        ▲                                                            blocking queries, snapshots
        └──────── txn (CAS on mod_revision) ◀── StateWriter ◀── operations, controllers
"""

from .cache import StateCache
from .kinds import KINDS, ROOT, StoredKind, encode, kind_of
from .topics import Topic
from .writer import MAX_ATTEMPTS, StateWriter, new_event

__all__ = [
    "KINDS",
    "MAX_ATTEMPTS",
    "ROOT",
    "StateCache",
    "StateWriter",
    "StoredKind",
    "Topic",
    "encode",
    "kind_of",
    "new_event",
]
