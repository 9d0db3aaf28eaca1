"""The catalog, derived from the state cache: which instances each discoverable service has.

Nothing is stored for it: a task of a service with a `discovery` block is an instance while it
runs (desired run, status running), at its node's address and the host port of the discovery
port; its checks are the task's health checks plus the node's own (critical once the node is not
ready). The blocking index of a discovery name is the newest change to the services answering to
it, their tasks, and the nodes.
"""

from __future__ import annotations

from moorage.model import Desired, Health, Node, Service, Task, TaskStatus
from moorage.model.catalog import Instance, InstanceCheck, Registration
from moorage.model.node import NodeStatus

from . import kinds
from .cache import StateCache
from .topics import Topic

NODE_CHECK = "serfHealth"  # Consul's id for the node's own check; tools filter on it


def discovery_name(service: Service) -> str | None:
    if service.discovery is None:
        return None
    return service.discovery.name or service.name


class Catalog:
    """Read-only views over a StateCache (cheap: computed on demand from memory)."""

    def __init__(self, cache: StateCache) -> None:
        self.cache = cache

    def services_named(self, name: str) -> list[Service]:
        return [s for s in self.cache.services.values() if discovery_name(s) == name]

    def names(self) -> dict[str, list[str]]:
        """Discovery name → tags (union over the services answering to it), sorted."""
        out: dict[str, set[str]] = {}
        for service in self.cache.services.values():
            name = discovery_name(service)
            if name is not None and service.discovery is not None:
                out.setdefault(name, set()).update(service.discovery.tags)
        for registration in self.cache.registrations.values():
            out.setdefault(registration.name, set()).update(registration.tags)
        return {name: sorted(tags) for name, tags in sorted(out.items())}

    def instances(self, name: str) -> list[Instance]:
        """Every instance of a discovery name, critical ones included, in a stable order."""
        found: list[Instance] = []
        for service in self.services_named(name):
            for task in self.cache.tasks_of_service(service.name):
                instance = self._instance(name, service, task)
                if instance is not None:
                    found.append(instance)
        for registration in self.cache.registrations.values():
            if registration.name == name:
                found.append(self._registered(registration))
        return sorted(found, key=lambda i: (i.node, i.port, i.id))

    def topics(self, name: str | None = None) -> list[str]:
        """What a blocking query on `name` (or on the list of names) waits on."""
        if name is None:
            return [Topic.SERVICES, Topic.NODES, Topic.REGISTRATIONS]
        topics = [Topic.NODES, Topic.SERVICES, Topic.registered(name)]
        for service in self.services_named(name):
            topics.append(Topic.service_tasks(service.name))
        return topics

    def index(self, name: str | None = None) -> int:
        return max(self.cache.index(t) for t in self.topics(name))

    def _instance(self, name: str, service: Service, task: Task) -> Instance | None:
        if task.desired != Desired.RUN or task.status != TaskStatus.RUNNING or not task.node:
            return None
        node = self.cache.nodes.get(task.node)
        if node is None:
            return None
        assert service.discovery is not None
        port = self._port(service, task)
        checks = [self._node_check(node, node.name)]
        for state in task.checks:
            checks.append(
                InstanceCheck(
                    id=f"service:{task.id}:{state.container}",
                    name=f"{state.kind} check of {state.container}",
                    status=state.status,
                    output=state.output,
                    kind=state.kind,
                )
            )
        revision = max(1, self.cache.mod_revisions.get(kinds.TASK.key(task.id), 1))
        return Instance(
            id=task.id,
            name=name,
            service=service.name,
            node=node.name,
            address=node.address,
            port=port,
            tags=tuple(service.discovery.tags),
            meta={
                **service.discovery.meta,
                "moorage-service": service.name,
                "moorage-revision": str(task.revision),
            },
            checks=tuple(checks),
            create_index=revision,
            modify_index=revision,
        )

    def _registered(self, registration: Registration) -> Instance:
        node = self.cache.nodes.get(registration.node)
        checks = [self._node_check(node, registration.node)]
        checks += [
            InstanceCheck(id=c.id, name=c.name, status=c.status, output=c.output, kind=c.kind)
            for c in registration.checks
        ]
        revision = max(1, self.cache.mod_revisions.get(kinds.REGISTRATION.key(registration.id), 1))
        return Instance(
            id=registration.id,
            name=registration.name,
            service="",
            node=registration.node,
            address=registration.address or (node.address if node is not None else ""),
            port=registration.port,
            tags=tuple(registration.tags),
            meta=dict(registration.meta),
            checks=tuple(checks),
            create_index=revision,
            modify_index=revision,
        )

    @staticmethod
    def _node_check(node: Node | None, name: str) -> InstanceCheck:
        up = node is not None and node.status != NodeStatus.DOWN
        return InstanceCheck(
            id=NODE_CHECK,
            name="Node health",
            status=Health.PASSING if up else Health.CRITICAL,
            output=f"node {name} is {node.status.value if node is not None else 'gone'}",
            kind="node",
        )

    def _port(self, service: Service, task: Task) -> int:
        assert service.discovery is not None
        wanted = service.discovery.port
        if wanted is not None:
            return task.ports.get(wanted, 0)
        taskdef = self.cache.taskdefs.get((task.family, task.revision))
        if taskdef is not None:
            for container in taskdef.containers:
                for port in container.ports:
                    if port.name in task.ports:
                        return task.ports[port.name]
        return next(iter(task.ports.values()), 0)
