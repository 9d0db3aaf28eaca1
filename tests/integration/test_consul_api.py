"""The Consul-compatible HTTP subset, against a real server and agent: catalog and health
answers with Consul's field names, X-Consul-Index everywhere, blocking queries with Go
durations, and parameters moorage does not implement refused by name."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from .cluster import Cluster, free_port, http_spec, wait_for

pytestmark = pytest.mark.integration

CHECK = "health: {http: /health, port: http, interval: 1s, timeout: 1s, retries: 1}"
DISCOVERY = "discovery: {tags: [v1, primary], meta: {team: payments}}"


def deploy_web(cluster: Cluster, count: int = 2) -> list[dict[str, Any]]:
    cluster.deploy(http_spec(count=count, container=CHECK, extra=DISCOVERY))
    cluster.wait_running("web", count)
    wait_for(lambda: len(cluster.healthy("web")) == count, 20, 0.1, "healthy")
    return cluster.running("web")


def test_catalog_and_health_answer_as_consul_does(cluster: Cluster) -> None:
    tasks = deploy_web(cluster)
    services = cluster.http.get("/v1/catalog/services")
    assert services.json() == {"web": ["primary", "v1"]}
    assert int(services.headers["X-Consul-Index"]) >= 1

    health = cluster.http.get("/v1/health/service/web", params={"passing": "1"})
    entries = health.json()
    assert len(entries) == 2
    by_id = {e["Service"]["ID"]: e for e in entries}
    assert set(by_id) == {t["id"] for t in tasks}
    for task in tasks:
        entry = by_id[task["id"]]
        assert entry["Node"]["Node"] == "n1" and entry["Node"]["Datacenter"] == "dc1"
        assert entry["Service"]["Service"] == "web"
        assert entry["Service"]["Port"] == task["ports"]["http"]
        assert entry["Service"]["Address"] == "127.0.0.1"
        assert entry["Service"]["Tags"] == ["v1", "primary"]
        assert entry["Service"]["Meta"]["team"] == "payments"
        statuses = {c["CheckID"]: c["Status"] for c in entry["Checks"]}
        assert statuses["serfHealth"] == "passing" and len(statuses) == 2
        assert set(entry["Checks"][1]) >= {"Node", "CheckID", "Name", "Status", "Output"}

    catalog = cluster.http.get("/v1/catalog/service/web").json()
    assert sorted(e["ServicePort"] for e in catalog) == sorted(t["ports"]["http"] for t in tasks)
    assert {e["ServiceName"] for e in catalog} == {"web"}
    assert all(e["Node"] == "n1" and e["Address"] == "127.0.0.1" for e in catalog)

    assert len(cluster.http.get("/v1/health/service/web?tag=v1&tag=primary").json()) == 2
    assert cluster.http.get("/v1/health/service/web?tag=v2").json() == []
    assert len(cluster.http.get("/v1/health/service/web?node-meta=zone:a").json()) == 2
    assert cluster.http.get("/v1/health/service/web?node-meta=zone:b").json() == []
    assert cluster.http.get("/v1/health/service/nope").json() == []
    nodes = cluster.http.get("/v1/catalog/nodes").json()
    assert [(n["Node"], n["Meta"]["zone"]) for n in nodes] == [("n1", "a")]
    assert cluster.http.get("/v1/agent/self").json()["Config"]["Datacenter"] == "dc1"
    assert isinstance(cluster.http.get("/v1/status/leader").json(), str)


def test_a_critical_instance_is_listed_but_not_passing(cluster: Cluster, tmp_path: Path) -> None:
    flag = tmp_path / "fail"
    extra = f"{DISCOVERY}\ndeployment: {{min_healthy_time: 0s}}"
    spec = http_spec(count=2, container=CHECK, extra=extra).replace(
        "    stop_timeout: 3s\n", f"    stop_timeout: 3s\n    env: {{FAIL_FILE: {flag}}}\n"
    )
    cluster.deploy(spec)
    cluster.wait_running("web", 2)
    wait_for(lambda: len(cluster.healthy("web")) == 2, 20, 0.1)
    # the deployment is over: failing checks from now on only change health, not the tasks
    wait_for(lambda: cluster.cli_json("deployments", "web")[0]["status"] == "successful", 20)
    flag.touch()

    def critical() -> Any:
        entries = cluster.http.get("/v1/health/service/web").json()
        states = [c["Status"] for e in entries for c in e["Checks"] if c["ServiceID"]]
        return states == ["critical", "critical"]

    wait_for(critical, 10, 0.1, "both critical")
    assert cluster.http.get("/v1/health/service/web?passing").json() == []
    assert len(cluster.http.get("/v1/health/service/web?passing=false").json()) == 2


def test_unsupported_parameters_and_other_datacenters_are_refused_by_name(
    cluster: Cluster,
) -> None:
    for path in ("/v1/health/service/web", "/v1/catalog/services", "/v1/catalog/nodes"):
        refused = cluster.http.get(path, params={"filter": 'Service.Tags contains "v1"'})
        assert refused.status_code == 400, path
        assert "filter" in refused.text and int(refused.headers["X-Consul-Index"]) >= 1
    other = cluster.http.get("/v1/catalog/services", params={"dc": "eu-west"})
    assert other.status_code == 400 and "eu-west" in other.text
    assert cluster.http.get("/v1/catalog/services", params={"dc": "dc1", "stale": ""}).is_success
    missing = cluster.http.get("/v1/no/such/endpoint")
    assert missing.status_code == 404 and int(missing.headers["X-Consul-Index"]) >= 1
    bad_wait = cluster.http.get("/v1/catalog/services", params={"index": "1", "wait": "5 minutes"})
    assert bad_wait.status_code == 400 and "wait" in bad_wait.text


def test_blocking_queries_take_go_durations_and_wake_on_a_change(cluster: Cluster) -> None:
    deploy_web(cluster)
    first = cluster.http.get("/v1/health/service/web")
    index = int(first.headers["X-Consul-Index"])
    started = time.monotonic()
    quiet = cluster.http.get("/v1/health/service/web", params={"index": index, "wait": "300ms"})
    took = time.monotonic() - started
    assert quiet.headers["X-Consul-Index"] == str(index)
    assert 0.25 <= took < 3, took

    answer: dict[str, Any] = {}

    def blocked() -> None:
        with httpx.Client(base_url=cluster.addr, timeout=60) as client:
            started = time.monotonic()
            response = client.get(
                "/v1/health/service/web", params={"index": index, "wait": "120000ms"}
            )
            answer.update(took=time.monotonic() - started, response=response)

    waiter = threading.Thread(target=blocked)
    waiter.start()
    time.sleep(0.5)
    assert not answer
    cluster.cli("scale", "web", "3")
    waiter.join(60)
    assert answer["took"] < 30
    assert int(answer["response"].headers["X-Consul-Index"]) > index


def test_a_prometheus_scraper_with_consul_sd_lists_the_instances_as_targets(
    cluster: Cluster, tmp_path: Path
) -> None:
    tasks = deploy_web(cluster)
    server = cluster.addr.removeprefix("http://")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        f"""
