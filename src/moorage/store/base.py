"""The Store protocol: revisioned keys, multi-key compare-and-swap, watches and leases.

Its semantics map one to one onto etcd v3, so an etcd engine can implement it unchanged:

    revision        a cluster-wide counter bumped by every write transaction (etcd's header revision)
    KeyValue        create_revision / mod_revision / version / lease, exactly as etcd's mvccpb.KeyValue
    txn             If(compares...) Then(ops...) Else(ops...), atomic, one revision for all its writes
    watch           every event on a prefix after a start revision, in revision order; a start revision
                    below the compaction point raises `Compacted` (the watcher re-lists, then re-watches)
    lease           grant(ttl) / keepalive / revoke; keys attached to a lease are deleted when it expires

Keys and values are `str` / `bytes`. A key prefix lists every key that starts with it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable


class StoreError(Exception):
    """Base of the store's exception tree.

    StoreError
     ├── Compacted       watch/range from a revision that compaction removed (`.compact_revision`)
     ├── LeaseNotFound   keepalive/revoke/put with a lease that expired or never existed
     ├── StoreClosed     the store was closed (or its engine connection is gone for good)
     ├── Unavailable     no engine endpoint answered in time; nothing was done (also a ConnectionError)
     ├── Indeterminate   a write went out but its answer never came: it may or may not have applied
     ├── TxnTooLarge     a transaction over the engine's limits (etcd: ops per branch, request bytes)
     └── etcd.EtcdError  etcd refused a request for another reason (`.code`: the gRPC status)
    """


class Compacted(StoreError):
    def __init__(self, requested: int, compact_revision: int) -> None:
        super().__init__(f"revision {requested} is compacted (compaction at {compact_revision})")
        self.requested = requested
        self.compact_revision = compact_revision


class LeaseNotFound(StoreError):
    def __init__(self, lease: int) -> None:
        super().__init__(f"lease {lease} not found")
        self.lease = lease


class StoreClosed(StoreError):
    pass


class Unavailable(StoreError, ConnectionError):
    """No endpoint of a networked engine answered within the call's deadline. A read or an
    idempotent call was not done; a write was not sent. Also a ConnectionError, so loops that
    retry on OSError (the state cache's watch) retry on it."""


class Indeterminate(StoreError):
    """A write reached an endpoint, then the connection failed before its answer: the engine
    may or may not have applied it. Re-sending it blindly could apply it twice (two revisions,
    a counter bumped twice), so the caller reads the keys again and decides."""


class TxnTooLarge(StoreError):
    """A transaction over the engine's limits (etcd: --max-txn-ops compares or ops in one
    branch, --max-request-bytes per request). Nothing was sent: splitting it would lose its
    atomicity, so only the caller may split it, where it knows what must stay together."""


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Compare:
    """One condition of a transaction, as etcd's Compare.

    target: `mod` (mod_revision), `create` (create_revision), `version`, or `value`.
    A missing key has mod = create = version = 0 and value b"" (so `create == 0` means "absent").
    """

    key: str
    target: Literal["mod", "create", "version", "value"]
    op: Literal["==", "!=", "<", ">"]
    value: int | bytes

    @staticmethod
    def absent(key: str) -> Compare:
        return Compare(key, "create", "==", 0)

    @staticmethod
    def unchanged(key: str, mod_revision: int) -> Compare:
        return Compare(key, "mod", "==", mod_revision)


@dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: bytes
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete one key, or every key under it with prefix=True."""

    key: str
    prefix: bool = False


@dataclass(frozen=True, slots=True)
class Get:
    """Read inside a transaction (etcd RequestRange); prefix=True reads every key under it."""

    key: str
    prefix: bool = False


Op = Put | Delete | Get


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    revision: int  # the store revision after the transaction (unchanged when nothing was written)
    # One entry per op of the branch that ran: the KeyValues read by a Get, the KeyValues removed by
    # a Delete (prev_kv), or [] for a Put.
    responses: list[list[KeyValue]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: Literal["put", "delete"]
    kv: KeyValue  # for a delete: key, mod_revision = the delete's revision, value b""
    prev: KeyValue | None = None  # the previous value, when the engine knows it


@runtime_checkable
class Store(Protocol):
    """A revisioned key-value store. Every method may raise StoreClosed after close()."""

    async def get(self, key: str) -> KeyValue | None:
        """The current value of one key, or None. Never blocks on other writers."""
        ...

    async def range(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Every key under prefix, sorted by key, and the revision the read was taken at."""
        ...

    async def put(self, key: str, value: bytes, lease: int = 0) -> int:
        """Write one key unconditionally; return the new revision. Raises LeaseNotFound."""
        ...

    async def delete(self, key: str, prefix: bool = False) -> int:
        """Delete one key (or a prefix); return the revision (unchanged if nothing existed)."""
        ...

    async def txn(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        """Atomically: if every compare holds run `success`, else run `failure`.

        All writes of one transaction share one new revision, and are durable when it returns.
        A branch that puts one key twice raises StoreError. etcd also refuses (StoreError) a
        branch that puts a key one of its deletes covers, whichever branch runs, and fails a
        `value` compare on a missing key: portable callers do neither. Networked engines may
        raise Unavailable (nothing sent), Indeterminate (sent, answer lost) and TxnTooLarge.
        """
        ...

    def watch(self, prefix: str, start_revision: int) -> AsyncIterator[WatchEvent]:
        """Events on keys under prefix with revision >= start_revision, then live ones, forever.

        Raises Compacted (on first iteration) if start_revision is at or below the compaction
        point (and > 0). Closing the iterator (aclose / leaving `async for`) ends the watch.
        """
        ...

    async def revision(self) -> int:
        """The current store revision."""
        ...

    async def compact(self, revision: int) -> None:
        """Forget history at and below revision; watches from there raise Compacted."""
        ...

    async def lease_grant(self, ttl: float) -> int:
        """A new lease id (> 0) that expires ttl seconds from now unless kept alive."""
        ...

    async def lease_keepalive(self, lease: int) -> float:
        """Renew a lease for its full ttl; return the ttl. Raises LeaseNotFound if expired."""
        ...

    async def lease_revoke(self, lease: int) -> None:
        """Expire a lease now, deleting its keys (one revision). Raises LeaseNotFound."""
        ...

    async def close(self) -> None:
        """Release the engine; pending watches end with StoreClosed."""
        ...
