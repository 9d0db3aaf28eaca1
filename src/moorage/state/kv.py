"""The KV store in memory: Consul's KV semantics over the store's revisions.

Keys live in the store under `/moorage/kv/<key>`. A stored value is a 9-byte header (a format
byte, then Consul's `Flags` as a big-endian uint64) and the raw bytes. `CreateIndex` and
`ModifyIndex` are the store's create and mod revisions.

`KvState` is fed by the StateCache's watch, like every other kind, and keeps the live keys in a
sorted list (a prefix is one bisect, then a slice). Two indexes answer blocking queries:

    key index     a live key's ModifyIndex; for a deleted key the revision of its delete
                  (a tombstone, the newest TOMBSTONES kept); 0 for a key never seen
    prefix index  the revision of the last put or delete under a prefix: kept in a dict for
                  `""` and every `a/`, `a/b/` boundary; another string prefix (Consul's prefixes
                  are plain string prefixes: `?recurse` on `a/b` lists `a/bc` too) is computed
                  from its live keys and tombstones when first queried, then kept up to date

A change to key `a/b/c` wakes the waiters of exactly that key and of its string prefixes
(`""`, `a`, `a/`, ..., `a/b/c`), nothing else. Reaped tombstones and a re-list after
compaction raise a floor under the indexes of missing keys and of prefixes, so a query that
holds an older index never misses a delete it cannot see any more (it answers at once).
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import json
import struct
from collections import deque
from collections.abc import Callable, Iterator

from moorage.store import KeyValue, WatchEvent

from .kinds import ROOT

KV_ROOT = f"{ROOT}kv/"
HEADER = struct.Struct(">BQ")
FORMAT = 0
MAX_FLAGS = (1 << 64) - 1
TOMBSTONES = 100_000  # deleted keys remembered (each is a key and an int)
COMPUTED = 10_000  # prefixes off a "/" boundary whose index is kept once computed


def kv_key(key: str) -> str:
    """The store key of a KV key."""
    return KV_ROOT + key


def encode_value(value: bytes, flags: int = 0) -> bytes:
    return HEADER.pack(FORMAT, flags) + value


def decode_value(raw: bytes) -> tuple[bytes, int]:
    """(value, flags) of a stored value; a value without a header is taken as is (flags 0)."""
    if len(raw) >= HEADER.size and raw[0] == FORMAT:
        _, flags = HEADER.unpack_from(raw)
        return raw[HEADER.size :], int(flags)
    return raw, 0


class KvEntry:
    """One live key, with its JSON (Consul's DirEntry) rendered once, on first read."""

    __slots__ = ("_json", "create_index", "flags", "key", "modify_index", "value")

    def __init__(
        self, key: str, value: bytes, flags: int, create_index: int, modify_index: int
    ) -> None:
        self.key = key
        self.value = value
        self.flags = flags
        self.create_index = create_index
        self.modify_index = modify_index
        self._json: bytes | None = None

    def consul(self) -> dict[str, object]:
        return {
            "LockIndex": 0,
            "Key": self.key,
            "Flags": self.flags,
            "Value": base64.b64encode(self.value).decode() if self.value else None,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        }

    def json(self) -> bytes:
        if self._json is None:
            self._json = json.dumps(self.consul(), separators=(",", ":")).encode()
        return self._json


def _after(prefix: str) -> str | None:
    """The smallest string above every string starting with prefix (None: no such string)."""
    while prefix:
        last = ord(prefix[-1])
        if last < 0x10FFFF:
            return prefix[:-1] + chr(last + 1)
        prefix = prefix[:-1]
    return None


def _span(ordered: list[str], prefix: str) -> tuple[int, int]:
    """The slice of a sorted list holding the strings that start with prefix."""
    if not prefix:
        return 0, len(ordered)
    start = bisect.bisect_left(ordered, prefix)
    after = _after(prefix)
    end = len(ordered) if after is None else bisect.bisect_left(ordered, after, start)
    return start, end


def _boundary(prefix: str) -> bool:
    return not prefix or prefix.endswith("/")


class KvState:
    """Live keys (sorted), tombstones, per-key and per-prefix indexes, and their waiters."""

    def __init__(self) -> None:
        self.entries: dict[str, KvEntry] = {}
        self._keys: list[str] = []  # the live keys, sorted
        self._tombstones: dict[str, int] = {}  # deleted key -> revision of its delete
        self._dead: list[str] = []  # the tombstoned keys, sorted
        self._reap: deque[tuple[int, str]] = deque()  # tombstones, oldest first
        self._dirs: dict[str, int] = {}  # "" and "a/", "a/b/"... -> last change under it
        self._computed: dict[str, int] = {}  # other prefixes queried: scanned once, then kept
        self._floor = 0  # indexes of missing keys and of prefixes are at least this
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}

    # ---- reads ---------------------------------------------------------------------------
    def get(self, key: str) -> KvEntry | None:
        return self.entries.get(key)

    def keys_under(self, prefix: str) -> list[str]:
        start, end = _span(self._keys, prefix)
        return self._keys[start:end]

    def entries_under(self, prefix: str) -> list[KvEntry]:
        entries = self.entries
        return [entries[k] for k in self.keys_under(prefix)]

    def keys(self, prefix: str, separator: str = "") -> list[str]:
        """Keys under prefix; with a separator, each one cut after the first separator that
        follows the prefix (Consul's `?keys&separator=/`: one level of a tree), deduplicated."""
        if not separator:
            return self.keys_under(prefix)
        ordered = self._keys
        start, end = _span(ordered, prefix)
        out: list[str] = []
        position = start
        while position < end:
            key = ordered[position]
            cut = key.find(separator, len(prefix))
            if cut < 0:
                out.append(key)
                position += 1
                continue
            folder = key[: cut + len(separator)]
            out.append(folder)
            position = _span(ordered, folder)[1]  # skip the rest of the folder at once
        return out

    def key_index(self, key: str) -> int:
        """ModifyIndex of a live key; else the revision of its delete (or the floor), or 0."""
        entry = self.entries.get(key)
        if entry is not None:
            return entry.modify_index
        return max(self._tombstones.get(key, 0), self._floor)

    def prefix_index(self, prefix: str) -> int:
        """The revision of the last put or delete of a key under prefix (or the floor), or 0."""
        if _boundary(prefix):
            return max(self._dirs.get(prefix, 0), self._floor)
        known = self._computed.get(prefix)
        if known is not None:
            return max(known, self._floor)
        newest = 0
        entries = self.entries
        start, end = _span(self._keys, prefix)
        for position in range(start, end):
            newest = max(newest, entries[self._keys[position]].modify_index)
        start, end = _span(self._dead, prefix)
        for position in range(start, end):
            newest = max(newest, self._tombstones[self._dead[position]])
        if len(self._computed) < COMPUTED:  # kept exact by `apply` from now on
            self._computed[prefix] = newest
        return max(newest, self._floor)

    # ---- waiting ---------------------------------------------------------------------------
    async def wait_key(self, key: str, index: int, timeout: float) -> int:
        """Block until the key's index passes `index` (or timeout); return the key index."""
        return await self._wait("k:" + key, lambda: self.key_index(key), index, timeout)

    async def wait_prefix(self, prefix: str, index: int, timeout: float) -> int:
        """Block until a put or delete under prefix passes `index` (or timeout)."""
        return await self._wait("p:" + prefix, lambda: self.prefix_index(prefix), index, timeout)

    async def _wait(
        self, topic: str, current: Callable[[], int], index: int, timeout: float
    ) -> int:
        now = current()
        # A key or prefix never seen answers to its first write, whatever index the query holds
        # (the first write of a fresh store may well be revision 1).
        unseen = now == 0
        if now > index or timeout <= 0:
            return now
        loop = asyncio.get_running_loop()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while now <= index and not (unseen and now > 0):
                    waiter: asyncio.Future[None] = loop.create_future()
                    waiting = self._waiters.setdefault(topic, set())
                    waiting.add(waiter)
                    try:
                        await waiter
                    finally:
                        still = self._waiters.get(topic)
                        if still is not None:
                            still.discard(waiter)
                            if not still:
                                del self._waiters[topic]
                    now = current()
        return current()

    def waiting(self) -> int:
        """How many queries are blocked on KV keys or prefixes now."""
        return sum(len(w) for w in self._waiters.values())

    def _wake(self, topic: str) -> None:
        waiting = self._waiters.pop(topic, None)
        if waiting:
            for waiter in waiting:
                if not waiter.done():
                    waiter.set_result(None)

    def _wake_all(self) -> None:
        for topic in list(self._waiters):
            self._wake(topic)

    # ---- feeding (the StateCache calls these) ----------------------------------------------
    def clear(self) -> None:
        """Forget every key before a full listing (the floor and the waiters stay)."""
        self.entries.clear()
        self._keys.clear()
        self._dirs.clear()
        self._computed.clear()
        self._tombstones.clear()
        self._dead.clear()
        self._reap.clear()

    def load(self, kv: KeyValue) -> None:
        """One key of a full listing (call `relisted` after the last)."""
        key = kv.key[len(KV_ROOT) :]
        value, flags = decode_value(kv.value)
        if key not in self.entries:
            bisect.insort(self._keys, key)
        self.entries[key] = KvEntry(key, value, flags, kv.create_revision, kv.mod_revision)
        self._mark_dirs(key, kv.mod_revision, keep_newer=True)

    def relisted(self, revision: int, first: bool) -> None:
        """A listing is loaded. After the first, deletes may have been missed (compaction): the
        indexes of missing keys and prefixes rise to the listing's revision, and every waiter
        wakes to read again."""
        if not first:
            self._floor = max(self._floor, revision)
        self._wake_all()

    def apply(self, change: WatchEvent) -> None:
        kv = change.kv
        key = kv.key[len(KV_ROOT) :]
        revision = kv.mod_revision
        if change.type == "delete":
            if self.entries.pop(key, None) is not None:
                del self._keys[bisect.bisect_left(self._keys, key)]
            self._bury(key, revision)
        else:
            value, flags = decode_value(kv.value)
            if key not in self.entries:
                bisect.insort(self._keys, key)
            self.entries[key] = KvEntry(key, value, flags, kv.create_revision, revision)
            if self._tombstones.pop(key, None) is not None:
                del self._dead[bisect.bisect_left(self._dead, key)]
        self._mark_dirs(key, revision)
        computed = self._computed
        if computed:
            for end in range(1, len(key) + 1):
                if key[:end] in computed:
                    computed[key[:end]] = revision
        if self._waiters:
            self._wake("k:" + key)
            for end in range(len(key) + 1):
                self._wake("p:" + key[:end])

    def _mark_dirs(self, key: str, revision: int, keep_newer: bool = False) -> None:
        dirs = self._dirs
        cut = key.find("/")
        prefixes = [""]
        while cut >= 0:
            prefixes.append(key[: cut + 1])
            cut = key.find("/", cut + 1)
        for prefix in prefixes:
            if not keep_newer or dirs.get(prefix, 0) < revision:
                dirs[prefix] = revision

    def _bury(self, key: str, revision: int) -> None:
        if key not in self._tombstones:
            bisect.insort(self._dead, key)
        self._tombstones[key] = revision
        self._reap.append((revision, key))
        while len(self._tombstones) > TOMBSTONES:
            old_revision, old_key = self._reap.popleft()
            if self._tombstones.get(old_key) == old_revision:
                del self._tombstones[old_key]
                del self._dead[bisect.bisect_left(self._dead, old_key)]
                self._floor = max(self._floor, old_revision)
        if len(self._reap) > 2 * TOMBSTONES:  # entries superseded by a later delete of the key
            self._reap = deque((r, k) for r, k in self._reap if self._tombstones.get(k) == r)

    def items(self) -> Iterator[KvEntry]:
        entries = self.entries
        for key in self._keys:
            yield entries[key]
