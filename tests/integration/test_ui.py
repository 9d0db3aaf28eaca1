"""The web dashboard in a real browser: Debian's `chromium` (headless), driven by Selenium through
Debian's `chromedriver` (nothing is downloaded).

`moorage dev --demo` runs the demo services; the browser opens `/`, is sent to `/ui/`, sees web
and worker with their health, opens web's page and waits for its CPU chart to draw the samples
the agent collected (`--metrics-interval 1s`). Each page's screenshot is saved in the test's
`tmp_path` (`<pytest basetemp>/test_dashboard_*/screenshots/*.png`, printed at the end).

Without chromium the tests are skipped (loudly); CI sets MOORAGE_REQUIRE_BROWSER=1 and installs
it, so there they fail instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .cluster import MOORAGE, REPO, Proc, dev_command, free_port, wait_for

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def _require_browser() -> None:
    if CHROMIUM and CHROMEDRIVER:
        return
    why = (
        "the dashboard test needs Debian's chromium and chromium-driver"
        " (apt-get install chromium chromium-driver)"
    )
    if os.environ.get("MOORAGE_REQUIRE_BROWSER") == "1":
        pytest.fail(why)
    pytest.skip(f"SKIPPED LOUDLY: {why}")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root, in a container
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(
        service=Service(str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log")),
        options=options,
    )
    try:
        yield driver
    finally:
        driver.quit()


class Shots:
    """Full-page screenshots in `<tmp_path>/screenshots`."""

    def __init__(self, driver: Any, folder: Path) -> None:
        self.driver = driver
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def take(self, name: str) -> Path:
        height = self.driver.execute_script("return document.documentElement.scrollHeight")
        self.driver.set_window_size(1280, max(900, int(height) + 140))
        path = self.folder / f"{name}.png"
        assert self.driver.save_screenshot(str(path)), f"no screenshot {path}"
        self.driver.set_window_size(1280, 900)
        return path


def _dev(tmp_path: Path, port: int) -> Proc:
    args = dev_command(tmp_path / "data", port)
    help_text = subprocess.run([*MOORAGE, "dev", "--help"], capture_output=True, text=True).stdout
    if "--metrics-interval" in help_text:
        args += ["--metrics-interval", "1s"]  # samples within seconds, not every 10 s
    return Proc(args, tmp_path / "dev.log", cwd=REPO)


def _text(driver: Any, css: str) -> str:
    return str(driver.execute_script(f"return document.querySelector({css!r})?.innerText || ''"))


def _rows(driver: Any, section: str) -> dict[str, str]:
    """The rows of a page section's table, keyed by their first cell's text."""
    script = """
        const card = [...document.querySelectorAll('section.card')]
            .find((s) => s.querySelector('h2')?.textContent === arguments[0]);
        if (!card) return {};
        return Object.fromEntries([...card.querySelectorAll('tbody tr')]
            .map((tr) => [tr.cells[0].innerText.trim(), tr.innerText]));
    """
    return dict(driver.execute_script(script, section))


def _click_link(driver: Any, text: str) -> None:
    """Click the first link showing `text`, found and clicked in one step: the live tables are
    re-rendered when the data changes, so an element found earlier may be gone."""
    script = """
        const link = [...document.querySelectorAll('main a')]
            .find((a) => a.textContent === arguments[0]);
        if (link) link.click();
        return Boolean(link);
    """
    wait_for(lambda: driver.execute_script(script, text), 10, 0.1, what=f"a link {text!r}")


def _line_pixels(driver: Any, chart: str) -> int:
    """Pixels of the chart's canvas in a saturated colour: its series' lines and points (axes,
    grid and labels are grey or black)."""
    script = """
        const canvas = document.querySelector(`[data-chart="${arguments[0]}"] canvas`);
        if (!canvas || !canvas.width) return 0;
        const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        let n = 0;
        for (let i = 0; i < data.length; i += 4) {
            const [r, g, b, a] = [data[i], data[i + 1], data[i + 2], data[i + 3]];
            if (a > 200 && Math.max(r, g, b) - Math.min(r, g, b) > 80) n += 1;
        }
        return n;
    """
    return int(driver.execute_script(script, chart))


def _healthy(addr: str) -> bool:
    summaries = httpx.get(f"{addr}/v1/services", timeout=10).json()
    state = {s["name"]: (s["healthy"], s["desired"]) for s in summaries}
    return state == {"web": (3, 3), "worker": (1, 1)}


def test_dashboard_shows_demo_health_and_a_chart_with_data(tmp_path: Path, browser: Any) -> None:
    port = free_port()
    addr = f"http://127.0.0.1:{port}"
    shots = Shots(browser, tmp_path / "screenshots")
    dev = _dev(tmp_path, port).start(ready_timeout=60)
    try:
        wait_for(lambda: _healthy(addr), 60, 0.5, what="the demo services healthy")
        (node,) = [n["name"] for n in httpx.get(f"{addr}/v1/nodes", timeout=10).json()]
        httpx.put(f"{addr}/v1/kv/app/config/greeting", content=b"hello <b>dashboard</b>")

        browser.get(f"{addr}/")  # redirected to /ui/
        assert browser.current_url == f"{addr}/ui/"
        services = wait_for(
            lambda: (rows := _rows(browser, "Services")).keys() >= {"web", "worker"} and rows,
            30,
            0.2,
            what="the services table",
        )
        assert "healthy 3/3" in services["web"], services
        assert "healthy 1/1" in services["worker"], services
        assert "ready" in _rows(browser, "Nodes").get(node, ""), _rows(browser, "Nodes")
        shots.take("overview")

        _click_link(browser, "web")
        wait_for(lambda: "/ web" in _text(browser, "h1"), 10, 0.1, what="the web service page")
        tasks = wait_for(
            lambda: len(rows := _rows(browser, "Tasks")) == 3 and rows, 20, 0.2, what="3 tasks"
        )
        assert all("running" in row and "passing" in row for row in tasks.values()), tasks
        # The CPU chart: drawn by uPlot from /v1/metrics/query, at least one series with points.
        probe = httpx.get(f"{addr}/v1/metrics/query", params={"metric": "task_cpu_percent"})
        assert probe.status_code != 404, "the server does not serve /v1/metrics/query"
        cpu = wait_for(
            lambda: (
                (chart := browser.execute_script("return window.moorage.charts.cpu || null"))
                and chart["drawn"]
                and any(s["points"] >= 3 for s in chart["series"])
                and chart
            ),
            90,
            0.5,
            what="the CPU chart with data",
        )
        assert cpu["available"], cpu
        assert _line_pixels(browser, "cpu") > 20, "the CPU chart's canvas shows no line"
        memory = browser.execute_script("return window.moorage.charts.memory || null")
        assert memory and memory["drawn"], memory
        shots.take("service-web")

        _click_link(browser, node)
        wait_for(lambda: f"node {node}" in _text(browser, "h1"), 10, 0.1, what="the node page")
        wait_for(lambda: len(_rows(browser, "Tasks on this node")) == 4, 20, 0.2, what="4 tasks")
        shots.take("node")

        browser.get(f"{addr}/ui/#/volumes")
        wait_for(lambda: "worker-state" in _rows(browser, "Volumes"), 20, 0.2, what="the volume")
        shots.take("volumes")

        browser.get(f"{addr}/ui/#/kv/app/config/greeting")
        value = wait_for(lambda: _text(browser, "pre.value"), 20, 0.2, what="the KV value")
        assert value == "hello <b>dashboard</b>"  # shown as text, never parsed as HTML
        shots.take("kv-value")

        browser.get(f"{addr}/ui/#/events")
        wait_for(
            lambda: "service.deployed" in _text(browser, "table.events"), 20, 0.2, what="events"
        )
        httpx.post(f"{addr}/v1/services/web/scale", json={"count": 4}, timeout=10)
        wait_for(  # over the live stream, newest on top
            lambda: "service.scaled" in _text(browser, "table.events tbody tr:first-child"),
            20,
            0.2,
            what="the scale event at the top of the live list",
        )
        shots.take("events")
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not [e for e in errors if "favicon" not in e["message"]], errors
    except BaseException:
        with contextlib.suppress(Exception):
            shots.take("failure")  # the page as it was when the test gave up
        raise
    finally:
        code = dev.stop()
        print(f"\ndashboard screenshots: {shots.folder}")
    assert code == 0, dev.output()


def _acl_server(tmp_path: Path) -> tuple[Proc, str]:
    port = free_port()
    args = [*MOORAGE, "server", "--acl", "--data-dir", str(tmp_path / "server")]
    args += ["--http-addr", f"127.0.0.1:{port}", "--dns-addr", f"127.0.0.1:{free_port()}"]
    args += ["--cluster-addr", f"127.0.0.1:{free_port()}"]
    return Proc(args, tmp_path / "server.log", cwd=REPO), f"http://127.0.0.1:{port}"


def test_dashboard_files_are_served_without_a_token(tmp_path: Path) -> None:
    """No browser needed: the static files are open under --acl, and only they are."""
    proc, addr = _acl_server(tmp_path)
    server = proc.start(ready_timeout=30)
    try:
        with httpx.Client(base_url=addr, timeout=10) as http:
            root = http.get("/")
            assert (root.status_code, root.headers["Location"]) == (302, "/ui/")
            index = http.get("/ui/")
            assert index.status_code == 200 and 'src="static/js/main.js"' in index.text
            assert "script-src 'self'" in index.headers["Content-Security-Policy"]
            for path in ("js/main.js", "js/pages/service.js", "vendor/uPlot.iife.min.js"):
                asset = http.get(f"/ui/static/{path}")
                assert asset.status_code == 200, path
                assert "javascript" in asset.headers["Content-Type"], asset.headers
            assert http.get("/ui/static/app.css").headers["Content-Type"].startswith("text/css")
            assert http.get("/ui/static/nothing.js").status_code == 404
            escape = http.get("/ui/static/..%2F..%2Fserver%2Fapp.py")
            assert escape.status_code in (403, 404), escape.text
            assert http.get("/v1/services").status_code == 403  # the data still needs a token
    finally:
        code = server.stop()
    assert code == 0, server.output()


def test_dashboard_asks_for_a_token_when_acls_deny(tmp_path: Path, browser: Any) -> None:
    shots = Shots(browser, tmp_path / "screenshots")
    proc, addr = _acl_server(tmp_path)
    server = proc.start(ready_timeout=30)
    try:
        secret = (tmp_path / "server" / "acl-bootstrap-token").read_text().strip()
        browser.get(f"{addr}/ui/")  # the page itself needs no token; its API calls do
        reason = wait_for(
            lambda: browser.execute_script(
                "const d = document.getElementById('token-dialog');"
                "return d.open && document.getElementById('token-reason').textContent"
            ),
            20,
            0.1,
            what="the token prompt after a 403",
        )
        assert "permission denied" in reason, reason
        shots.take("acl-token-prompt")

        browser.find_element("id", "token-input").send_keys(secret)
        browser.find_element("css selector", "#token-dialog button[value=save]").click()
        wait_for(
            lambda: "No node has joined yet." in _text(browser, "main"), 20, 0.1, what="overview"
        )
        assert browser.execute_script("return localStorage.getItem('moorage.token')") == secret
        assert "permission denied" not in _text(browser, "main")
        assert not browser.execute_script("return document.getElementById('token-dialog').open")
        shots.take("acl-with-token")
    finally:
        code = server.stop()
        print(f"\ndashboard screenshots: {shots.folder}")
    assert code == 0, server.output()
