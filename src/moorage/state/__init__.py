"""Typed state over a Store: the key layout, a watch-fed cache, and compare-and-swap writers.

Store (sqlite | etcd) ──watch──▶ StateCache (objects + per-topic indexes) ──▶ reads, blocking queries
        ▲
        └──────── txn (CAS on mod_revision) ◀── StateWriter ◀── API handlers, controllers
"""

from .cache import StateCache, Topic
from .keys import Kind, decode, encode, key_kind
from .writer import StateWriter

__all__ = ["Kind", "StateCache", "StateWriter", "Topic", "decode", "encode", "key_kind"]
