"""The time-series store's file: one SQLite database (WAL) under `<data dir>/metrics`.

    meta(key, value)                       sealed_until: hours before it are blocks, not segments
    series(sid, metric, labels, last_ts, last_value)
    segments(id, max_ts, n, data)          one row per flush: every sample taken since the last
                                           one, as three columns (sid, ts, value); replayed on
                                           open, deleted once their hours are sealed
    blocks(sid, start, n, data)            one row per series and sealed hour: its raw samples
    rollups(sid, start, n, data)           one row per series and sealed hour: 1-minute
                                           min, max, sum, count, last

Rows hold many samples (a block is an hour of one series), so the row rate stays far below
SQLite's ~100k rows/s. Columns are packed as little-endian float64 (int64 for series ids),
byte-shuffled (the k-th byte of every value together, as blosc does, so the slowly changing
high bytes of timestamps and values form long runs) and then zlib-compressed.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import zlib
from array import array
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value REAL NOT NULL);
CREATE TABLE IF NOT EXISTS series (
    sid INTEGER PRIMARY KEY, metric TEXT NOT NULL, labels TEXT NOT NULL,
    last_ts REAL, last_value REAL
);
CREATE TABLE IF NOT EXISTS segments (
    id INTEGER PRIMARY KEY, max_ts REAL NOT NULL, n INTEGER NOT NULL, data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS blocks (
    sid INTEGER NOT NULL, start REAL NOT NULL, n INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (sid, start)
);
CREATE INDEX IF NOT EXISTS blocks_start ON blocks (start);
CREATE TABLE IF NOT EXISTS rollups (
    sid INTEGER NOT NULL, start REAL NOT NULL, n INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (sid, start)
);
CREATE INDEX IF NOT EXISTS rollups_start ON rollups (start);
"""

LITTLE = sys.byteorder == "little"


def pack(columns: Sequence[array[float] | array[int]]) -> bytes:
    """Equal-length 8-byte columns → one compressed blob."""
    if not LITTLE:
        columns = [array(c.typecode, c) for c in columns]
        for column in columns:
            column.byteswap()
    raw = b"".join(column.tobytes() for column in columns)
    return zlib.compress(b"".join(raw[k::8] for k in range(8)), 1)  # byte shuffle


def unpack(blob: bytes, n: int, typecodes: str) -> list[array[float] | array[int]]:
    """The columns `pack` wrote, given their length and typecodes (`d` float, `q` int)."""
    shuffled = zlib.decompress(blob)
    words = len(shuffled) // 8
    raw = bytearray(len(shuffled))
    for k in range(8):
        raw[k::8] = shuffled[k * words : (k + 1) * words]
    out: list[array[float] | array[int]] = []
    for index, code in enumerate(typecodes):
        column: array[float] | array[int] = array(code)
        column.frombytes(raw[index * n * 8 : (index + 1) * n * 8])
        if not LITTLE:
            column.byteswap()
        out.append(column)
    return out


def floats(blob: bytes, n: int, columns: int) -> list[array[float]]:
    return unpack(blob, n, "d" * columns)  # type: ignore[return-value]


