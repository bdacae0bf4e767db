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

from memstress.common.units import MB
from memstress.monitors.page import PAGE_HTML

if TYPE_CHECKING:
    from locust.web import WebUI

    from memstress.monitors.monitor import MemoryMonitor
    from memstress.monitors.snapshot import Point, Snapshot

TAB_KEY = "memstress_memory"
MAX_POINTS = 3000
"""Most points one /memstress/samples answer carries (older ones are thinned)."""


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value / MB:.1f} MB"


SUMMARY_FIELDS = (
    "rss_bytes",
    "peak_rss_bytes",
    "rss_source",
    "budget_bytes",
    "pressure",
    "strategy",
    "host_percent",
    "leak_slope_mb_min",
    "leak_state",
    "stage",
    "samples",
    "stop_reason",
    "scenario",
)


def summary(snap: Snapshot) -> dict[str, Any]:
    """The figures the tab and the page head show, JSON-ready."""
    return {k: getattr(snap, k) for k in SUMMARY_FIELDS}


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


def samples_payload(snap: Snapshot, history: list[Point], since: float = -1.0) -> dict[str, Any]:
    """Points after ``since`` (elapsed seconds), stage bands and the summary."""
    new = [p for p in history if round(p.elapsed_s, 3) > since]  # as the client saw them
    if len(new) > MAX_POINTS:
        step = math.ceil(len(new) / MAX_POINTS)
        new = new[-1::-step][::-1]
    return {
        "summary": summary(snap),
        "interval_s": snap.interval_s,
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
    """Installs the Memory tab and the chart page on Locust's web UI; it reads the
    monitor's :meth:`~monitors.monitor.MemoryMonitor.snapshot` and ``points()``."""

    def __init__(self, web_ui: WebUI, monitor: MemoryMonitor) -> None:
        self.monitor = monitor
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
        rows = tab_rows(summary(self.monitor.snapshot()))
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
        payload = samples_payload(self.monitor.snapshot(), self.monitor.points(), since)
        return Response(json.dumps(payload), mimetype="application/json")

    def csv(self) -> Response:
        path = self.monitor.snapshot().samples_csv
        if path is None or not path.exists():
            return Response("no memory_samples.csv yet\n", status=404, mimetype="text/plain")
        return send_file(path, mimetype="text/csv", as_attachment=True)
