"""Deployments as the reconciler drives them, against a simulated agent and clock."""

from __future__ import annotations

from dataclasses import replace

from moorage.controllers.plan import Plan
from moorage.controllers.reconcile import reconcile
from moorage.model import (
    CheckState,
    Container,
    Deployment,
    DeploymentStatus,
    Desired,
    Health,
    Node,
    Service,
    Task,
    TaskDefinition,
    TaskStatus,
)
from moorage.model.cluster import ClusterSnapshot

T0 = 1_000_000.0


def taskdef(revision: int) -> TaskDefinition:
    return TaskDefinition(
        family="web", revision=revision, containers=[Container(name="app", command=["x"])]
    )


def deployment(to: int, frm: int | None, count: int = 3, **policy: object) -> Deployment:
    return Deployment.model_validate(
        {
            "id": f"web-{to}-d",
            "service": "web",
            "family": "web",
            "from_revision": frm,
            "to_revision": to,
            "count": count,
            "min_healthy_time": 5.0,
            "progress_deadline": 120.0,
            "created_at": T0,
            "progress_at": T0,
            **policy,
        }
    )


class Cluster:
    """The store as the reconciler sees it, plus an agent that runs what is assigned.

    Tasks of a revision in `bad` run but their check fails for good; others turn healthy.
    """

    def __init__(self, count: int = 3, bad: frozenset[int] = frozenset()) -> None:
        self.now = T0
        self.bad = bad
        self.snapshot = ClusterSnapshot(
            services={},
            taskdefs={("web", r): taskdef(r) for r in (1, 2, 3)},
            tasks={},
            nodes={"n1": Node(name="n1", cpu=100_000, memory=100_000)},
        )
        self.healthy_seen: list[int] = []
        self.count = count

    def deploy(self, d: Deployment, stable: int | None) -> None:
        service = Service(
            name="web",
            family="web",
            revision=d.to_revision,
            count=self.count,
            deployment_id=d.id,
            stable_revision=stable,
        )
        deployments = {**self.snapshot.deployments, d.id: d}
        self.snapshot = replace(self.snapshot, services={"web": service}, deployments=deployments)

    def apply(self, plan: Plan) -> None:
        tasks = dict(self.snapshot.tasks)
        for new, _old in plan.writes.values():
            tasks[new.id] = new
        deployments = dict(self.snapshot.deployments)
        for new_d, _old_d in plan.deployments.values():
            deployments[new_d.id] = new_d
        services = dict(self.snapshot.services)
        for new_s, _old_s in plan.services.values():
            services[new_s.name] = new_s
        self.snapshot = replace(
            self.snapshot, tasks=tasks, deployments=deployments, services=services
        )

    def agent(self) -> None:
        tasks = {}
        for task in self.snapshot.tasks.values():
            if task.desired == Desired.STOP and not task.status.terminal:
                task = task.model_copy(update={"status": TaskStatus.STOPPED})
            elif (
                task.desired == Desired.RUN and task.node and task.run_generation < task.generation
            ) or (task.status == TaskStatus.ASSIGNED):
                bad = task.revision in self.bad
                check = CheckState(
                    container="app",
                    kind="http",
                    status=Health.CRITICAL if bad else Health.PASSING,
                    failing=bad,
                )
                task = task.model_copy(
                    update={
                        "status": TaskStatus.RUNNING,
                        "run_generation": task.generation,
                        "health": check.status,
                        "checks": [check],
                        "healthy_since": None if bad else self.now,
                    }
                )
            tasks[task.id] = task
        self.snapshot = replace(self.snapshot, tasks=tasks)

    def healthy_serving(self) -> int:
        return sum(1 for t in self.snapshot.tasks.values() if t.healthy)

    def run(self, seconds: float, tick: float = 1.0) -> None:
        end = self.now + seconds
        while self.now < end:
            self.apply(reconcile(self.snapshot, self.now, seed=int(self.now)))
            self.agent()
            self.healthy_seen.append(self.healthy_serving())
            self.now += tick

    def service(self) -> Service:
        return self.snapshot.services["web"]

    def live(self, revision: int) -> list[Task]:
        return [t for t in self.snapshot.tasks.values() if t.live and t.revision == revision]


