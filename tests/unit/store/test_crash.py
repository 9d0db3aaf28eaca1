"""SIGKILL in the middle of writing loses nothing that was committed: SQLite (WAL, FULL sync),
and etcd (its WAL), with the writer and the etcd member both killed mid-write."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from moorage.store.etcd import EtcdStore
from moorage.store.sqlite import SqliteStore
from moorage.testing.etcd import EtcdServer

from .conftest import require_etcd

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

ETCD_WRITER = """
import asyncio, sys
from moorage.store import Put
from moorage.store.etcd import EtcdStore

async def main():
    store = await EtcdStore.open([sys.argv[1]], namespace="/crash", timeout=10)
    number = 0
    while True:
        number += 1
        ops = [Put(f"/k/{number:06d}/{i}", f"value-{number}-{i}".encode() * 50) for i in range(20)]
        result = await store.txn([], ops)
        print(result.revision, number, flush=True)

asyncio.run(main())
"""


def write_until_killed(
    path: Path | str,
    acknowledged: int,
    writer: str = WRITER,
    crash: Callable[[], None] = lambda: None,
) -> dict[int, int]:
    """Run the writer, SIGKILL it once it acknowledged that many commits (after `crash`,
    which may kill what it writes to); return the acknowledged commits."""
    child = subprocess.Popen(
        [sys.executable, "-c", writer, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    committed: dict[int, int] = {}
    try:
        for line in child.stdout:
            revision, number = map(int, line.split())
            committed[revision] = number
            if len(committed) >= acknowledged:
                break
        crash()
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


@pytest.mark.etcd
async def test_sigkill_of_writer_and_member_keeps_every_acknowledged_etcd_transaction(
    tmp_path: Path,
) -> None:
    require_etcd()
    with EtcdServer(tmp_path / "etcd") as member:
        committed = write_until_killed(member.endpoint, 150, ETCD_WRITER, crash=member.kill)
        member.start()  # the same member, from its data directory
        store = await EtcdStore.open([member.endpoint], namespace="/crash")
        try:
            kvs, _ = await store.range("/k/")
            written: dict[int, set[int]] = {}  # transaction number -> its keys' mod revisions
            for kv in kvs:
                number, index = map(int, kv.key.split("/")[2:])
                written.setdefault(number, set()).add(kv.mod_revision)
                assert kv.value == f"value-{number}-{index}".encode() * 50
            for revision, number in committed.items():  # every acknowledged one, as acked
                assert written.get(number) == {revision}, f"acknowledged txn {number} is lost"
            # Whole transactions only, none missing before the last (the one in flight at
            # the kill may or may not have been applied).
            assert len(kvs) == 20 * len(written)
            assert sorted(written) == list(range(1, len(written) + 1))
        finally:
            await store.close()
