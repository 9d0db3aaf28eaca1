"""A small synchronous client of the moorage HTTP API.

Foreign errors (httpx's, HTTP statuses) become moorage errors here, and only here:
400 → SpecError (with the server's field errors), 404 → NotFound, 409 → Conflict,
connection failures and 5xx → Unavailable.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from moorage.model import (
    Conflict,
    FieldError,
    Forbidden,
    MoorageError,
    NotFound,
    SpecError,
    Unauthorized,
    Unavailable,
)

DEFAULT_ADDR = "http://127.0.0.1:7070"


def default_address() -> str:
    return os.environ.get("MOORAGE_ADDR", DEFAULT_ADDR)


def saved_ca() -> Path:
    """Where `moorage ca fetch` keeps the cluster CA it checked (used when none is given)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "moorage" / "ca.pem"


def trusted_ca(ca_cert: str | None = None) -> str | None:
    """The CA file HTTPS answers are checked against: `--ca-cert`, MOORAGE_CACERT, or the one
    `moorage ca fetch` saved; None: the system's trust store."""
    chosen = ca_cert or os.environ.get("MOORAGE_CACERT")
    if chosen:
        return chosen
    saved = saved_ca()
    return str(saved) if saved.exists() else None


def _error(response: httpx.Response) -> MoorageError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    message = str(body.get("message") or response.reason_phrase or response.status_code)
    if response.status_code == 400:
        errors = [
            FieldError(e.get("field", ""), e.get("message", "")) for e in body.get("errors", [])
        ]
        return SpecError(errors or [FieldError("", message)], code=body.get("code"))
    if response.status_code == 404:
        return NotFound(message)
    if response.status_code == 409:
        return Conflict(message)
    if response.status_code == 401:
        return Unauthorized(message)
    if response.status_code == 403:
        return Forbidden(message)
    return Unavailable(f"server error {response.status_code}: {message}")


