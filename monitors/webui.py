"""The live memory view in Locust's web UI.

Two pieces, both installed by :class:`MemoryView` (which
:class:`monitors.monitor.MemoryMonitor` creates only when
``environment.web_ui`` exists, i.e. from the locustfile's ``init`` listener):

- a **Memory** tab through Locust's supported extension points: the
  ``extended_tabs`` / ``extended_tables`` template args and an
  ``extended_stats`` entry added to every ``/stats/requests`` answer (the UI
  polls it every 2 s and shows the rows under the tab's key);
- a **chart page** on the UI's Flask app: ``/memstress/memory`` (HTML with
  inline JS drawing SVG, no CDN) polling ``/memstress/samples`` (JSON), plus
  ``/memstress/samples.csv`` (the run's ``memory_samples.csv``).
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from flask import Response, request, send_file

from monitors.leak import MB
from monitors.page import PAGE_HTML

if TYPE_CHECKING:
    from monitors.monitor import MemoryMonitor, Point

TAB_KEY = "memstress_memory"
MAX_POINTS = 3000
"""Most points one /memstress/samples answer carries (older ones are thinned)."""


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value / MB:.1f} MB"


def summary(monitor: MemoryMonitor) -> dict[str, Any]:
    """The figures the tab and the page head show, JSON-ready."""
    row = monitor.latest
    verdict = monitor.detector.verdict
    rss = row.get("rss_bytes")
    budget = row.get("budget_bytes")
    return {
        "rss_bytes": rss,
        "peak_rss_bytes": monitor.peak_rss,
        "rss_source": row.get("rss_source"),
        "budget_bytes": budget,
        "pressure": row.get("pressure"),
        "strategy": row.get("strategy"),
        "host_percent": row.get("host_percent"),
        "leak_slope_mb_min": verdict.slope_mb_min,
        "leak_state": verdict.state,
        "stage": monitor.context.stage.name,
        "samples": monitor.samples_taken,
        "stop_reason": monitor.context.stop_reason,
        "scenario": monitor.context.scenario,
    }


def tab_rows(s: dict[str, Any]) -> list[dict[str, str]]:
    """Rows of the Memory tab: measure, value."""
    slope = s["leak_slope_mb_min"]
    verdict = {"warmup": "warming up", "clear": "no leak", "leak": "LEAK"}.get(
        s["leak_state"], s["leak_state"]
    )
    pressure = s["pressure"]
    rows = [
        ("Stage", s["stage"] or "-"),
        ("Current RSS", _mb(s["rss_bytes"])),
        ("Peak RSS", _mb(s["peak_rss_bytes"])),
        ("Pressure", "-" if pressure is None else f"{pressure:.1f} %"),
        ("Strategy", s["strategy"] or "-"),
        ("Leak slope", "-" if slope is None else f"{slope:+.2f} MB/min"),
        ("Leak verdict", verdict),
        ("Host memory", "-" if s["host_percent"] is None else f"{s['host_percent']:.1f} %"),
        ("Samples", str(s["samples"])),
        ("Live chart", "/memstress/memory"),
    ]
    if s["stop_reason"]:
        rows.append(("Stopped", s["stop_reason"]))
    return [{"name": k, "value": v} for k, v in rows]


def stage_bands(points: list[Point]) -> list[dict[str, Any]]:
    """Runs of consecutive samples in the same stage: name, first and last elapsed second."""
    bands: list[dict[str, Any]] = []
    for p in points:
        if bands and bands[-1]["name"] == p.stage:
            bands[-1]["end"] = p.elapsed_s
        else:
            bands.append({"name": p.stage, "start": p.elapsed_s, "end": p.elapsed_s})
    return bands


def _num(v: float | None, digits: int) -> float | None:
    return None if v is None or not math.isfinite(v) else round(v, digits)


def samples_payload(monitor: MemoryMonitor, since: float = -1.0) -> dict[str, Any]:
    """Points after ``since`` (elapsed seconds), stage bands and the summary."""
    history = list(monitor.history)
    new = [p for p in history if round(p.elapsed_s, 3) > since]  # as the client saw them
    if len(new) > MAX_POINTS:
        step = math.ceil(len(new) / MAX_POINTS)
        new = new[-1::-step][::-1]
    return {
        "summary": summary(monitor),
        "interval_s": monitor.interval,
        "columns": ["elapsed_s", "rss_mb", "pressure", "host_percent", "leak_slope_mb_min"],
        "points": [
            [
                round(p.elapsed_s, 3),
                _num(None if p.rss_bytes is None else p.rss_bytes / MB, 3),
                _num(p.pressure, 2),
                _num(p.host_percent, 2),
                _num(p.leak_slope_mb_min, 4),
            ]
            for p in new
        ],
        "stages": stage_bands(history),
    }


class MemoryView:
    """Installs the Memory tab and the chart page on ``environment.web_ui``."""

    def __init__(self, monitor: MemoryMonitor) -> None:
        self.monitor = monitor
        web_ui = monitor.environment.web_ui
        assert web_ui is not None
        args = web_ui.template_args
        args.setdefault("extended_tabs", []).append({"title": "Memory", "key": TAB_KEY})
        args.setdefault("extended_tables", []).append(
            {
                "key": TAB_KEY,
                "structure": [
                    {"key": "name", "title": "Measure"},
                    {"key": "value", "title": "Value"},
                ],
            }
        )
        args.setdefault("extended_csv_files", []).append(
            {"href": "/memstress/samples.csv", "title": "Download memory samples CSV"}
        )
        app = web_ui.app
        assert app is not None
        auth = web_ui.auth_required_if_enabled
        app.after_request(self._extend_stats)
        app.add_url_rule("/memstress/memory", "memstress_memory", auth(self.page))
        app.add_url_rule("/memstress/samples", "memstress_samples", auth(self.samples))
        app.add_url_rule("/memstress/samples.csv", "memstress_samples_csv", auth(self.csv))

    def _extend_stats(self, response: Response) -> Response:
        if not request.path.endswith("/stats/requests") or response.status_code != 200:
            return response
        body = response.get_json(silent=True)
        if not isinstance(body, dict):
            return response
        rows = tab_rows(summary(self.monitor))
        body["extended_stats"] = [{"key": TAB_KEY, "data": rows}]
        response.set_data(json.dumps(body))
        return response

    def page(self) -> Response:
        return Response(PAGE_HTML, mimetype="text/html")

    def samples(self) -> Response:
        try:
            since = float(request.args.get("since", "-1"))
        except ValueError:
            return Response(
                json.dumps({"error": "since: not a number (valid: elapsed seconds, e.g. 12.5)"}),
                status=400,
                mimetype="application/json",
            )
        return Response(
            json.dumps(samples_payload(self.monitor, since)), mimetype="application/json"
        )

    def csv(self) -> Response:
        run_dir = self.monitor.context.run_dir
        path = None if run_dir is None else run_dir / "memory_samples.csv"
        if path is None or not path.exists():
            return Response("no memory_samples.csv yet\n", status=404, mimetype="text/plain")
        return send_file(path, mimetype="text/csv", as_attachment=True)
