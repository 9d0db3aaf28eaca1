"""The agent's half of what the server relays about volume data: take a snapshot, serve its
archive, restore it, delete it; remove a volume's files (`volume rm`).

    POST   /v1/volumes/{name}/snapshots                 {id, driver, writer?, pause_timeout?}
    GET    /v1/volumes/{name}/snapshots/{id}/archive    ?driver=  the .tar.gz, streamed
    DELETE /v1/volumes/{name}/snapshots/{id}            ?driver=
    POST   /v1/volumes/{name}/restore                   {source, source_driver, driver, size?}
    DELETE /v1/volumes/{name}                           ?driver=  unmount here, delete the files

The server decides which node snapshots a volume (`moorage.model.snapshot.plan_snapshot`) and
relays to it with the cluster's join token. Taking one:

    writer task running here ─▶ pause it (agent/pause.py) ─▶ tar the tree ─▶ resume ─▶ gzip
    no writer                ─▶ tar the tree (an unmounted image is loop-mounted read-only)

The archive is `<volume root>/.snapshots/<volume>/<id>.tar.gz` (moorage.volumes.layout).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from moorage.volumes import host
from moorage.volumes.errors import VolumeError
from moorage.volumes.layout import Driver, Layout

from . import archive
from .pause import PauseError, paused
from .surface import AGENT_KEY, LocalAgent

CHUNK = 256 * 1024
ID_PATTERN = r"^snap-[0-9a-f]{12}$"
VOLUME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"


class TakeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=ID_PATTERN)
    driver: Driver
    writer: str | None = None  # the task holding the volume for writing, to pause
    pause_timeout: float = Field(default=10.0, gt=0, le=300)


class RestoreBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(pattern=VOLUME_PATTERN)  # the snapshot's volume
    id: str = Field(pattern=ID_PATTERN)
    source_driver: Driver
    driver: Driver  # the new volume's
    size: int | None = Field(default=None, ge=1)  # MiB: enforced with an image, as root


class AgentError(Exception):
    def __init__(self, status: int, code: str, field: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.field, self.message = status, code, field, message


def _agent(request: web.Request) -> LocalAgent:
    return request.app[AGENT_KEY]


def layout_of(agent: LocalAgent) -> Layout:
    return agent.volume_layout


# ---- plumbing ----------------------------------------------------------------------------------
def _error(exc: AgentError) -> web.Response:
    body = {
        "code": exc.code,
        "message": exc.message,
        "errors": [{"field": exc.field, "message": exc.message}],
    }
    return web.json_response(body, status=exc.status)


async def _body(request: web.Request, model: type[BaseModel]) -> Any:
    try:
        return model.model_validate_json(await request.read())
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise AgentError(400, "invalid_body", field, str(first["msg"])) from None


def _driver(request: web.Request) -> Driver:
    driver = request.query.get("driver", "")
    if driver not in ("local", "shared"):
        raise AgentError(400, "invalid_query", "driver", "must be local or shared")
    return "local" if driver == "local" else "shared"


def _name(request: web.Request, key: str, pattern: str) -> str:
    value = request.match_info[key]
    if re.match(pattern, value) is None:
        raise AgentError(400, "invalid_path", key, f"{value!r} is not a valid {key}")
    return value


def archive_path(layout: Layout, driver: Driver, volume: str, snapshot_id: str) -> Path:
    return layout.snapshots_dir(driver, volume) / f"{snapshot_id}.tar.gz"


# ---- take --------------------------------------------------------------------------------------
async def take(request: web.Request) -> web.Response:
    try:
        agent = _agent(request)
        name = _name(request, "name", VOLUME_PATTERN)
        body: TakeBody = await _body(request, TakeBody)
        result = await take_snapshot(agent, layout_of(agent), name, body)
    except AgentError as exc:
        return _error(exc)
    return web.json_response(result)


async def take_snapshot(
    agent: LocalAgent, layout: Layout, name: str, body: TakeBody
) -> dict[str, Any]:
    started = time.time()
    folder = layout.snapshots_dir(body.driver, name)
    staging = folder / f"{body.id}.tar"
    final = folder / f"{body.id}.tar.gz"
    if final.exists():
        raise AgentError(409, "conflict", "id", f"snapshot {body.id} exists already")
    try:
        async with _tree(layout, body.driver, name, body.id) as tree:
            consistency, pause, stats = await _copy(agent, body, tree, staging)
        size = await asyncio.to_thread(archive.compress, staging, final)
    except BaseException:
        archive.remove(staging)
        archive.remove(final.with_name(final.name + ".part"))
        raise
    return {
        "id": body.id,
        "volume": name,
        "size": size,
        "files": stats.files,
        "data_bytes": stats.data_bytes,
        "consistency": consistency,
        "task": body.writer if consistency in ("frozen", "paused") else None,
        "pause_seconds": round(pause, 6),
        "created_at": started,
        "duration": round(time.time() - started, 6),
    }


async def _copy(
    agent: LocalAgent, body: TakeBody, tree: Path | None, staging: Path
) -> tuple[str, float, archive.TreeStats]:
    """Tar the tree, pausing the writer for it if one runs here: (consistency, pause, stats)."""
    runner = agent.runners.get(body.writer) if body.writer else None
    if runner is None or not runner.active:
        stats = await asyncio.to_thread(archive.copy_tree, tree, staging)
        return ("stopped" if body.writer else "detached"), 0.0, stats
    if not runner.handles:
        raise AgentError(409, "conflict", "writer", f"task {body.writer} is starting: try again")
    try:
        async with paused(list(runner.handles), agent.docker, body.pause_timeout) as how:
            began = time.monotonic()
            stats = await asyncio.to_thread(archive.copy_tree, tree, staging)
            pause = time.monotonic() - began
    except PauseError as exc:
        raise AgentError(
            409, "conflict", "writer", f"cannot pause task {body.writer}: {exc}"
        ) from None
    return how, pause, stats


@contextlib.asynccontextmanager
async def _tree(layout: Layout, driver: Driver, name: str, tag: str) -> AsyncIterator[Path | None]:
    """The volume's file tree, readable for the body of the `async with` (None: never
    provisioned, an empty volume). An image is read at its mountpoint when this node has it
    mounted; otherwise it is loop-mounted read-only aside for the copy."""
    image = layout.image_path(driver, name)
    if not image.exists():
        data = layout.data_path(driver, name)
        yield data if data.is_dir() else None
        return
    mountpoint = layout.mountpoint(name)
    if await asyncio.to_thread(host.mounted, mountpoint):
        yield mountpoint
        return
    if not host.can_mount():
        raise AgentError(409, "conflict", "name", f"{image} is an image: reading it needs root")
    async with _scratch(layout, f"snapshot-{tag}-") as scratch:
        await _host(host.mount_image, image, scratch, True)
        try:
            yield scratch
        finally:
            await _host(host.unmount, scratch)


@contextlib.asynccontextmanager
async def _scratch(layout: Layout, prefix: str) -> AsyncIterator[Path]:
    """A private mountpoint for an image mounted only for a copy or a restore."""
    folder = layout.data_dir / "volume-mounts" / ".scratch"
    folder.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=prefix, dir=folder))
    try:
        yield scratch
    finally:
        with contextlib.suppress(OSError):
            scratch.rmdir()


async def _host(action: Callable[..., None], *args: Any) -> None:
    """A blocking `moorage.volumes.host` action, in a thread; its error as a 500."""
    try:
        await asyncio.to_thread(action, *args)
    except VolumeError as exc:
        raise AgentError(500, "volume_error", "", str(exc)) from None


# ---- archive, delete ---------------------------------------------------------------------------
async def serve_archive(request: web.Request) -> web.StreamResponse:
    try:
        agent = _agent(request)
        name = _name(request, "name", VOLUME_PATTERN)
        snapshot_id = _name(request, "id", ID_PATTERN)
        path = archive_path(layout_of(agent), _driver(request), name, snapshot_id)
        if not path.is_file():
            raise AgentError(404, "not_found", "id", f"no archive of snapshot {snapshot_id} here")
    except AgentError as exc:
        return _error(exc)
    headers = {
        "Content-Type": "application/gzip",
        "Content-Length": str(path.stat().st_size),
        "Content-Disposition": f'attachment; filename="{name}-{snapshot_id}.tar.gz"',
    }
    response = web.StreamResponse(headers=headers)
    await response.prepare(request)
    with path.open("rb") as source:
        while chunk := await asyncio.to_thread(source.read, CHUNK):
            await response.write(chunk)
    await response.write_eof()
    return response


async def delete(request: web.Request) -> web.Response:
    try:
        agent = _agent(request)
        name = _name(request, "name", VOLUME_PATTERN)
        snapshot_id = _name(request, "id", ID_PATTERN)
        path = archive_path(layout_of(agent), _driver(request), name, snapshot_id)
    except AgentError as exc:
        return _error(exc)
    existed = path.exists()
    archive.remove(path)
    with contextlib.suppress(OSError):
        path.parent.rmdir()  # the last snapshot of the volume: drop its folder
    return web.json_response({"deleted": snapshot_id, "existed": existed})


# ---- restore -----------------------------------------------------------------------------------
async def restore(request: web.Request) -> web.Response:
    try:
        agent = _agent(request)
        name = _name(request, "name", VOLUME_PATTERN)
        body: RestoreBody = await _body(request, RestoreBody)
        result = await restore_snapshot(layout_of(agent), name, body)
    except AgentError as exc:
        return _error(exc)
    return web.json_response(result)


async def restore_snapshot(layout: Layout, name: str, body: RestoreBody) -> dict[str, Any]:
    """Provision volume `name` (as moorage.volumes.host does for a task: an ext4 image when it
    has a size and this node can mount, else a directory) and unpack the snapshot into it. On
    failure nothing of the new volume is left."""
    source = archive_path(layout, body.source_driver, body.source, body.id)
    if not source.is_file():
        raise AgentError(404, "not_found", "id", f"no archive of snapshot {body.id} on this node")
    folder = layout.volume_dir(body.driver, name)
    if folder.exists():
        raise AgentError(409, "conflict", "name", f"{folder} exists already: not overwriting it")
    started = time.time()
    image, data = layout.image_path(body.driver, name), layout.data_path(body.driver, name)
    try:
        async with _scratch(layout, f"restore-{name}-") as scratch:
            storage = host.choose(image, data, scratch, body.size, host.can_mount())
            await _host(host.provision, storage, body.size)
            try:
                stats = await asyncio.to_thread(archive.extract, source, storage.host_path)
            finally:
                if storage.size_enforced:
                    await _host(host.unmount, scratch)
    except BaseException:
        await asyncio.to_thread(host.remove_tree, folder)
        raise
    return {
        "volume": name,
        "files": stats.files,
        "data_bytes": stats.data_bytes,
        "size_enforced": storage.size_enforced,
        "duration": round(time.time() - started, 6),
    }


# ---- remove a volume ---------------------------------------------------------------------------
async def remove_volume(request: web.Request) -> web.Response:
    """The files of a volume the server is deleting (it is `deleting`: nothing can claim it).
    An error answer means nothing was removed; its snapshots stay."""
    try:
        agent = _agent(request)
        name = _name(request, "name", VOLUME_PATTERN)
        driver = _driver(request)
        users = sorted(
            runner_id
            for runner_id, runner in agent.runners.items()
            if runner.volumes is not None and any(a.name == name for a in runner.volumes.attached)
        )
        if users:
            raise AgentError(
                409, "conflict", "name", f"volume {name} is mounted here for task {users[0]}"
            )
        paths = layout_of(agent)
        folder, mountpoint = paths.volume_dir(driver, name), paths.mountpoint(name)
        try:
            existed = await asyncio.to_thread(
                host.remove, folder, mountpoint, paths.trash_dir(driver)
            )
        except VolumeError as exc:
            raise AgentError(500, "volume_error", "", str(exc)) from None
    except AgentError as exc:
        return _error(exc)
    return web.json_response({"deleted": name, "existed": existed})


# The routes the agent serves for the server (agent/http.py declares them: join token).
ROUTES: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = [
    ("POST", "/v1/volumes/{name}/snapshots", take),
    ("GET", "/v1/volumes/{name}/snapshots/{id}/archive", serve_archive),
    ("DELETE", "/v1/volumes/{name}/snapshots/{id}", delete),
    ("POST", "/v1/volumes/{name}/restore", restore),
    ("DELETE", "/v1/volumes/{name}", remove_volume),
]
