"""Secrets over HTTP (`moorage.ops.secrets`): users set and list names and versions; the one
route that returns values serves an agent the secrets of a task placed on its node."""

from __future__ import annotations

from aiohttp import web

from moorage.model import SecretInfo, SecretValue, validate_body
from moorage.model.messages import TaskSecrets
from moorage.ops import Secrets

from .auth import node_of
from .http import read_json, respond
from .routes import NODE, RouteTable, acl, path

routes = RouteTable()


class SecretsApi:
    def __init__(self, secrets: Secrets) -> None:
        self.secrets = secrets

    @routes.put(
        "/v1/secrets/{name}",
        "Set a secret (a new version); the value is sealed before it is stored",
        auth=acl("secret", path("name")),
        body=SecretValue,
        response=SecretInfo,
        tags=("secrets",),
    )
    async def set_secret(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = validate_body(SecretValue, await read_json(request))
        return respond(await self.secrets.set(name, body.value))

    @routes.post(
        "/v1/secrets",
        'Set many secrets at once: {"NAME": "value", ...}',
        auth=acl("secret"),
        response=list[SecretInfo],
        tags=("secrets",),
    )
    async def import_secrets(self, request: web.Request) -> web.Response:
        return respond(await self.secrets.set_many(await read_json(request)))

    @routes.get(
        "/v1/secrets",
        "Secret names and versions (never values)",
        auth=acl("secret"),
        response=list[SecretInfo],
        tags=("secrets",),
    )
    async def list_secrets(self, request: web.Request) -> web.Response:
        return respond(self.secrets.infos())

    @routes.delete(
        "/v1/secrets/{name}",
        "Remove a secret",
        auth=acl("secret", path("name")),
        tags=("secrets",),
    )
    async def delete_secret(self, request: web.Request) -> web.Response:
        await self.secrets.delete(request.match_info["name"])
        return respond({})

    @routes.get(
        "/v1/tasks/{id}/secrets",
        "The secret values a task's containers get (its own node only)",
        auth=NODE,
        response=TaskSecrets,
        tags=("agents",),
    )
    async def task_secrets(self, request: web.Request) -> web.Response:
        return respond(self.secrets.for_task(request.match_info["id"], node_of(request)))
