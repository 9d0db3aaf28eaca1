"""The volume grant rules: claim, renew, release and delete, with the clock as an argument."""

from __future__ import annotations

import pytest

from moorage.model import Conflict, Node, NodeStatus, SpecError, Unavailable, validate_body
from moorage.model.volume import (
    GRACE,
    Access,
    GrantBody,
    Volume,
    VolumeCreate,
    check_deletable,
    claim,
    holders,
    mark_deleting,
    new_volume,
    release,
    removal_node,
    renew,
    unmark_deleting,
)


def shared(access: Access = "single-writer") -> Volume:
    return new_volume(VolumeCreate(name="data", driver="shared", access=access), now=0.0)


def test_a_first_claim_gets_epoch_1_and_a_lease() -> None:
    volume = claim(shared(), "n1", "t1", now=100.0, ttl=10.0)
    assert volume.epoch == 1 and volume.state == "attached"
    [attachment] = volume.attachments
    assert (attachment.node, attachment.task, attachment.epoch) == ("n1", "t1", 1)
    assert attachment.granted_at == 100.0 and attachment.lease_expires == 110.0


def test_a_single_writer_volume_refuses_a_second_holder_while_the_lease_lives() -> None:
    volume = claim(shared(), "n1", "t1", now=100.0, ttl=10.0)
    for now in (105.0, 110.0, 110.0 + GRACE):  # the lease, then the grace period
        with pytest.raises(Conflict, match=r"held by task t1 on node n1 \(epoch 1\)"):
            claim(volume, "n2", "t2", now=now)


def test_after_lease_and_grace_another_node_gets_the_next_epoch() -> None:
    volume = claim(shared(), "n1", "t1", now=100.0, ttl=10.0)
    taken = claim(volume, "n2", "t2", now=110.0 + GRACE + 0.01, ttl=10.0)
    assert taken.epoch == 2
    assert [(a.node, a.epoch) for a in taken.attachments] == [("n2", 2)]
    # the old holder's renewal is refused: its claim was lost
    with pytest.raises(Conflict, match=r"epoch 1 .* was lost .*now held by task t2 on node n2"):
        renew(taken, "n1", "t1", 1, now=113.0)


def test_the_same_holder_may_claim_again_and_gets_a_new_epoch() -> None:
    volume = claim(shared(), "n1", "t1", now=100.0)
    again = claim(volume, "n1", "t1", now=101.0)
    assert again.epoch == 2 and [a.epoch for a in again.attachments] == [2]


def test_read_only_many_grants_every_claim_and_still_bumps_the_epoch() -> None:
    volume = claim(shared("read-only-many"), "n1", "t1", now=100.0)
    volume = claim(volume, "n2", "t2", now=101.0)
    assert volume.epoch == 2
    assert {(a.node, a.epoch) for a in volume.attachments} == {("n1", 1), ("n2", 2)}


def test_renew_extends_the_lease_only_for_the_live_epoch() -> None:
    volume = claim(shared(), "n1", "t1", now=100.0, ttl=10.0)
    renewed = renew(volume, "n1", "t1", 1, now=108.0, ttl=10.0)
    assert renewed.attachments[0].lease_expires == 118.0 and renewed.epoch == 1
    with pytest.raises(Conflict, match="was lost"):
        renew(volume, "n1", "t1", 2, now=108.0)  # a wrong epoch
    with pytest.raises(Conflict, match="was lost"):
        renew(volume, "n2", "t1", 1, now=108.0)  # the wrong node
    with pytest.raises(Conflict, match="was lost"):
        renew(volume, "n1", "t1", 1, now=110.0 + GRACE + 0.01)  # expired, grace over


def test_release_drops_the_attachment_and_a_stale_epoch_changes_nothing() -> None:
    volume = claim(shared(), "n1", "t1", now=100.0)
    stale, found = release(volume, "n1", "t1", 7, now=101.0)
    assert not found and stale.attachments == volume.attachments
    released, found = release(volume, "n1", "t1", 1, now=101.0)
    assert found and released.attachments == [] and released.state == "detached"
    assert released.epoch == 1  # the epoch never goes back


def test_delete_is_refused_while_attached_naming_the_holder() -> None:
    volume = claim(shared(), "n1", "t1", now=100.0, ttl=10.0)
    with pytest.raises(Conflict, match=r"attached to task t1 on node n1"):
        check_deletable(volume, now=105.0)
    check_deletable(volume, now=110.0 + GRACE + 0.01)  # the lease ran out: nothing holds it
    assert holders(volume, 200.0) == []


