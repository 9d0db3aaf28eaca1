"""Services operations over the in-memory store: deploy checks, scale, images, stop, rebalance."""

from __future__ import annotations

import pytest

from moorage.model import Forbidden, Node, NotFound, SpecError, parse_specs
from moorage.model.acl import ALLOW_ALL, Authorizer, Level, Rule
from moorage.ops import NoAgents, Services, Volumes
from moorage.testing.state import World

WEB = """
service: web
count: 2
containers: [{name: app, command: [sleep, '60'], memory: 32, cpu: 10}]
"""


def services(world: World) -> Services:
    volumes = Volumes(world.cache, world.writer, world.clock, NoAgents())
    return Services(world.cache, world.writer, world.clock, volumes)


def revision(world: World) -> int:
    return world.cache.revision


async def test_deploy_registers_a_revision_and_a_deployment(world: World) -> None:
    ops = services(world)
    (result,) = await ops.deploy(parse_specs(WEB), ALLOW_ALL)
    assert (result.service, result.revision, result.created, result.count) == ("web", 1, True, 2)
    assert result.deployment is not None and result.deployment in world.cache.deployments
    (again,) = await ops.deploy(parse_specs(WEB), ALLOW_ALL)
    assert (again.revision, again.created, again.deployment) == (1, False, None)
    summary = ops.detail("web").summary
    assert (summary.desired, summary.revision) == (2, 1)


async def test_every_problem_is_named_before_anything_is_written(world: World) -> None:
    ops = services(world)
    specs = parse_specs(
        WEB.replace("memory: 32,", "memory: 32, secrets: {DB: db-url},")
        + "---\n"
        + WEB.replace("web", "api").replace("memory: 32,", "memory: 32, secrets: {K: key},")
    )
    before = revision(world)
    with pytest.raises(SpecError) as caught:
        await ops.deploy(specs, ALLOW_ALL)
    fields = {e.field for e in caught.value.errors}
    assert fields == {"[0].containers[0].secrets.DB", "[1].containers[0].secrets.K"}
    assert revision(world) == before and not world.cache.services


async def test_deploy_needs_write_on_each_service_it_names(world: World) -> None:
    ops = services(world)
    only_api = Authorizer([Rule(resource="service", prefix="api", level=Level.WRITE)])
    with pytest.raises(Forbidden, match="service:web write"):
        await ops.deploy(parse_specs(WEB), only_api)
    assert not world.cache.services


async def test_scale_refuses_two_writers_of_a_single_writer_volume(world: World) -> None:
    ops = services(world)
    spec = (
        WEB.replace("count: 2", "count: 1").replace(
            "memory: 32,", "memory: 32, mounts: [{volume: data, path: /data}],"
        )
        + "volumes: {data: {driver: shared, scope: shared, autoprovision: true}}\n"
    )
    await ops.deploy(parse_specs(spec), ALLOW_ALL)
    assert "web-data" in world.cache.volumes or "data" in world.cache.volumes
    with pytest.raises(SpecError) as caught:
        await ops.scale("web", 2)
    assert caught.value.errors[0].field == "count"
    assert (await ops.scale("web", 0)).desired == 0


async def test_update_images_names_unknown_containers(world: World) -> None:
    ops = services(world)
    await ops.deploy(
        parse_specs(WEB.replace("command: [sleep, '60']", "image: busybox")), ALLOW_ALL
    )
    with pytest.raises(SpecError) as caught:
        await ops.update_images("web", {"nope": "busybox:2"})
    assert caught.value.errors[0].field == "images.nope"
    result = await ops.update_images("web", {"app": "busybox:2"})
    assert result.revision == 2 and result.created
    assert world.cache.taskdefs[("web", 2)].containers[0].image == "busybox:2"


async def test_stop_and_missing_services(world: World) -> None:
    ops = services(world)
    with pytest.raises(NotFound):
        await ops.stop("web")
    await ops.deploy(parse_specs(WEB), ALLOW_ALL)
    stopped = await ops.stop("web")
    assert (stopped.status, stopped.desired, stopped.deployment) == ("stopped", 0, "-")


async def test_rebalance_flags_tasks_in_one_guarded_plan(world: World) -> None:
    from moorage.controllers.reconcile import reconcile
    from moorage.model import DeploymentStatus, TaskStatus
    from moorage.state import kinds

    ops = services(world)
    await world.writer.commit([], [kinds.NODE.put(Node(name="n1", cpu=1024, memory=4096))])
    spread = WEB.replace("count: 2", "count: 4") + "placement: {strategy: spread}\n"
    (result,) = await ops.deploy(parse_specs(spread), ALLOW_ALL)
    assert result.deployment is not None
    done = world.cache.deployments[result.deployment].model_copy(
        update={"status": DeploymentStatus.SUCCESSFUL}
    )
    # The four tasks are placed on n1 (the only node) and run; then a second node joins.
    plan = reconcile(world.cache.snapshot(), world.clock(), seed=1)
    running = [
        t.model_copy(update={"status": TaskStatus.RUNNING, "healthy_since": 1.0})
        for t, _ in plan.writes.values()
    ]
    assert len(running) == 4 and {t.node for t in running} == {"n1"}
    await world.writer.commit(
        [],
        [
            kinds.DEPLOYMENT.put(done),
            *(kinds.TASK.put(t) for t in running),
            kinds.NODE.put(Node(name="n2", cpu=1024, memory=4096)),
        ],
    )
    before = world.cache.revision
    moved = await ops.rebalance("web")
    assert moved.moves and {m.from_node for m in moved.moves} == {"n1"}
    assert moved.target != moved.current
    flagged = sorted(t.id for t in world.cache.tasks.values() if t.migrate)
    assert flagged == sorted(m.task for m in moved.moves)
    assert world.cache.events[-1].type == "service.rebalance"
    assert world.cache.revision == before + 1  # the flags and the event: one transaction
