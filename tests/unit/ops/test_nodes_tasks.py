"""Node and task operations: registration, heartbeats, drains, agents' reports, TTL checks."""

from __future__ import annotations

import pytest

from moorage.controllers.liveness import Heartbeats
from moorage.model import (
    Eligibility,
    Health,
    Node,
    NodeStatus,
    NotFound,
    SpecError,
    Task,
    TaskStatus,
    parse_specs,
)
from moorage.model.messages import TaskReport
from moorage.model.views import DrainBody, TtlUpdate
from moorage.ops import Nodes, Tasks
from moorage.ops.deploy import Deployer
from moorage.state import kinds
from moorage.testing.state import World


def nodes(world: World) -> Nodes:
    return Nodes(world.cache, world.writer, world.clock, Heartbeats())


async def test_register_checks_the_name_and_keeps_a_drain(world: World) -> None:
    ops = nodes(world)
    with pytest.raises(SpecError) as caught:
        await ops.register("n1", Node(name="n2", cpu=1, memory=1))
    assert caught.value.errors[0].field == "name" and not world.cache.nodes
    await ops.register("n1", Node(name="n1", cpu=1024, memory=512))
    drained = await ops.drain("n1", DrainBody(deadline=600, spot_notice=True))
    assert drained.eligibility == Eligibility.INELIGIBLE
    assert drained.drain_deadline == world.clock() + 120  # a spot notice: two minutes
    again = await ops.register("n1", Node(name="n1", cpu=1024, memory=512))
    assert again.eligibility == Eligibility.INELIGIBLE  # re-registering ends no drain
    assert "still draining" in world.cache.events[-1].message
    assert (await ops.eligible("n1")).eligibility == Eligibility.ELIGIBLE


async def test_heartbeats_stay_in_memory_and_bring_a_down_node_back(world: World) -> None:
    ops = nodes(world)
    with pytest.raises(NotFound):
        await ops.heartbeat("n1")
    await ops.register("n1", Node(name="n1", cpu=1, memory=1))
    before = world.cache.revision
    world.clock.advance(10)
    answer = await ops.heartbeat("n1")
    assert (answer.interval, answer.ttl) == (1.5, 5.0)
    assert world.cache.revision == before  # no store write for a beat
    assert ops.all()[0].heartbeat_at == world.clock()  # the list shows the last beat
    world.clock.advance(61)
    await ops.heartbeat("n1")
    assert world.cache.nodes["n1"].heartbeat_at == world.clock()  # the coarse mark
    down = world.cache.nodes["n1"].model_copy(update={"status": NodeStatus.DOWN})
    await world.writer.commit([], [kinds.NODE.put(down)])
    await ops.heartbeat("n1")
    assert world.cache.nodes["n1"].status == NodeStatus.READY
    assert world.cache.events[-1].type == "node.up"


SPEC = """
service: web
containers:
  - {name: app, command: [sleep, '60'], memory: 32, health: {ttl: 30s}}
"""


async def running_task(world: World) -> Task:
    await Deployer(world.cache, world.writer, world.clock).deploy(parse_specs(SPEC)[0])
    task = Task(
        id="web-1",
        service="web",
        family="web",
        revision=1,
        node="n1",
        created_at=1.0,
        status=TaskStatus.ASSIGNED,
        generation=1,
        updated_at=1.0,
    )
    await world.writer.commit([], [kinds.TASK.put(task)])
    return task


async def test_reports_move_a_task_and_stale_ones_are_ignored(world: World) -> None:
    ops = Tasks(world.cache, world.writer, world.clock)
    await running_task(world)
    task = await ops.report("web-1", TaskReport(status=TaskStatus.RUNNING, run_generation=1))
    assert task.status == TaskStatus.RUNNING
    assert world.cache.events[-1].type == "task.started"
    stale = TaskReport(status=TaskStatus.EXITED, exit_code=1, run_generation=0)
    assert (await ops.report("web-1", stale)).status == TaskStatus.RUNNING
    with pytest.raises(NotFound):
        await ops.report("web-2", stale)


async def test_ttl_checks_only_for_containers_that_have_one(world: World) -> None:
    ops = Tasks(world.cache, world.writer, world.clock)
    await running_task(world)
    with pytest.raises(SpecError) as caught:
        await ops.update_ttl("web-1", "sidecar", TtlUpdate(status=Health.PASSING))
    assert caught.value.errors[0].field == "container"
    task = await ops.update_ttl("web-1", "app", TtlUpdate(status=Health.WARNING, output="slow"))
    assert (task.ttl["app"].status, task.ttl["app"].output) == (Health.WARNING, "slow")


async def test_exec_needs_a_running_task(world: World) -> None:
    from moorage.model import Unavailable

    ops = Tasks(world.cache, world.writer, world.clock)
    await running_task(world)
    with pytest.raises(Unavailable, match="not running"):
        ops.running("web-1")
    with pytest.raises(Unavailable, match="no running task"):
        ops.running("web")
    await ops.report("web-1", TaskReport(status=TaskStatus.RUNNING, run_generation=1))
    assert ops.running("web").id == "web-1"
    with pytest.raises(NotFound):
        ops.running("nothing")
