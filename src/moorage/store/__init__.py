"""State store engines behind one protocol (see `base.py`): SQLite now, etcd for HA later."""

from .base import (
    Compacted,
    Compare,
    Delete,
    Get,
    KeyValue,
    LeaseNotFound,
    Op,
    Put,
    Store,
    StoreClosed,
    StoreError,
    TxnResult,
    WatchEvent,
)

__all__ = [
    "Compacted",
    "Compare",
    "Delete",
    "Get",
    "KeyValue",
    "LeaseNotFound",
    "Op",
    "Put",
    "Store",
    "StoreClosed",
    "StoreError",
    "TxnResult",
    "WatchEvent",
]
