"""Images of compose `build:` services: built with the Docker engine the CLI reaches
(`DOCKER_HOST`, else the local socket) through the Engine API's build endpoint, tagged
`<registry>/<project>-<service>:<tag>`, and pushed when the cluster has more than one node.

The tag names the content: the git short sha when the context is a clean git checkout, else
`ctx-` and a digest of the context's files (paths, modes, bytes; `.dockerignore` applied). The
same context gives the same tag, so deploying an unchanged compose file is no new revision.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import json
import os
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import aiodocker
import aiohttp

from moorage.model import FieldError, SpecError, Unavailable
from moorage.model.compose import Build

BUILD_TIMEOUT = aiohttp.ClientTimeout(total=3600, sock_connect=10)
MAX_CONTEXT_BYTES = 2 * 1024**3


def ignored_patterns(context: Path) -> list[str]:
    try:
        lines = (context / ".dockerignore").read_text().splitlines()
    except OSError:
        return []
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _excluded(relative: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes."""
    excluded = False
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        clean = pattern.lstrip("!").strip("/").removeprefix("./")
        if any(fnmatch.fnmatchcase(p, clean) for p in prefixes):
            excluded = not negate
    return excluded


def context_files(context: Path, dockerfile: str = "Dockerfile") -> Iterator[tuple[str, Path]]:
    """(path in the context, file) in a stable order, .dockerignore applied (the Dockerfile
    and .dockerignore stay: the engine needs them)."""
    patterns = ignored_patterns(context)
    keep = {dockerfile.removeprefix("./"), ".dockerignore"}
    for root, dirs, files in os.walk(context):
        dirs.sort()
        folder = Path(root)
        if folder != context and not _excluded(folder.relative_to(context).as_posix(), patterns):
            yield folder.relative_to(context).as_posix(), folder  # empty ones too: COPY keeps them
        for name in sorted(files):
            path = Path(root) / name
            relative = path.relative_to(context).as_posix()
            if relative not in keep and _excluded(relative, patterns):
                continue
            yield relative, path


def content_tag(context: Path, dockerfile: str = "Dockerfile") -> str:
    """The git short sha of a clean checkout, else `ctx-` + a digest of the files."""
    git = _git(context, "rev-parse", "--short=12", "HEAD")
    if git and _git(context, "status", "--porcelain", "--", ".") == "":
        return git
    sha = hashlib.sha256()
    for relative, path in context_files(context, dockerfile):
        sha.update(f"{relative}\0{path.stat().st_mode & 0o777:o}\0".encode())
        if path.is_file():
            sha.update(hashlib.sha256(path.read_bytes()).digest())
    return "ctx-" + sha.hexdigest()[:12]


def _git(context: Path, *args: str) -> str | None:
    try:
        result = subprocess.run(
            ["git", "-C", str(context), *args], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def namer(registry: str | None) -> Callable[[Build], str]:
    """How a build's image is named: `<registry>/<project>-<service>:<content tag>`."""

    def name(build: Build) -> str:
        tag = content_tag(build.context, build.dockerfile) if build.context.is_dir() else "latest"
        repository = f"{registry.rstrip('/')}/{build.repository}" if registry else build.repository
        return f"{repository}:{tag}"

    return name


def context_tar(context: Path, dockerfile: str, out: IO[bytes]) -> None:
    total = 0
    with tarfile.open(fileobj=out, mode="w") as tar:
        for relative, path in context_files(context, dockerfile):
            total += path.stat().st_size if path.is_file() else 0
            if total > MAX_CONTEXT_BYTES:
                raise Unavailable(f"the build context {context} is over 2 GiB: add a .dockerignore")
            tar.add(path, relative, recursive=False)
    out.seek(0)


def refuse_builds(builds: list[Build]) -> list[Build]:
    """--no-build: services that also name an image use it; the others are errors."""
    missing = [b for b in builds if not b.named]
    if missing:
        raise SpecError(
            [
                FieldError(
                    f"services.{b.service}.build",
                    "--no-build was given and the service names no image: build and push it, "
                    "then give `image:`",
                )
                for b in missing
            ]
        )
    return []


def run(builds: list[Build], push: bool, say: Callable[[str], None]) -> None:
    """Build each image (and push it); raise Unavailable with the engine's message."""
    asyncio.run(_run(builds, push, say))


async def _run(builds: list[Build], push: bool, say: Callable[[str], None]) -> None:
    try:
        docker = aiodocker.Docker(timeout=BUILD_TIMEOUT)
    except (ValueError, OSError) as exc:
        raise Unavailable(f"no Docker engine to build with: {exc}") from None
    try:
        for build in builds:
            await _build(docker, build, say)
            if push:
                await _push(docker, build.image, say)
    except (aiohttp.ClientError, OSError) as exc:
        raise Unavailable(f"the Docker engine does not answer: {exc}") from None
    finally:
        await docker.close()


async def _build(docker: aiodocker.Docker, build: Build, say: Callable[[str], None]) -> None:
    say(f"{build.service}: building {build.image} from {build.context}")
    params: dict[str, Any] = {"t": build.image, "dockerfile": build.dockerfile, "rm": "true"}
    if build.args:
        params["buildargs"] = json.dumps(build.args)
    if build.target:
        params["target"] = build.target  # not in aiodocker's build(): the endpoint takes it
    with tempfile.TemporaryFile() as archive:
        await asyncio.to_thread(context_tar, build.context, build.dockerfile, archive)
        # aiodocker's images.build() has no `target`; its request helper does the rest
        async with docker._query(
            "build",
            "POST",
            params=params,
            headers={"content-type": "application/x-tar"},
            data=archive.read(),
            timeout=BUILD_TIMEOUT,
        ) as response:
            async for raw in response.content:
                _progress(build, raw, say)


def _progress(build: Build, raw: bytes, say: Callable[[str], None]) -> None:
    try:
        update = json.loads(raw)
    except ValueError:
        return
    if "error" in update:
        raise Unavailable(f"{build.service}: the build failed: {update['error'].strip()}")
    text = str(update.get("stream") or "").strip()
    if text:
        say(f"{build.service}: {text}")


async def _push(docker: aiodocker.Docker, image: str, say: Callable[[str], None]) -> None:
    repository, _, tag = image.rpartition(":")
    say(f"pushing {image}")
    try:
        async for update in docker.images.push(repository, tag=tag, stream=True):
            if "error" in update:
                raise Unavailable(f"pushing {image}: {update['error']}")
    except aiodocker.DockerError as exc:
        raise Unavailable(f"pushing {image}: {exc.message}") from None
    say(f"pushed {image}")