def settled_v1(count: int = 3, bad: frozenset[int] = frozenset()) -> Cluster:
    cluster = Cluster(count, bad)
    cluster.deploy(deployment(1, None, count), None)
    cluster.run(10)
    d1 = cluster.snapshot.deployments["web-1-d"]
    assert d1.status == DeploymentStatus.SUCCESSFUL, d1
    assert cluster.service().stable_revision == 1
    return cluster


def test_first_deploy_succeeds_once_tasks_are_healthy_for_min_healthy_time() -> None:
    cluster = Cluster()
    cluster.deploy(deployment(1, None), None)
    cluster.run(3)
    assert cluster.snapshot.deployments["web-1-d"].status == DeploymentStatus.RUNNING
    cluster.run(5)
    d = cluster.snapshot.deployments["web-1-d"]
    assert d.status == DeploymentStatus.SUCCESSFUL and d.healthy == 3


def test_rolling_never_drops_below_min_healthy_and_replaces_every_task() -> None:
    cluster = settled_v1()
    cluster.healthy_seen.clear()
    cluster.deploy(deployment(2, 1), 1)
    cluster.run(20)
    d = cluster.snapshot.deployments["web-2-d"]
    assert d.status == DeploymentStatus.SUCCESSFUL
    assert min(cluster.healthy_seen) >= 3
    assert len(cluster.live(2)) == 3 and cluster.live(1) == []
    assert cluster.service().stable_revision == 2


def test_rolling_with_50_percent_min_healthy_and_no_surge_replaces_in_batches() -> None:
    cluster = settled_v1(count=4)
    cluster.healthy_seen.clear()
    cluster.deploy(deployment(2, 1, count=4, min_healthy_percent=50, max_percent=100), 1)
    total_seen = []
    for _ in range(40):
        cluster.run(1)
        live = [t for t in cluster.snapshot.tasks.values() if t.live]
        total_seen.append(len(live))
    assert cluster.snapshot.deployments["web-2-d"].status == DeploymentStatus.SUCCESSFUL
    assert min(cluster.healthy_seen) >= 2
    assert max(total_seen) <= 4  # max_percent 100: never more than count tasks


def test_blue_green_starts_the_whole_new_set_then_stops_the_old_at_once() -> None:
    cluster = settled_v1()
    cluster.deploy(deployment(2, 1, strategy="blue_green"), 1)
    cluster.run(1)
    assert len(cluster.live(2)) == 3 and len(cluster.live(1)) == 3  # both sets, during the switch
    cluster.run(3)
    assert len(cluster.live(1)) == 3  # old set serves until the new one is healthy long enough
    cluster.run(4)
    assert cluster.live(1) == [] and len(cluster.live(2)) == 3
    assert cluster.snapshot.deployments["web-2-d"].status == DeploymentStatus.SUCCESSFUL


def test_a_revision_that_never_turns_healthy_fails_and_rolls_back() -> None:
    cluster = settled_v1(bad=frozenset({2}))
    cluster.healthy_seen.clear()
    cluster.deploy(deployment(2, 1), 1)
    cluster.run(15)
    failed = cluster.snapshot.deployments["web-2-d"]
    assert failed.status == DeploymentStatus.ROLLED_BACK
    assert len(failed.failures) >= failed.failure_threshold == 3
    assert "rolling back to revision 1" in failed.message
    back = cluster.snapshot.deployments[cluster.service().deployment_id or ""]
    assert back.rollback_of == failed.id and back.status == DeploymentStatus.SUCCESSFUL
    assert cluster.service().revision == 1
    assert len(cluster.live(1)) == 3 and cluster.live(2) == []
    assert min(cluster.healthy_seen) >= 3  # v1 served at full count the whole time


def test_without_auto_rollback_a_failed_deployment_leaves_both_sets() -> None:
    cluster = settled_v1(bad=frozenset({2}))
    cluster.deploy(deployment(2, 1, auto_rollback=False), 1)
    cluster.run(15)
    assert cluster.snapshot.deployments["web-2-d"].status == DeploymentStatus.FAILED
    assert cluster.service().revision == 2
    assert len(cluster.live(1)) == 3