class Client:
    def __init__(
        self,
        address: str | None = None,
        token: str | None = None,
        timeout: float = 30,
        ca_cert: str | None = None,
    ) -> None:
        self.address = (address or default_address()).rstrip("/")
        if "://" not in self.address:
            self.address = f"http://{self.address}"
        headers = {}
        token = token or os.environ.get("MOORAGE_HTTP_TOKEN")  # an ACL token
        if token:
            headers["X-Moorage-Token"] = token
        self.headers = headers
        self.ca = trusted_ca(ca_cert)
        self._http = httpx.Client(
            base_url=self.address, headers=headers, timeout=timeout, verify=self.tls()
        )

    def tls(self) -> ssl.SSLContext:
        """What HTTPS answers are checked against (the cluster CA when one is known)."""
        return ssl.create_default_context(cafile=self.ca)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request_indexed(method, path, **kwargs)[0]

    def request_indexed(self, method: str, path: str, **kwargs: Any) -> tuple[Any, int]:
        """The JSON body and the blocking-query index of the response (0 if none)."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise Unavailable(f"cannot reach the moorage server at {self.address}: {exc}") from None
        if response.status_code >= 400:
            raise _error(response)
        return response.json(), int(response.headers.get("X-Moorage-Index", "0") or 0)

    def stream_lines(self, path: str, params: dict[str, str] | None = None) -> Iterator[str]:
        """Lines of a streaming endpoint (logs, SSE), until the server ends it."""
        try:
            with self._http.stream(
                "GET", path, params=params, timeout=httpx.Timeout(None, connect=5)
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error(response)
                yield from response.iter_lines()
        except httpx.HTTPError as exc:
            raise Unavailable(f"lost the stream from {self.address}: {exc}") from None

    # ---- endpoints -------------------------------------------------------------------------
    def deploy(self, spec_text: str) -> list[dict[str, Any]]:
        headers = {"Content-Type": "application/yaml"}
        result: list[dict[str, Any]] = self.request(
            "POST", "/v1/services", content=spec_text.encode(), headers=headers
        )
        return result

    def deploy_specs(self, specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Deploy normalized specs (JSON), as converted from ECS or compose files."""
        result: list[dict[str, Any]] = self.request("POST", "/v1/services", json=specs)
        return result

    def validate(self, spec_text: str) -> list[dict[str, Any]]:
        headers = {"Content-Type": "application/yaml"}
        result: list[dict[str, Any]] = self.request(
            "POST", "/v1/validate", content=spec_text.encode(), headers=headers
        )
        return result

    def services(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", "/v1/services")
        return result

    def service(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/v1/services/{name}")
        return result

    def scale(self, name: str, count: int) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "POST", f"/v1/services/{name}/scale", json={"count": count}
        )
        return result

    def stop(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", f"/v1/services/{name}/stop")
        return result

    def update_images(self, name: str, images: dict[str, str]) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "POST", f"/v1/services/{name}/images", json={"images": images}
        )
        return result

    def rebalance(self, name: str) -> dict[str, Any]:
        """Move a service's tasks to where the scheduler would place them now."""
        result: dict[str, Any] = self.request("POST", f"/v1/services/{name}/rebalance")
        return result

    def rollback(self, name: str, to: int | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "POST", f"/v1/services/{name}/rollback", json={"to": to}
        )
        return result

    def deployments(self, service: str | None = None) -> list[dict[str, Any]]:
        params = {"service": service} if service else {}
        result: list[dict[str, Any]] = self.request("GET", "/v1/deployments", params=params)
        return result

    def deployment(
        self, deployment_id: str, index: int = 0, wait: float = 0
    ) -> tuple[dict[str, Any], int]:
        """One deployment; with index, block until it changes (or wait passes)."""
        params = {"index": str(index), "wait": f"{wait:g}s"} if index else {}
        timeout = httpx.Timeout(wait + 10, connect=5)
        body, new_index = self.request_indexed(
            "GET", f"/v1/deployments/{deployment_id}", params=params, timeout=timeout
        )
        return body, new_index

    def set_secret(self, name: str, value: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("PUT", f"/v1/secrets/{name}", json={"value": value})
        return result

    def import_secrets(self, values: dict[str, str]) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("POST", "/v1/secrets", json=values)
        return result

    def secrets(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", "/v1/secrets")
        return result

    def remove_secret(self, name: str) -> None:
        self.request("DELETE", f"/v1/secrets/{name}")

    def create_volume(self, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", "/v1/volumes", json=body)
        return result

    def volumes(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", "/v1/volumes")
        return result

    def volume(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/v1/volumes/{quote(name, safe='')}")
        return result

    def remove_volume(self, name: str) -> None:
        self.request("DELETE", f"/v1/volumes/{quote(name, safe='')}")

    # ---- alerts ----------------------------------------------------------------------------
    def alerts(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/v1/alerts")
        return result

    def alert_rules(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", "/v1/alerts/rules")
        return result

    def apply_alert_rules(self, text: str) -> list[dict[str, Any]]:
        headers = {"Content-Type": "application/yaml"}
        result: list[dict[str, Any]] = self.request(
            "PUT", "/v1/alerts/rules", content=text.encode(), headers=headers
        )
        return result

    def delete_alert_rule(self, name: str) -> None:
        self.request("DELETE", f"/v1/alerts/rules/{quote(name, safe='')}")

    def notifiers(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", "/v1/alerts/notifiers")
        return result

    def set_notifier(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        path = f"/v1/alerts/notifiers/{quote(name, safe='')}"
        result: dict[str, Any] = self.request("PUT", path, json=body)
        return result

    def delete_notifier(self, name: str) -> None:
        self.request("DELETE", f"/v1/alerts/notifiers/{quote(name, safe='')}")

    def silences(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", "/v1/silences")
        return result

    def add_silence(self, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", "/v1/silences", json=body)
        return result

    def delete_silence(self, silence_id: str) -> None:
        self.request("DELETE", f"/v1/silences/{quote(silence_id, safe='')}")

    def tasks(self, service: str | None = None, node: str | None = None) -> list[dict[str, Any]]:
        params = {k: v for k, v in (("service", service), ("node", node)) if v}
        result: list[dict[str, Any]] = self.request("GET", "/v1/tasks", params=params)
        return result

    def task(self, task_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/v1/tasks/{task_id}")
        return result

    def nodes(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", "/v1/nodes")
        return result

    def drain(self, node: str, deadline: str | None, spot_notice: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"spot_notice": spot_notice}
        if deadline is not None:
            body["deadline"] = deadline
        result: dict[str, Any] = self.request("POST", f"/v1/nodes/{node}/drain", json=body)
        return result

    def eligible(self, node: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", f"/v1/nodes/{node}/eligible")
        return result

    def events(self, service: str | None = None) -> list[dict[str, Any]]:
        params = {"service": service} if service else {}
        result: list[dict[str, Any]] = self.request("GET", "/v1/events", params=params)
        return result

    def follow_events(
        self, service: str | None = None, after: int | None = None
    ) -> Iterator[dict[str, Any]]:
        params = {k: str(v) for k, v in (("service", service), ("after", after)) if v is not None}
        for line in self.stream_lines("/v1/events/stream", params):
            if line.startswith("data: "):
                yield json.loads(line[len("data: ") :])

    def logs(
        self, target: str, follow: bool, stream: str = "both", tail: int | None = None
    ) -> Iterator[str]:
        """Log lines of a service (prefixed by task id) or of one task (an id with a dash)."""
        params = {"follow": "true" if follow else "false", "stream": stream}
        if tail is not None:
            params["tail"] = str(tail)
        path = f"/v1/services/{target}/logs"
        try:
            self.service(target)
        except NotFound:
            path = f"/v1/tasks/{target}/logs"
        yield from self.stream_lines(path, params)

    # ---- KV store (Consul's /v1/kv) ------------------------------------------------------------
    def _kv(
        self, method: str, key: str, params: dict[str, str], **kwargs: Any
    ) -> tuple[httpx.Response | None, int]:
        """The response (None for a 404: no such key) and its X-Consul-Index."""
        try:
            response = self._http.request(
                method, f"/v1/kv/{quote(key, safe='/')}", params=params, **kwargs
            )
        except httpx.HTTPError as exc:
            raise Unavailable(f"cannot reach the moorage server at {self.address}: {exc}") from None
        index = int(response.headers.get("X-Consul-Index", "0") or 0)
        if response.status_code == 404 and not response.content:
            return None, index
        if response.status_code >= 400:
            raise _error(response)
        return response, index

    def kv_get(
        self, key: str, *, recurse: bool = False, index: int = 0, wait: float = 0
    ) -> tuple[list[dict[str, Any]], int]:
        """Consul entries of a key (or of every key under a prefix) and the index; [] if none.
        With index, block until that changes (or wait seconds pass)."""
        params = {"recurse": "true"} if recurse else {}
        if index:
            params |= {"index": str(index), "wait": f"{int(wait * 1000)}ms"}
        timeout = httpx.Timeout(wait + 30, connect=5)
        response, found = self._kv("GET", key, params, timeout=timeout)
        entries: list[dict[str, Any]] = response.json() if response is not None else []
        return entries, found

    def kv_keys(self, prefix: str, separator: str | None = "/") -> list[str]:
        params = {"keys": "true"} | ({"separator": separator} if separator else {})
        response, _ = self._kv("GET", prefix, params)
        keys: list[str] = response.json() if response is not None else []
        return keys

    def kv_put(
        self, key: str, value: bytes, cas: int | None = None, flags: int | None = None
    ) -> tuple[bool, int]:
        """Write a key (with cas: only if its ModifyIndex is cas; 0: only if absent)."""
        params = {k: str(v) for k, v in (("cas", cas), ("flags", flags)) if v is not None}
        response, index = self._kv("PUT", key, params, content=value)
        return response is not None and response.json() is True, index

    def kv_delete(
        self, key: str, recurse: bool = False, cas: int | None = None
    ) -> tuple[bool, int]:
        params = {"recurse": "true"} if recurse else {}
        if cas is not None:
            params["cas"] = str(cas)
        response, index = self._kv("DELETE", key, params)
        return response is not None and response.json() is True, index

    # ---- volume snapshots ----------------------------------------------------------------------
    def snapshot_volume(self, name: str, pause_timeout: float | None = None) -> dict[str, Any]:
        """Take a snapshot of a volume (blocks while the agent copies it)."""
        body = {"pause_timeout": pause_timeout} if pause_timeout is not None else None
        result: dict[str, Any] = self.request(
            "POST",
            f"/v1/volumes/{quote(name, safe='')}/snapshots",
            json=body,
            timeout=httpx.Timeout(None, connect=5),
        )
        return result

    def snapshots(self, volume: str | None = None) -> list[dict[str, Any]]:
        path = f"/v1/volumes/{quote(volume, safe='')}/snapshots" if volume else "/v1/snapshots"
        result: list[dict[str, Any]] = self.request("GET", path)
        return result

    def snapshot(self, volume: str, snapshot_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", _snapshot_path(volume, snapshot_id))
        return result

    def restore_snapshot(
        self, volume: str, snapshot_id: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """Restore a snapshot into a new volume (`body`: name, driver, node, size, access)."""
        result: dict[str, Any] = self.request(
            "POST",
            _snapshot_path(volume, snapshot_id) + "/restore",
            json=body,
            timeout=httpx.Timeout(None, connect=5),
        )
        return result

    def delete_snapshot(self, volume: str, snapshot_id: str) -> None:
        self.request("DELETE", _snapshot_path(volume, snapshot_id))

    def download_snapshot(self, volume: str, snapshot_id: str, dest: Path) -> int:
        """Stream a snapshot's archive into `dest` (written aside, then renamed); its size."""
        part = dest.with_name(dest.name + ".part")
        path = _snapshot_path(volume, snapshot_id) + "/archive"
        written = 0
        try:
            with self._http.stream("GET", path, timeout=httpx.Timeout(60, connect=5)) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error(response)
                with part.open("wb") as out:
                    for chunk in response.iter_bytes():
                        out.write(chunk)
                        written += len(chunk)
        except httpx.HTTPError as exc:
            part.unlink(missing_ok=True)
            raise Unavailable(f"lost the archive stream from {self.address}: {exc}") from None
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        part.replace(dest)
        return written

    # ---- metrics (docs/metrics.md; used by `moorage top` and `moorage metrics`) ----------
    def metrics_series(
        self, metric: str | None = None, matchers: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """The series the server knows (of `metric`, matching labels), each with its last
        sample: `{"metric", "labels", "last_ts", "last_value"}`."""
        params = {**(matchers or {}), **({"metric": metric} if metric else {})}
        result: list[dict[str, Any]] = self.request("GET", "/v1/metrics/series", params=params)
        return result

    def metrics_query(
        self,
        metric: str,
        matchers: dict[str, str] | None = None,
        *,
        start: str = "-1h",
        end: str | None = None,
        step: str | None = None,
        agg: str = "avg",
        by: str | None = None,
    ) -> list[dict[str, Any]]:
        """A range query: `[{"metric", "labels", "points": [[ts, value], ...]}]`."""
        params = {**(matchers or {}), "metric": metric, "from": start, "agg": agg}
        optional = {"to": end, "step": step, "by": by}
        params.update({k: v for k, v in optional.items() if v is not None})
        result: list[dict[str, Any]] = self.request("GET", "/v1/metrics/query", params=params)
        return result

    def metrics_ingest(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Send a `Batch` (`{"node", "points": [{metric, labels, ts, value}], "dropped"}`)
        as an agent does (needs MOORAGE_TOKEN, the join token): `{"received", "kept"}`."""
        result: dict[str, Any] = self.request("POST", "/v1/metrics/ingest", json=batch)
        return result


def _snapshot_path(volume: str, snapshot_id: str) -> str:
    return f"/v1/snapshots/{quote(volume, safe='')}/{quote(snapshot_id, safe='')}"