def test_rm_marks_the_volume_deleting_and_no_claim_gets_past_it() -> None:
    held = claim(shared(), "n1", "t1", now=100.0, ttl=10.0)
    with pytest.raises(Conflict, match="attached to task t1 on node n1"):
        mark_deleting(held, now=105.0)
    marked = mark_deleting(held, now=200.0)  # the lease ran out long ago
    assert (marked.state, marked.attachments, marked.epoch) == ("deleting", [], 1)
    with pytest.raises(Conflict, match="being deleted"):
        claim(marked, "n2", "t2", now=201.0)
    assert mark_deleting(marked, now=300.0) == marked  # an interrupted rm is finished later
    back = unmark_deleting(marked)
    assert (back.state, claim(back, "n2", "t2", now=301.0).epoch) == ("detached", 2)
    assert unmark_deleting(held) is held


def node(name: str, status: NodeStatus = NodeStatus.READY, addr: bool = True) -> Node:
    agent = f"{name}:7071" if addr else ""
    return Node(name=name, cpu=1024, memory=1024, agent_addr=agent, status=status)


def test_the_data_of_a_removed_volume_is_deleted_by_its_node_or_any_reachable_one() -> None:
    nodes = [node("n3"), node("n2", NodeStatus.DOWN), node("n1", addr=False)]
    assert removal_node(shared(), nodes) == "n3"  # every node sees the shared root
    with pytest.raises(Unavailable, match="every agent is down"):
        removal_node(shared(), nodes[1:])
    local = new_volume(VolumeCreate(name="db", driver="local", node="n3"), now=0.0)
    assert removal_node(local, nodes) == "n3"
    on_down = local.model_copy(update={"node": "n2"})
    with pytest.raises(Unavailable, match=r"node n2 of local volume db is down.*kept as it was"):
        removal_node(on_down, nodes)
    never_used = Volume(name="pg", driver="local", autoprovision=True)
    assert removal_node(never_used, []) is None  # no node yet: no data anywhere


def test_a_local_volume_is_claimed_only_on_its_node() -> None:
    local = new_volume(VolumeCreate(name="db", driver="local", node="n1", size=1024), now=0.0)
    with pytest.raises(Conflict, match="local to node n1"):
        claim(local, "n2", "t", now=1.0)
    assert claim(local, "n1", "t", now=1.0).epoch == 1


def test_a_volume_being_deleted_cannot_be_claimed() -> None:
    volume = shared().model_copy(update={"state": "deleting"})
    with pytest.raises(Conflict, match="being deleted"):
        claim(volume, "n1", "t1", now=1.0)


def test_create_bodies_name_the_bad_field() -> None:
    with pytest.raises(SpecError) as local:
        validate_body(VolumeCreate, {"name": "db", "driver": "local"})
    assert [e.field for e in local.value.errors] == ["node"]
    with pytest.raises(SpecError) as bad:
        validate_body(
            VolumeCreate, {"name": "Bad_Name", "driver": "nfs", "size": 0, "access": "many"}
        )
    assert {e.field for e in bad.value.errors} == {"name", "driver", "size", "access"}
    with pytest.raises(SpecError) as node:
        validate_body(VolumeCreate, {"name": "x", "driver": "shared", "node": "n1"})
    assert [e.field for e in node.value.errors] == ["node"]
    body = validate_body(VolumeCreate, {"name": "x", "driver": "shared"})
    assert (body.scope, body.access, body.autoprovision) == ("shared", "single-writer", False)
    with pytest.raises(SpecError) as task:
        validate_body(VolumeCreate, {"name": "x", "driver": "shared", "scope": "task"})
    [error] = task.value.errors
    assert error.field == "scope" and "declare it in the spec" in error.message


def test_grant_bodies_keep_the_lease_at_least_a_second() -> None:
    with pytest.raises(SpecError) as short:
        validate_body(GrantBody, {"node": "n1", "task": "t", "lease_ttl": 0.5})
    assert [e.field for e in short.value.errors] == ["lease_ttl"]
    assert validate_body(GrantBody, {"node": "n1", "task": "t"}).lease_ttl == 10.0


def test_an_autoprovisioned_local_volume_is_bound_to_the_node_of_its_first_claim() -> None:
    from moorage.model import Conflict
    from moorage.model.volume import Volume, claim, release

    fresh = Volume(name="pg", driver="local", autoprovision=True)
    held = claim(fresh, "n2", "t1", now=100.0)
    assert held.node == "n2"
    free, _ = release(held, "n2", "t1", held.epoch, now=101.0)
    assert free.node == "n2"  # released, still there
    with pytest.raises(Conflict, match="local to node n2"):
        claim(free, "n1", "t2", now=102.0)
