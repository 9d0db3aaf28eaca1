"""The Store protocol's values as etcd's protobuf messages and back, with no I/O: keys under
a namespace, prefix ranges, compares and ops, the transaction limits, KeyValues and events."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aetcd import rpc

from .base import Compare, Delete, Get, KeyValue, Op, Put, StoreError, TxnTooLarge, WatchEvent

RAFT_OVERHEAD = 64  # etcd wraps a txn in a raft request (a header, a tag) before its size check
_COMPARE_TARGET = {"mod": "MOD", "create": "CREATE", "version": "VERSION", "value": "VALUE"}
_COMPARE_FIELD = {"mod": "mod_revision", "create": "create_revision", "version": "version"}
_COMPARE_OP = {"==": "EQUAL", "!=": "NOT_EQUAL", "<": "LESS", ">": "GREATER"}


def prefix_end(prefix: bytes) -> bytes:
    """etcd's range_end for a prefix: its last byte + 1 (b"\\0" when there is none: to the end)."""
    stripped = prefix.rstrip(b"\xff")
    return stripped[:-1] + bytes([stripped[-1] + 1]) if stripped else b"\0"


def check_branch(ops: Sequence[Op]) -> None:
    """What etcd refuses in one branch (checked before sending, so nothing is ambiguous)."""
    puts = [op.key for op in ops if isinstance(op, Put)]
    if len(set(puts)) != len(puts):
        raise StoreError("duplicate key given in a transaction")
    for op in ops:
        if isinstance(op, Delete) and any(
            key == op.key or (op.prefix and key.startswith(op.key)) for key in puts
        ):
            raise StoreError(f"etcd refuses a transaction that puts a key it deletes ({op.key!r})")


class Codec:
    """Messages for one namespace and one cluster's limits (the stubs' messages are `Any`)."""

    def __init__(self, namespace: str, max_txn_ops: int, max_request_bytes: int) -> None:
        self.prefix = namespace.encode()
        self.max_txn_ops = max_txn_ops
        self.max_request_bytes = max_request_bytes

    def key(self, key: str) -> bytes:
        return self.prefix + key.encode()

    def span(self, prefix: str) -> tuple[bytes, bytes]:
        """The etcd range of every key under prefix (in the namespace)."""
        start = self.key(prefix)
        return (start, prefix_end(start)) if start else (b"\0", b"\0")

    def kv(self, kv: Any) -> KeyValue:
        key = bytes(kv.key)[len(self.prefix) :].decode()
        return KeyValue(
            key, bytes(kv.value), kv.create_revision, kv.mod_revision, kv.version, kv.lease
        )

    def event(self, event: Any) -> WatchEvent:
        prev = self.kv(event.prev_kv) if event.HasField("prev_kv") else None
        if event.type == rpc.Event.DELETE:
            return WatchEvent("delete", self.kv(event.kv), prev)
        return WatchEvent("put", self.kv(event.kv), prev)

    def txn_request(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op]
    ) -> Any:
        ops = max(len(compares), len(success), len(failure))
        if ops > self.max_txn_ops:
            raise TxnTooLarge(
                f"a transaction of {ops} compares or ops in one branch: etcd takes at most"
                f" {self.max_txn_ops} (--max-txn-ops)"
            )
        check_branch(success)
        check_branch(failure)
        request = rpc.TxnRequest(
            compare=[self.compare(c) for c in compares],
            success=[self.op(op) for op in success],
            failure=[self.op(op) for op in failure],
        )
        size = request.ByteSize() + RAFT_OVERHEAD
        if size > self.max_request_bytes:
            raise TxnTooLarge(
                f"a transaction of {size} bytes: etcd takes at most {self.max_request_bytes}"
                " (--max-request-bytes)"
            )
        return request

    def compare(self, c: Compare) -> Any:
        wanted = bytes if c.target == "value" else int
        if not isinstance(c.value, wanted) or isinstance(c.value, bool):
            raise StoreError(f"cannot compare {c.target} of {c.key!r} with {c.value!r}")
        field = _COMPARE_FIELD.get(c.target, "value")
        return rpc.Compare(
            key=self.key(c.key),
            target=getattr(rpc.Compare, _COMPARE_TARGET[c.target]),
            result=getattr(rpc.Compare, _COMPARE_OP[c.op]),
            **{field: c.value},
        )

    def op(self, op: Op) -> Any:
        if isinstance(op, Put):
            put = rpc.PutRequest(key=self.key(op.key), value=op.value, lease=op.lease)
            return rpc.RequestOp(request_put=put)
        start, end = self.span(op.key) if op.prefix else (self.key(op.key), b"")
        if isinstance(op, Get):
            return rpc.RequestOp(request_range=rpc.RangeRequest(key=start, range_end=end))
        delete = rpc.DeleteRangeRequest(key=start, range_end=end, prev_kv=True)
        return rpc.RequestOp(request_delete_range=delete)

    def responses(self, answer: Any) -> list[list[KeyValue]]:
        """Per op: the KeyValues a Get read, the ones a Delete removed, [] for a Put."""
        out: list[list[KeyValue]] = []
        for response in answer.responses:
            kind = response.WhichOneof("response")
            if kind == "response_range":
                out.append([self.kv(kv) for kv in response.response_range.kvs])
            elif kind == "response_delete_range":
                out.append([self.kv(kv) for kv in response.response_delete_range.prev_kvs])
            else:
                out.append([])
        return out
