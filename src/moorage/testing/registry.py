"""An image registry for tests: Debian's `docker-registry` (distribution 2.x) as a process.

Docker Hub is out of reach, so images reach the node engines of a test cluster
(`moorage.testing.dockerd`) the way they reach real machines: one engine pushes them here, the
others pull. The registry listens on one address (a netns cluster's bridge gateway, which
every node namespace and the host can reach), speaks plain HTTP (engines list it with
`--insecure-registry`) and keeps its blobs in its own folder:

    with Registry(tmp_path / "registry", host=network.gateway) as registry:
        ...  # docker -H <node engine> push {registry.address}/probe:1
        assert registry.tags("probe") == ["1"]
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import httpx

__all__ = ["Registry", "registry_supported"]

BINARY = "docker-registry"


def registry_supported() -> str | None:
    """Why a registry cannot run here, or None when it can."""
    if shutil.which(BINARY) is None:
        return f"`{BINARY}` is not installed (apt-get install docker-registry; .ci/run does)"
    return None


class Registry:
    """One `docker-registry serve` process on `host` (a free port unless given), storing
    under `folder`; started and stopped by pid. Its log is `folder/registry.log`."""

    def __init__(self, folder: Path, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.folder = folder
        self.address = f"{host}:{port or _free_port(host)}"  # host:port, as image names want
        self.url = f"http://{self.address}"
        self.log_path = folder / "registry.log"
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> Registry:
        """Write the config, start the process, return once `GET /v2/` answers."""
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / "config.yml"
        config.write_text(json.dumps(self._config(), indent=2))  # JSON is YAML
        # REGISTRY_* variables override the config file: none of the caller's apply here
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                [BINARY, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT, env=env
            )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _config(self) -> dict[str, object]:
        return {
            "version": "0.1",
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.folder / "data")},
                "delete": {"enabled": True},
                # no background sweep of the upload folder: a test registry lives for seconds
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {"addr": self.address},
        }

    def _wait_ready(self, timeout: float) -> None:
        assert self.popen is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(
                    f"{BINARY} exited with {self.popen.returncode}:\n{self._log_tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/v2/", timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(
            f"{BINARY} did not answer on {self.url}/v2/ within {timeout}s:\n{self._log_tail()}"
        )

    def _log_tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM, SIGKILL after 10 s; its blobs stay in `folder` (the test's tmp dir)."""
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.terminate()
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(10)

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---- its HTTP API (distribution's v2 API) ---------------------------------------------
    def catalog(self) -> list[str]:
        """The repositories it holds."""
        answer = httpx.get(f"{self.url}/v2/_catalog", timeout=10)
        answer.raise_for_status()
        return list(answer.json().get("repositories") or [])

    def tags(self, repo: str) -> list[str]:
        """The tags of `repo`, sorted; [] for a repository it does not hold."""
        answer = httpx.get(f"{self.url}/v2/{repo}/tags/list", timeout=10)
        if answer.status_code == 404:
            return []
        answer.raise_for_status()
        return sorted(answer.json().get("tags") or [])


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
