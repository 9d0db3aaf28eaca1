"""The reconciler's pure decisions: counts, restarts, revisions, placement reasons."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from moorage.controllers.plan import Plan
from moorage.controllers.reconcile import reconcile
from moorage.model import (
    Container,
    Desired,
    Node,
    PortSpec,
    RestartPolicy,
    Service,
    Task,
    TaskDefinition,
    TaskStatus,
)
from moorage.model.cluster import ClusterSnapshot

NOW = 1_000_000.0


def taskdef(revision: int = 1, memory: int = 64) -> TaskDefinition:
    app = Container(
        name="app", command=["x"], cpu=100, memory=memory, ports=[PortSpec(name="http")]
    )
    return TaskDefinition(family="web", revision=revision, containers=[app])


def make_task(**fields: object) -> Task:
    """A task of web:1 unless the fields say otherwise."""
    return Task.model_validate({"service": "web", "family": "web", "revision": 1, **fields})


def service(count: int = 3, revision: int = 1, **update: object) -> Service:
    return Service(name="web", family="web", revision=revision, count=count).model_copy(
        update=update
    )


def node(name: str = "n1", memory: int = 4096) -> Node:
    return Node(name=name, cpu=4096, memory=memory)


def snap(
    svc: Service,
    tasks: list[Task],
    nodes: list[Node] | None = None,
    defs: list[TaskDefinition] | None = None,
) -> ClusterSnapshot:
    defs = defs or [taskdef(svc.revision)]
    return ClusterSnapshot(
        services={svc.name: svc},
        taskdefs={(d.family, d.revision): d for d in defs},
        tasks={t.id: t for t in tasks},
        nodes={n.name: n for n in (nodes if nodes is not None else [node()])},
    )


def apply(snapshot: ClusterSnapshot, plan: Plan) -> ClusterSnapshot:
    tasks = dict(snapshot.tasks)
    for new, _old in plan.writes.values():
        tasks[new.id] = new
    return ClusterSnapshot(snapshot.services, snapshot.taskdefs, tasks, snapshot.nodes)


def run_agent(snapshot: ClusterSnapshot) -> ClusterSnapshot:
    """What a well-behaved agent reports: assigned → running, desired stop → stopped."""
    tasks = {}
    for task in snapshot.tasks.values():
        if task.desired == Desired.STOP and not task.status.terminal:
            task = task.model_copy(update={"status": TaskStatus.STOPPED})
        elif (
            task.desired == Desired.RUN and task.node and task.run_generation < task.generation
        ) or task.status == TaskStatus.ASSIGNED:
            task = task.model_copy(
                update={"status": TaskStatus.RUNNING, "run_generation": task.generation}
            )
        tasks[task.id] = task
    return ClusterSnapshot(snapshot.services, snapshot.taskdefs, tasks, snapshot.nodes)


def converge(snapshot: ClusterSnapshot, rounds: int = 10) -> ClusterSnapshot:
    for i in range(rounds):
        plan = reconcile(snapshot, NOW + i, seed=i)
        snapshot = run_agent(apply(snapshot, plan))
        if plan.empty:
            return snapshot
    raise AssertionError("did not converge")


def live(snapshot: ClusterSnapshot) -> list[Task]:
    return [t for t in snapshot.tasks.values() if t.live]


def test_creates_and_places_missing_tasks_with_distinct_ports() -> None:
    plan = reconcile(snap(service(3), []), NOW, seed=1)
    created = [new for new, old in plan.writes.values() if old is None]
    assert len(created) == 3
    assert {t.node for t in created} == {"n1"}
    assert all(t.status == TaskStatus.ASSIGNED and t.memory == 64 for t in created)
    assert len({t.ports["http"] for t in created}) == 3


def test_plan_is_deterministic_for_a_seed() -> None:
    a = reconcile(snap(service(3), []), NOW, seed=7)
    b = reconcile(snap(service(3), []), NOW, seed=7)
    assert [w[0] for w in a.writes.values()] == [w[0] for w in b.writes.values()]


def test_scale_down_stops_pending_before_running_then_newest() -> None:
    running = [
        make_task(
            id=f"r{i}",
            node="n1",
            status=TaskStatus.RUNNING,
            created_at=i,
        )
        for i in range(3)
    ]
    pending = Task(
        id="p", service="web", family="web", revision=1, status=TaskStatus.PENDING, created_at=10
    )
    plan = reconcile(snap(service(2), [*running, pending]), NOW, seed=0)
    stopped = {new.id: new for new, _ in plan.writes.values() if new.desired == Desired.STOP}
    assert set(stopped) == {"p", "r2"}
    assert stopped["p"].status == TaskStatus.STOPPED  # nothing runs it: stopped at once
    assert stopped["r2"].status == TaskStatus.RUNNING  # the agent stops it and reports


def test_first_restart_is_immediate_then_exponential_then_failed_and_replaced() -> None:
    svc = service(1, restart=RestartPolicy(attempts=2, interval=300, delay=0))
    task = make_task(
        id="t",
        node="n1",
        status=TaskStatus.EXITED,
        exit_code=137,
        generation=0,
        run_generation=0,
    )
    plan = reconcile(snap(svc, [task]), NOW, seed=0)
    first = plan.writes["t"][0]
    assert (first.generation, first.restarts, first.not_before) == (1, 1, NOW)
    assert [e.type for e in plan.events] == ["task.restarted"]
    # The agent ran generation 1 and it exited again.
    again = first.model_copy(update={"run_generation": 1, "status": TaskStatus.EXITED})
    second = reconcile(snap(svc, [again]), NOW + 1, seed=0).writes["t"][0]
    assert (second.generation, second.restarts, second.not_before) == (2, 2, NOW + 1 + 1.0)
    exhausted = second.model_copy(update={"run_generation": 2, "status": TaskStatus.EXITED})
    plan = reconcile(snap(svc, [exhausted]), NOW + 2, seed=0)
    failed = plan.writes["t"][0]
    assert failed.desired == Desired.STOP and failed.status == TaskStatus.FAILED
    replacements = [new for new, old in plan.writes.values() if old is None]
    assert len(replacements) == 1 and replacements[0].node == "n1"
    assert "task.failed" in [e.type for e in plan.events]


def test_no_second_restart_while_one_is_pending() -> None:
    task = make_task(
        id="t",
        node="n1",
        status=TaskStatus.EXITED,
        generation=1,
        run_generation=0,
        restarts=1,
    )
    assert reconcile(snap(service(1), [task]), NOW, seed=0).empty


def test_restart_window_resets_after_interval() -> None:
    svc = service(1, restart=RestartPolicy(attempts=1, interval=60))
    task = make_task(
        id="t",
        node="n1",
        status=TaskStatus.EXITED,
        generation=1,
        run_generation=1,
        restarts=1,
        restarts_in_window=1,
        restart_window_start=NOW - 61,
    )
    restarted = reconcile(snap(svc, [task]), NOW, seed=0).writes["t"][0]
    assert (
        restarted.generation == 2
        and restarted.restarts_in_window == 1
        and restarted.restart_window_start == NOW
    )


def test_new_revision_replaces_old_tasks() -> None:
    old = [
        make_task(
            id=f"o{i}",
            node="n1",
            status=TaskStatus.RUNNING,
            cpu=100,
            memory=64,
        )
        for i in range(2)
    ]
    result = converge(snap(service(2, revision=2), old, defs=[taskdef(1), taskdef(2)]))
    assert sorted(t.revision for t in live(result)) == [2, 2]
    assert all(result.tasks[f"o{i}"].desired == Desired.STOP for i in range(2))


def test_stopped_service_stops_everything() -> None:
    tasks = [
        make_task(
            id=f"t{i}",
            node="n1",
            status=TaskStatus.RUNNING,
        )
        for i in range(3)
    ]
    result = converge(snap(service(3, status="stopped"), tasks))
    assert live(result) == []


def test_unplaceable_task_reason_and_a_single_event() -> None:
    snapshot = snap(service(1), [], nodes=[node(memory=2048)], defs=[taskdef(memory=4096)])
    plan = reconcile(snapshot, NOW, seed=0)
    (task,) = [new for new, _ in plan.writes.values()]
    assert task.status == TaskStatus.PENDING and task.node is None
    assert task.message == "no node has 4096 MiB of free memory"
    assert [e.type for e in plan.events] == ["task.unplaced"]
    assert reconcile(apply(snapshot, plan), NOW + 1, seed=1).empty


def test_dead_tasks_while_wanted_are_retired_and_replaced() -> None:
    lost = Task(
        id="l", service="web", family="web", revision=1, node="n1", status=TaskStatus.STOPPED
    )
    result = converge(snap(service(1), [lost]))
    assert result.tasks["l"].desired == Desired.STOP
    assert len(live(result)) == 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 12), st.sets(st.integers(0, 11))), min_size=1, max_size=6))
def test_converges_to_exact_count_under_scaling_and_kills(
    steps: list[tuple[int, set[int]]],
) -> None:
    snapshot = snap(service(0), [], nodes=[node("n1"), node("n2")])
    for count, kills in steps:
        snapshot = ClusterSnapshot(
            {"web": service(count)}, snapshot.taskdefs, snapshot.tasks, snapshot.nodes
        )
        snapshot = converge(snapshot, rounds=20)
        assert len(live(snapshot)) == count
        assert all(t.status == TaskStatus.RUNNING for t in live(snapshot))
        ids = sorted(t.id for t in live(snapshot))
        tasks = dict(snapshot.tasks)
        for index in kills:
            if index < len(ids):
                tasks[ids[index]] = tasks[ids[index]].model_copy(
                    update={"status": TaskStatus.EXITED}
                )
        snapshot = ClusterSnapshot(snapshot.services, snapshot.taskdefs, tasks, snapshot.nodes)
    for name in ("n1", "n2"):
        used = sum(
            t.memory for t in snapshot.tasks.values() if t.node == name and not t.status.terminal
        )
        assert used <= 4096


def test_replacements_of_tasks_that_keep_failing_back_off() -> None:
    svc = service(count=1)

    def failed(number: int) -> Task:
        return make_task(
            id=f"web-f{number}",
            node="n1",
            desired=Desired.STOP,
            status=TaskStatus.FAILED,
            finished_at=NOW - 10,
            updated_at=NOW - 10,
        )

    def replacement(history: list[Task]) -> Task:
        plan = reconcile(snap(svc, history), NOW, seed=1)
        (new,) = [n for n, old in plan.writes.values() if old is None]
        return new

    assert replacement([failed(1)]).not_before == 0.0  # the first replacement is immediate
    assert replacement([failed(1), failed(2)]).not_before == NOW + 1
    assert replacement([failed(i) for i in range(4)]).not_before == NOW + 4
    assert replacement([failed(i) for i in range(12)]).not_before == NOW + 60  # capped
    long_ago = [f.model_copy(update={"finished_at": NOW - 3600}) for f in map(failed, range(5))]
    assert replacement(long_ago).not_before == 0.0  # failures outside the window do not count


def test_tasks_on_a_down_node_are_lost_and_replaced_elsewhere() -> None:
    from moorage.model import NodeStatus

    down = Node(name="n1", cpu=4096, memory=4096, status=NodeStatus.DOWN)
    up = Node(name="n2", cpu=4096, memory=4096)
    task = make_task(id="t", node="n1", status=TaskStatus.RUNNING, run_generation=0)
    plan = reconcile(snap(service(1), [task], nodes=[down, up]), NOW, seed=1)
    lost = plan.writes["t"][0]
    assert (lost.status, lost.desired, lost.message) == (
        TaskStatus.LOST,
        Desired.STOP,
        "node n1 is down",
    )
    (replacement,) = [new for new, old in plan.writes.values() if old is None]
    assert replacement.node == "n2"
    assert "task.lost" in [e.type for e in plan.events]


def test_draining_replaces_before_stopping_and_the_deadline_stops_the_rest() -> None:
    from moorage.model.node import drained

    draining = drained(Node(name="n1", cpu=4096, memory=4096), NOW + 60)
    other = Node(name="n2", cpu=4096, memory=4096)
    running = [
        make_task(id=f"t{i}", node="n1", status=TaskStatus.RUNNING, run_generation=0)
        for i in range(2)
    ]
    plan = reconcile(snap(service(2), running, nodes=[draining, other]), NOW, seed=1)
    created = [new for new, old in plan.writes.values() if old is None]
    assert len(created) == 2 and {t.node for t in created} == {"n2"}
    assert not [
        t for t, old in plan.writes.values() if old is not None and t.desired == Desired.STOP
    ]
    # Past the deadline, what is left goes even though nothing replaced it yet.
    late = reconcile(snap(service(2), running, nodes=[draining, other]), NOW + 61, seed=1)
    stopped = [
        t for t, old in late.writes.values() if old is not None and t.desired == Desired.STOP
    ]
    assert {t.id for t in stopped} == {"t0", "t1"}
    assert all("drain deadline passed" in t.message for t in stopped)


def volume_taskdef(driver: str, volume: str = "data") -> TaskDefinition:
    from moorage.model import Mount, VolumeSpec

    app = Container(name="app", command=["x"], mounts=[Mount(volume=volume, path="/data")])
    spec = VolumeSpec(driver=driver, scope="shared")  # type: ignore[arg-type]
    return TaskDefinition(family="web", revision=1, containers=[app], volumes={volume: spec})


def test_a_task_on_a_local_volume_is_placed_on_the_volume_node_and_waits_while_it_is_down() -> None:
    from dataclasses import replace

    from moorage.model import NodeStatus
    from moorage.model.volume import Volume

    nodes = [node("n1"), node("n2"), node("n3")]
    base = snap(service(count=1), [], nodes, [volume_taskdef("local")])
    bound = Volume(name="data", driver="local", node="n2")
    for seed in range(8):  # whatever the ranking, the volume's node
        s = replace(base, volumes={"data": bound})
        placed = [t for t, _ in reconcile(s, NOW, seed=seed).writes.values()]
        assert [t.node for t in placed] == ["n2"]
    # not bound yet (autoprovisioned, never claimed): any node will do
    free = reconcile(
        replace(base, volumes={"data": bound.model_copy(update={"node": None})}), NOW, 0
    )
    assert next(t.node for t, _ in free.writes.values()) in {"n1", "n2", "n3"}
    # its node is down: the task stays pending and says why
    down = [
        n if n.name != "n2" else n.model_copy(update={"status": NodeStatus.DOWN}) for n in nodes
    ]
    s = replace(base, nodes={n.name: n for n in down}, volumes={"data": bound})
    (task,) = [t for t, _ in reconcile(s, NOW, seed=0).writes.values()]
    assert task.node is None
    assert task.message == (
        "volume data is local to node n2, which is down: the task waits for that node"
    )


def test_a_task_on_a_shared_volume_goes_anywhere() -> None:
    from dataclasses import replace

    from moorage.model.volume import Volume

    nodes = [node("n1"), node("n2")]
    base = snap(service(count=1), [], nodes, [volume_taskdef("shared")])
    s = replace(base, volumes={"data": Volume(name="data", driver="shared")})
    chosen = {
        next(iter(reconcile(s, NOW, seed=seed).writes.values()))[0].node for seed in range(16)
    }
    assert chosen <= {"n1", "n2"} and None not in chosen


def test_a_drain_stops_a_single_writer_task_at_once_and_replaces_it_elsewhere() -> None:
    """Replace-first cannot work with one writer: the replacement would wait on the volume
    until the drain deadline. The task stops at once; its replacement goes elsewhere."""
    from dataclasses import replace

    from moorage.model.node import drained
    from moorage.model.volume import Volume

    draining = drained(node("n1"), NOW + 3600)
    running = make_task(
        id="web-1", node="n1", status=TaskStatus.RUNNING, run_generation=0, created_at=NOW - 60
    )
    s = snap(service(count=1), [running], [draining, node("n2")], [volume_taskdef("shared")])
    s = replace(s, volumes={"data": Volume(name="data", driver="shared")})
    writes = {t.id: t for t, _ in reconcile(s, NOW, seed=1).writes.values()}
    assert writes["web-1"].desired == Desired.STOP
    assert "stop-first: single-writer volume data" in writes["web-1"].message
    (replacement,) = [t for i, t in writes.items() if i != "web-1"]
    assert replacement.node == "n2" and replacement.desired == Desired.RUN
    # without a single-writer volume the healthy task stays until its replacement serves
    plain = snap(service(count=1), [running], [draining, node("n2")])
    kept = {t.id: t for t, _ in reconcile(plain, NOW, seed=1).writes.values()}
    assert "web-1" not in kept or kept["web-1"].desired == Desired.RUN