class Disk:
    """The store's SQLite file. Every method is one transaction; none is called concurrently
    (the store's owner calls them from one thread)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def _tx(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def _commit(self) -> None:
        self.db.execute("COMMIT")

    def _rollback(self) -> None:
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")

    # ---- reads (on open, and for queries older than what memory holds) --------------------
    def meta(self, key: str, default: float) -> float:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return float(row[0]) if row else default

    def series(self) -> Iterator[tuple[int, str, dict[str, str], float | None, float | None]]:
        for sid, metric, labels, last_ts, last_value in self.db.execute(
            "SELECT sid, metric, labels, last_ts, last_value FROM series ORDER BY sid"
        ):
            yield sid, metric, json.loads(labels), last_ts, last_value

    def segments(self) -> Iterator[tuple[array[int], array[float], array[float]]]:
        for n, data in self.db.execute("SELECT n, data FROM segments ORDER BY id"):
            sids, ts, values = unpack(data, n, "qdd")
            yield sids, ts, values  # type: ignore[misc]

    def blocks(
        self, sid: int | None, start: float, end: float
    ) -> Iterator[tuple[int, array[float], array[float]]]:
        """Raw blocks whose hour starts in [start, end), by series then time."""
        if sid is None:
            sql = (
                "SELECT sid, n, data FROM blocks WHERE start >= ? AND start < ? ORDER BY sid, start"
            )
            rows = self.db.execute(sql, (start, end))
        else:
            sql = "SELECT sid, n, data FROM blocks WHERE sid = ? AND start >= ? AND start < ? ORDER BY start"
            rows = self.db.execute(sql, (sid, start, end))
        for found, n, data in rows:
            ts, values = floats(data, n, 2)
            yield found, ts, values

    def rollups(self, sid: int, start: float, end: float) -> Iterator[list[array[float]]]:
        """Rollup rows whose hour starts in [start, end): minute, min, max, sum, count, last."""
        sql = (
            "SELECT n, data FROM rollups WHERE sid = ? AND start >= ? AND start < ? ORDER BY start"
        )
        for n, data in self.db.execute(sql, (sid, start, end)):
            yield floats(data, n, 6)

    # ---- writes --------------------------------------------------------------------------
    def write_segment(
        self,
        new_series: Iterable[tuple[int, str, dict[str, str]]],
        sids: array[int],
        ts: array[float],
        values: array[float],
    ) -> None:
        """The samples since the last flush, with the series they introduced."""
        rows = [
            (sid, metric, json.dumps(labels, sort_keys=True)) for sid, metric, labels in new_series
        ]
        blob = pack([sids, ts, values])
        db = self._tx()
        try:
            db.executemany("INSERT INTO series (sid, metric, labels) VALUES (?, ?, ?)", rows)
            db.execute(
                "INSERT INTO segments (max_ts, n, data) VALUES (?, ?, ?)", (max(ts), len(ts), blob)
            )
            self._commit()
        except BaseException:
            self._rollback()
            raise

    def write_sealed(
        self,
        blocks: Sequence[tuple[int, float, array[float], array[float]]],
        rollups: Sequence[tuple[int, float, Sequence[array[float]]]],
        lasts: Sequence[tuple[float, float, int]],
    ) -> None:
        """Sealed hours of some series: their blocks and rollups (replacing any left by a
        sealing a crash interrupted), and the series' last samples."""
        block_rows = [(sid, start, len(ts), pack([ts, vs])) for sid, start, ts, vs in blocks]
        rollup_rows = [(sid, start, len(cols[0]), pack(cols)) for sid, start, cols in rollups]
        db = self._tx()
        try:
            db.executemany("INSERT OR REPLACE INTO blocks VALUES (?, ?, ?, ?)", block_rows)
            db.executemany("INSERT OR REPLACE INTO rollups VALUES (?, ?, ?, ?)", rollup_rows)
            db.executemany("UPDATE series SET last_ts = ?, last_value = ? WHERE sid = ?", lasts)
            self._commit()
        except BaseException:
            self._rollback()
            raise

    def finish_sealing(self, sealed_until: float) -> None:
        """Every series is sealed below `sealed_until`: move the mark, drop the segments."""
        db = self._tx()
        try:
            db.execute("INSERT OR REPLACE INTO meta VALUES ('sealed_until', ?)", (sealed_until,))
            db.execute("DELETE FROM segments WHERE max_ts < ?", (sealed_until,))
            self._commit()
        except BaseException:
            self._rollback()
            raise

    def expire(self, raw_upto: float, rollups_upto: float, series: Sequence[int]) -> None:
        """Retention: blocks (rollups) of the hours starting at or before `raw_upto`
        (`rollups_upto`): they end before the cut-off; and the rows of dead series."""
        db = self._tx()
        try:
            db.execute("DELETE FROM blocks WHERE start <= ?", (raw_upto,))
            db.execute("DELETE FROM rollups WHERE start <= ?", (rollups_upto,))
            gone = [(sid,) for sid in series]
            for table in ("series", "blocks", "rollups"):
                db.executemany(f"DELETE FROM {table} WHERE sid = ?", gone)
            self._commit()
        except BaseException:
            self._rollback()
            raise
