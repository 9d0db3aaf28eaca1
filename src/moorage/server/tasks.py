"""Tasks over HTTP (`moorage.ops.tasks`): reads, the agents' reports, users' TTL checks."""

from __future__ import annotations

from aiohttp import web

from moorage.model import Task, validate_body
from moorage.model.messages import TaskReport
from moorage.model.views import TtlUpdate
from moorage.ops import Tasks
from moorage.state import StateCache, Topic

from .auth import node_of
from .blocking import block
from .http import read_json, respond
from .routes import NODE, RouteTable, acl, task_service

routes = RouteTable()


class TasksApi:
    def __init__(self, tasks: Tasks, cache: StateCache) -> None:
        self.tasks = tasks
        self.cache = cache

    @routes.get(
        "/v1/tasks",
        "List tasks (filter by service or node)",
        auth=acl("service"),
        response=list[Task],
        query=("service", "node"),
        blocking=True,
        tags=("tasks",),
    )
    async def list_tasks(self, request: web.Request) -> web.Response:
        service, node = request.query.get("service"), request.query.get("node")
        if service:
            topic = Topic.service_tasks(service)
        elif node:
            topic = Topic.node_tasks(node)
        else:
            topic = Topic.TASKS
        index = await block(request, self.cache, topic)
        return respond(self.tasks.find(service, node), index)

    @routes.get(
        "/v1/tasks/{id}",
        "One task",
        auth=acl("service", task_service("id")),
        response=Task,
        blocking=True,
        tags=("tasks",),
    )
    async def get_task(self, request: web.Request) -> web.Response:
        task_id = request.match_info["id"]
        index = await block(request, self.cache, Topic.task(task_id))
        return respond(self.tasks.get(task_id), index)

    @routes.put(
        "/v1/tasks/{id}/checks/{container}/ttl",
        "Set a TTL check's state (it turns critical when not set again within its ttl)",
        auth=acl("service", task_service("id")),
        body=TtlUpdate,
        response=Task,
        tags=("tasks",),
    )
    async def update_ttl(self, request: web.Request) -> web.Response:
        body = validate_body(TtlUpdate, await read_json(request))
        info = request.match_info
        return respond(await self.tasks.update_ttl(info["id"], info["container"], body))

    @routes.put(
        "/v1/tasks/{id}/status",
        "Agent report of a task's state (its own tasks only)",
        auth=NODE,
        body=TaskReport,
        response=Task,
        tags=("agents",),
    )
    async def report(self, request: web.Request) -> web.Response:
        report = validate_body(TaskReport, await read_json(request))
        task_id, caller = request.match_info["id"], node_of(request)
        return respond(await self.tasks.report(task_id, report, caller))
