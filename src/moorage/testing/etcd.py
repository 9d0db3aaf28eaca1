"""A one-member etcd for tests: Debian's `/usr/bin/etcd` (etcd-server 3.4) as a process.

    with EtcdServer(tmp_path / "etcd") as etcd:
        store = await EtcdStore.open([etcd.endpoint], namespace="/t-1")
        etcd.kill()   # SIGKILL, as a crash would
        etcd.start()  # the same member again, from its data directory

It listens on 127.0.0.1 (free ports unless given), plain HTTP or TLS (`MemberTls`: its
certificate, and with `client_ca` clients must present a certificate that CA signed); it is
started and stopped by pid, ready when its /health answers, and logs to `folder/etcd.log`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx

from moorage.pki import client_context

__all__ = ["EtcdServer", "MemberTls", "etcd_supported"]

BINARY = "etcd"


def etcd_supported() -> str | None:
    """Why etcd cannot run here, or None when it can."""
    if shutil.which(BINARY) is None:
        return f"`{BINARY}` is not installed (apt-get install etcd-server; .ci/run does)"
    return None


@dataclass(frozen=True, slots=True)
class MemberTls:
    """The client port's TLS: the member's certificate (with 127.0.0.1 among its addresses) and
    key, the CA that signed it, and, when `client_ca` is set, the CA client certificates must
    come from (--client-cert-auth); `probe` is the certificate and key the health checks show."""

    cert: Path
    key: Path
    ca: Path
    client_ca: Path | None = None
    probe: tuple[Path, Path] | None = None


class EtcdServer:
    """One etcd member with its data under `folder/data`; see the module docstring."""

    def __init__(
        self,
        folder: Path,
        client_port: int | None = None,
        peer_port: int | None = None,
        *,
        tls: MemberTls | None = None,
        max_txn_ops: int = 128,
    ) -> None:
        self.folder = folder
        self.tls = tls
        self.max_txn_ops = max_txn_ops
        self.client_port = client_port or _free_port()
        self.peer_port = peer_port or _free_port()
        scheme = "https" if tls else "http"
        self.endpoint = f"{scheme}://127.0.0.1:{self.client_port}"
        self.log_path = folder / "etcd.log"
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> EtcdServer:
        """Start the member (again, after stop or kill) and return once /health says true."""
        self.folder.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self._command(), stdout=log, stderr=subprocess.STDOUT, env=env
            )
        try:
            self._wait_healthy(timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def _command(self) -> list[str]:
        peer = f"http://127.0.0.1:{self.peer_port}"
        command = [
            BINARY,
            "--name=test",
            f"--data-dir={self.folder / 'data'}",
            f"--listen-client-urls={self.endpoint}",
            f"--advertise-client-urls={self.endpoint}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=test={peer}",
            f"--max-txn-ops={self.max_txn_ops}",
            "--logger=zap",
            "--log-outputs=stderr",
            "--log-level=warn",
        ]
        if self.tls is not None:
            command += [f"--cert-file={self.tls.cert}", f"--key-file={self.tls.key}"]
            if self.tls.client_ca is not None:
                command += ["--client-cert-auth", f"--trusted-ca-file={self.tls.client_ca}"]
        return command

    def _wait_healthy(self, timeout: float) -> None:
        assert self.popen is not None
        deadline = time.monotonic() + timeout
        verify: ssl.SSLContext | bool = False
        if self.tls is not None:
            verify = client_context(self.tls.ca, *(self.tls.probe or (None, None)))
        with httpx.Client(verify=verify, timeout=1.0) as client:
            while time.monotonic() < deadline:
                if self.popen.poll() is not None:
                    raise RuntimeError(
                        f"etcd exited with {self.popen.returncode}:\n{self._log_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    if client.get(f"{self.endpoint}/health").json().get("health") == "true":
                        return
                time.sleep(0.05)
        raise RuntimeError(f"etcd was not healthy within {timeout}s:\n{self._log_tail()}")

    def _log_tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL, as a crash would (its data directory stays)."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(10)

    def stop(self) -> None:
        """SIGTERM, SIGKILL after 10 s."""
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.terminate()
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()

    def __enter__(self) -> EtcdServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
