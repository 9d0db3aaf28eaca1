"""The pure choices around snapshots: which node takes one, what it pauses, what a restore
creates."""

from __future__ import annotations

import pytest

from moorage.model import Conflict, Node, NodeStatus, SpecError, Unavailable, validate_body
from moorage.model.snapshot import (
    RestoreRequest,
    Snapshot,
    archive_node,
    new_snapshot_id,
    plan_snapshot,
    restore_volume,
)
from moorage.model.volume import Volume, VolumeCreate, claim, new_volume

NOW = 1000.0


def node(name: str, status: NodeStatus = NodeStatus.READY) -> Node:
    return Node(name=name, cpu=1024, memory=1024, agent_addr=f"{name}:7071", status=status)


NODES = [node("n2"), node("n1"), node("n3", NodeStatus.DOWN)]


def volume(driver: str = "shared", **extra: object) -> Volume:
    body = {"name": "data", "driver": driver, **extra}
    return new_volume(VolumeCreate.model_validate(body), NOW)


def snapshot(driver: str = "shared", node_name: str = "n1") -> Snapshot:
    return Snapshot(
        id=new_snapshot_id(),
        volume="data",
        driver=driver,  # type: ignore[arg-type]
        node=node_name,
        size=10,
        volume_size=64,
        consistency="detached",
        created_at=NOW,
    )


def test_a_held_volume_is_snapshotted_where_its_writer_runs() -> None:
    held = claim(volume(), "n2", "web-1", NOW)
    plan = plan_snapshot(held, NODES, NOW + 1)
    assert (plan.node, plan.writer, plan.claim, plan.consistency) == ("n2", "web-1", False, None)


def test_a_detached_shared_volume_goes_to_the_first_ready_node_under_a_claim() -> None:
    plan = plan_snapshot(volume(), NODES, NOW)
    assert (plan.node, plan.writer, plan.claim, plan.consistency) == ("n1", None, True, "detached")


def test_an_expired_holder_no_longer_counts_as_a_writer() -> None:
    held = claim(volume(), "n2", "web-1", NOW, ttl=5)
    assert plan_snapshot(held, NODES, NOW + 60).writer is None


def test_a_local_volume_is_snapshotted_on_its_node() -> None:
    plan = plan_snapshot(volume("local", node="n2"), NODES, NOW)
    assert (plan.node, plan.claim) == ("n2", True)
    with pytest.raises(Unavailable, match="n3"):
        plan_snapshot(volume("local", node="n3"), NODES, NOW)


def test_readers_of_a_read_only_many_volume_are_not_paused() -> None:
    read = claim(volume(access="read-only-many"), "n2", "reader-1", NOW)
    plan = plan_snapshot(read, NODES, NOW)
    assert (plan.node, plan.writer, plan.claim, plan.consistency) == (
        "n2",
        None,
        False,
        "read-only",
    )


def test_a_writer_on_a_down_node_cannot_be_paused() -> None:
    held = claim(volume(), "n3", "web-1", NOW)
    with pytest.raises(Unavailable, match="cannot be paused"):
        plan_snapshot(held, NODES, NOW)


def test_a_volume_being_restored_is_not_snapshotted() -> None:
    held = claim(volume(), "n1", "restore-snap-0123456789ab", NOW)
    with pytest.raises(Conflict, match="restored"):
        plan_snapshot(held, NODES, NOW)


def test_no_ready_node() -> None:
    with pytest.raises(Unavailable):
        plan_snapshot(volume(), [node("n3", NodeStatus.DOWN)], NOW)


def test_the_archive_is_read_on_its_node_or_any_node_for_shared() -> None:
    assert archive_node(snapshot("local", "n2"), NODES) == "n2"
    assert archive_node(snapshot("shared", "n3"), NODES) == "n1"
    with pytest.raises(Unavailable, match="n3"):
        archive_node(snapshot("local", "n3"), NODES)


def test_a_restore_inherits_driver_size_access_and_node() -> None:
    local = restore_volume(snapshot("local", "n2"), RestoreRequest(name="copy"))
    assert local == {
        "name": "copy",
        "driver": "local",
        "node": "n2",
        "size": 64,
        "access": "single-writer",
    }
    shared = restore_volume(snapshot(), RestoreRequest(name="copy", size=128))
    assert "node" not in shared and shared["size"] == 128
    moved = restore_volume(snapshot(), RestoreRequest(name="copy", driver="local", node="n1"))
    assert (moved["driver"], moved["node"]) == ("local", "n1")


def test_a_restore_naming_a_node_for_a_shared_volume_is_refused_on_the_node_field() -> None:
    body = restore_volume(snapshot(), RestoreRequest(name="copy", node="n1"))
    with pytest.raises(SpecError) as caught:
        validate_body(VolumeCreate, body)
    assert [e.field for e in caught.value.errors] == ["node"]


def test_snapshot_ids_are_unique_and_well_formed() -> None:
    ids = {new_snapshot_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(i.startswith("snap-") and len(i) == 17 for i in ids)
