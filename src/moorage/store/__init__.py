"""State store engines behind one protocol (see `base.py`): SQLite (`sqlite.py`), embedded, and
etcd (`etcd.py`, the `etcd` extra) for several servers sharing one state."""

from .base import (
    Compacted,
    Compare,
    Delete,
    Get,
    Indeterminate,
    KeyValue,
    LeaseNotFound,
    Op,
    Put,
    Store,
    StoreClosed,
    StoreError,
    TxnResult,
    TxnTooLarge,
    Unavailable,
    WatchEvent,
)

__all__ = [
    "Compacted",
    "Compare",
    "Delete",
    "Get",
    "Indeterminate",
    "KeyValue",
    "LeaseNotFound",
    "Op",
    "Put",
    "Store",
    "StoreClosed",
    "StoreError",
    "TxnResult",
    "TxnTooLarge",
    "Unavailable",
    "WatchEvent",
]
