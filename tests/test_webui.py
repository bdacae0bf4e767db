"""The live memory view in Locust's web UI: the Memory tab, the JSON route, the chart page.

A real Locust process with its web UI (``--autostart``) against the real
service; the chart page is loaded in headless Chromium, which runs its
JavaScript, and the rendered DOM must show the values. Without a Chromium on
the machine the two browser tests skip (``apt-get install chromium``), except
in CI (``CI`` set), where ``make test`` installs it and they fail without it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from memstress.runner.service import ManagedService
from tests.conftest import free_port
from tests.locust_helpers import LocustRun, start_locust

pytestmark = pytest.mark.slow

CHROMIUM = next(
    (p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p),
    None,
)
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@dataclass
class WebRun:
    run: LocustRun
    url: str

    def get(self, path: str) -> requests.Response:
        return requests.get(f"{self.url}{path}", timeout=10)


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory, service: ManagedService) -> Iterator[WebRun]:
    base = tmp_path_factory.mktemp("webui")
    port = free_port()
    run = start_locust(
        base / "run",
        "--web-host",
        "127.0.0.1",
        "--web-port",
        str(port),
        "--autostart",
        "--scenario",
        "baseline",
        "--duration",
        "60",
        "--monitor-interval",
        "0.2",
        host=service.url,
    )
    web = WebRun(run, f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 40
        while True:
            assert run.proc.poll() is None, run.log()[-3000:]
            assert time.monotonic() < deadline, run.log()[-3000:]
            try:
                if len(web.get("/memstress/samples").json()["points"]) >= 10:
                    break
            except (requests.RequestException, ValueError, KeyError):
                pass
            time.sleep(0.3)
        yield web
    finally:
        run.kill()


def test_memory_tab_is_declared_in_the_template_args(web: WebRun) -> None:
    html = web.get("/").text
    match = re.search(r"templateArgs = (\{.*?\})\s*</script>", html, re.S)
    assert match, html[:2000]
    args = json.loads(match.group(1))
    assert {"title": "Memory", "key": "memstress_memory"} in args["extended_tabs"]
    table = next(t for t in args["extended_tables"] if t["key"] == "memstress_memory")
    assert [c["key"] for c in table["structure"]] == ["name", "value"]


def test_stats_requests_carries_the_memory_rows(web: WebRun) -> None:
    body = web.get("/stats/requests").json()
    ext = {e["key"]: e["data"] for e in body["extended_stats"]}
    rows = {r["name"]: r["value"] for r in ext["memstress_memory"]}
    assert re.fullmatch(r"\d+\.\d MB", rows["Current RSS"]), rows
    assert re.fullmatch(r"\d+\.\d MB", rows["Peak RSS"]), rows
    assert rows["Pressure"].endswith(" %") and rows["Strategy"] in ("normal", "aggressive")
    assert rows["Leak verdict"] in ("warming up", "no leak")
    assert rows["Stage"] in ("warmup", "steady")
    assert body["stats"], "Locust's own figures are still there"


def test_samples_route_and_csv(web: WebRun) -> None:
    data = web.get("/memstress/samples").json()
    assert data["columns"][:2] == ["elapsed_s", "rss_mb"]
    first = data["points"][0]
    assert first[1] > 10  # MB
    assert data["stages"][0]["name"] == "warmup"
    later = web.get(f"/memstress/samples?since={data['points'][-1][0]}").json()
    assert all(p[0] > data["points"][-1][0] for p in later["points"])
    assert web.get("/memstress/samples?since=soon").status_code == 400
    csv_text = web.get("/memstress/samples.csv").text
    assert csv_text.startswith("time,elapsed_s,stage,users,rss_bytes")


def chromium_dom(url: str, profile: Path) -> str:
    assert CHROMIUM is not None
    cmd = [
        CHROMIUM,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        "--virtual-time-budget=8000",
        "--dump-dom",
        url,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def text_of(dom: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', dom)
    assert match, f"#{element_id} not in the page"
    return match.group(1)


def need_chromium() -> str:
    """The browser's path; outside CI a missing one skips, in CI it fails (make test
    installs it there, so a missing browser is a broken install, not a choice)."""
    if CHROMIUM is None:
        why = "no chromium on this machine (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"{why}; CI is set, where `make browser` installs it")
        pytest.skip(why)
    return CHROMIUM


def test_chart_page_renders_the_values_in_a_browser(web: WebRun, tmp_path: Path) -> None:
    need_chromium()
    dom = chromium_dom(f"{web.url}/memstress/memory", tmp_path / "profile")
    assert re.fullmatch(r"\d+\.\d MB", text_of(dom, "rss-now")), dom[:3000]
    assert re.fullmatch(r"\d+\.\d MB", text_of(dom, "peak-now"))
    assert text_of(dom, "pressure-now").endswith(" %")
    assert text_of(dom, "strategy-now") in ("normal", "aggressive")
    assert text_of(dom, "verdict-now") in ("warming up", "no leak")
    assert text_of(dom, "stage-now") in ("warmup", "steady")
    assert re.search(r'id="rss-line"', dom) and re.search(r'd="M[\d.]+,[\d.]+ L', dom)
    assert "<rect" in dom, "stage bands"


def test_memory_tab_renders_in_locusts_own_ui(web: WebRun, tmp_path: Path) -> None:
    need_chromium()
    dom = chromium_dom(f"{web.url}/?tab=memstress_memory", tmp_path / "profile")
    assert "Current RSS" in dom and "Leak verdict" in dom, dom[-3000:]
