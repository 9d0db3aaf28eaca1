"""SIGKILL in the middle of writing loses nothing that was committed (SQLite, WAL, FULL sync)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from moorage.store.sqlite import SqliteStore

WRITER = """
import asyncio, sys
from moorage.store import Put
from moorage.store.sqlite import SqliteStore

async def main():
    store = await SqliteStore.open(sys.argv[1])
    number = 0
    while True:
        number += 1
        ops = [Put(f"/k/{number:06d}/{i}", f"value-{number}-{i}".encode() * 50) for i in range(20)]
        result = await store.txn([], ops)
        print(result.revision, number, flush=True)

asyncio.run(main())
"""


def write_until_killed(path: Path, acknowledged: int) -> dict[int, int]:
    """Run the writer, SIGKILL it once it acknowledged that many commits; return them."""
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    committed: dict[int, int] = {}
    try:
        for line in child.stdout:
            revision, number = map(int, line.split())
            committed[revision] = number
            if len(committed) >= acknowledged:
                break
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        child.stdout.close()
        if child.poll() is None:
            child.kill()
            child.wait()
    return committed


async def test_sigkill_mid_write_keeps_every_committed_transaction(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    committed = write_until_killed(path, 150)
    store = await SqliteStore.open(path)
    try:
        revision = await store.revision()
        assert revision >= max(committed)  # every acknowledged commit survived
        kvs, _ = await store.range("/k/")
        numbers = {int(kv.key.split("/")[2]) for kv in kvs}
        assert numbers == set(range(1, revision + 1))  # whole transactions only, no gaps
        assert len(kvs) == 20 * revision
        sample = next(kv for kv in kvs if kv.key == "/k/000100/7")
        assert sample.value == b"value-100-7" * 50 and sample.mod_revision == 100
        assert await store.put("/after", b"crash") == revision + 1  # and it still works
    finally:
        await store.close()