def test_no_progress_within_the_deadline_fails_the_deployment() -> None:
    cluster = settled_v1()
    cluster.deploy(deployment(2, 1, progress_deadline=10.0), 1)
    # No node can take the new tasks: they stay pending, nothing progresses.
    cluster.snapshot = replace(
        cluster.snapshot, taskdefs={**cluster.snapshot.taskdefs, ("web", 2): big_taskdef()}
    )
    cluster.run(15)
    failed = cluster.snapshot.deployments["web-2-d"]
    assert failed.status == DeploymentStatus.ROLLED_BACK
    assert "progress deadline" in failed.message
    assert len(cluster.live(1)) == 3


def big_taskdef() -> TaskDefinition:
    app = Container(name="app", command=["x"], memory=1_000_000)
    return TaskDefinition(family="web", revision=2, containers=[app])


def test_the_step_is_idempotent_when_nothing_moves() -> None:
    cluster = settled_v1()
    plan = reconcile(cluster.snapshot, cluster.now, seed=1)
    assert plan.empty


class SlowStops(Cluster):
    """An agent that needs `stop_ticks` rounds to stop a task (a writer flushing, unmounting)."""

    def __init__(self, count: int, stop_ticks: int) -> None:
        super().__init__(count)
        self.stop_ticks = stop_ticks
        self.stopping: dict[str, int] = {}
        self.overlap: list[tuple[str, str]] = []

    def agent(self) -> None:
        tasks = dict(self.snapshot.tasks)
        for task in tasks.values():
            if task.desired == Desired.STOP and not task.status.terminal:
                left = self.stopping.setdefault(task.id, self.stop_ticks) - 1
                self.stopping[task.id] = left
                if left > 0:  # keep it running this round: the base agent would stop it now
                    tasks[task.id] = task.model_copy(update={"desired": Desired.RUN})
        saved = self.snapshot
        self.snapshot = replace(saved, tasks=tasks)
        super().agent()
        after = {}
        for task in self.snapshot.tasks.values():
            if task.id in self.stopping and self.stopping[task.id] > 0:
                task = task.model_copy(update={"desired": Desired.STOP})
            after[task.id] = task
        self.snapshot = replace(self.snapshot, tasks=after)
        old = [t for t in after.values() if t.revision == 1 and not t.status.terminal]
        new = [t for t in after.values() if t.revision == 2]
        if old and new:
            self.overlap.append((old[0].id, new[0].id))


def test_stop_first_stops_the_old_task_before_creating_its_replacement() -> None:
    """A single-writer volume: the old task is gone before the new one exists (no surge)."""
    cluster = SlowStops(count=1, stop_ticks=3)
    cluster.deploy(deployment(1, None, count=1), None)
    cluster.run(10)
    reason = "single-writer volume data: each old task stops ..."
    cluster.deploy(deployment(2, 1, count=1, stop_first=reason), 1)
    cluster.run(20)
    d = cluster.snapshot.deployments["web-2-d"]
    assert d.status == DeploymentStatus.SUCCESSFUL, d
    assert cluster.overlap == []
    assert len(cluster.live(2)) == 1 and cluster.live(1) == []
    # the same rollout without stop-first surges: both revisions run side by side a while
    surge = SlowStops(count=1, stop_ticks=3)
    surge.deploy(deployment(1, None, count=1), None)
    surge.run(10)
    surge.deploy(deployment(2, 1, count=1), 1)
    surge.run(20)
    assert surge.snapshot.deployments["web-2-d"].status == DeploymentStatus.SUCCESSFUL
    assert surge.overlap != []


def test_stop_first_turns_blue_green_into_a_rolling_replacement() -> None:
    from moorage.model.service import DeploymentPolicy
    from moorage.ops.deploy import new_deployment

    policy = DeploymentPolicy(strategy="blue_green")
    d = new_deployment("web", "web", 1, 2, 1, policy, T0, stop_first="single-writer volume data")
    assert d.strategy == "rolling" and "blue/green" in d.stop_first
    assert new_deployment("web", "web", 1, 2, 1, policy, T0).strategy == "blue_green"