global: {{scrape_interval: 1s}}
scrape_configs:
  - job_name: moorage
    consul_sd_configs: [{{server: "{server}", services: [web]}}]
    relabel_configs:
      - {{source_labels: [__meta_consul_tags], target_label: tags}}
"""
    )
    port = free_port()
    log = (tmp_path / "scraper.log").open("wb")
    # Debian builds Prometheus without consul_sd_configs ("Disable Consul SD until its Debian
    # package is back in shape"), so the scraper is Debian's VictoriaMetrics, which reads the
    # same Prometheus scrape_configs with its own Consul SD client and serves the same
    # /api/v1/targets.
    binary = shutil.which("victoria-metrics")
    assert binary is not None, "apt-get install victoria-metrics (.ci/run does)"
    prometheus = subprocess.Popen(
        [
            binary,
            f"-promscrape.config={config}",
            f"-storageDataPath={tmp_path / 'data'}",
            f"-httpListenAddr=127.0.0.1:{port}",
            "-promscrape.consulSDCheckInterval=1s",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:

        def targets() -> list[dict[str, Any]] | None:
            if prometheus.poll() is not None:
                raise AssertionError((tmp_path / "scraper.log").read_text())
            try:
                body = httpx.get(f"http://127.0.0.1:{port}/api/v1/targets", timeout=2).json()
            except httpx.HTTPError:
                return None
            active = body["data"]["activeTargets"]
            return active if len(active) == 2 else None

        active = wait_for(targets, 60, 0.5, "scrape targets")
        wanted = {f"127.0.0.1:{t['ports']['http']}" for t in tasks}
        assert {t["labels"]["instance"] for t in active} == wanted
        assert all(t["labels"]["tags"] == ",v1,primary," for t in active)
        assert all(t["discoveredLabels"]["__meta_consul_service"] == "web" for t in active)
    finally:
        prometheus.terminate()
        prometheus.wait(20)
        log.close()
