"""Requests and response times, from locust.json, the stats CSV or the stats history."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from memstress.reports.collect import CYCLE_REQUEST, SHED_TYPE, RunData
from memstress.reports.metrics.base import (
    col,
    finite,
    pct,
    whole,
)


@dataclass
class Latency:
    """Response times of one request name, seconds."""

    count: int = 0
    mean_s: float | None = None
    p50_s: float | None = None
    p95_s: float | None = None
    p99_s: float | None = None
    max_s: float | None = None
    source: str = "none"


@dataclass
class RequestMetrics:
    requests: int | None = None
    failures: int | None = None
    error_rate_pct: float | None = None
    shed: int | None = None
    shed_pct: float | None = None
    exceptions: int | None = None
    rps: float | None = None
    peak_users: int | None = None
    first_shed_s: float | None = None  # run time of the first shed answer (stats history)
    source: str = "none"
    top_failures: list[dict[str, Any]] = field(default_factory=list)


def locust_percentile(hist: dict[float, int], num_requests: int, percent: float) -> float:
    """Locust's own ``calculate_response_time_percentile`` (ms buckets, same rounding)."""
    wanted = int(num_requests * percent)
    processed = 0
    for rt in sorted(hist, reverse=True):
        processed += hist[rt]
        if num_requests - processed <= wanted:
            return rt
    return 0.0


def entries(data: RunData, name: str | None, shed: bool) -> list[dict[str, Any]]:
    out = []
    for e in data.locust_json or []:
        is_shed = str(e.get("method", "")) == SHED_TYPE
        if is_shed == shed and (name is None or e.get("name") == name):
            out.append(e)
    return out


def latency_from_json(entries: list[dict[str, Any]]) -> Latency:
    count = sum(int(e.get("num_requests") or 0) for e in entries)
    if not count:
        return Latency(source="locust.json")
    total_ms = sum(float(e.get("total_response_time") or 0.0) for e in entries)
    hist: dict[float, int] = {}
    for e in entries:
        for k, v in (e.get("response_times") or {}).items():
            key = finite(k)
            if key is not None:
                hist[key] = hist.get(key, 0) + int(v)
    maxes = [finite(e.get("max_response_time")) for e in entries]
    mx = max((m for m in maxes if m is not None), default=None)
    return Latency(
        count=count,
        mean_s=total_ms / count / 1000.0,
        p50_s=locust_percentile(hist, count, 0.50) / 1000.0,
        p95_s=locust_percentile(hist, count, 0.95) / 1000.0,
        p99_s=locust_percentile(hist, count, 0.99) / 1000.0,
        max_s=None if mx is None else mx / 1000.0,
        source="locust.json",
    )


def _stats_rows(data: RunData, name: str | None, shed: bool) -> pd.DataFrame:
    st = data.stats
    rows = st[(st["Name"] != "Aggregated") | (st["Type"] != "")]
    rows = rows[(rows["Type"] == SHED_TYPE) == shed]
    return rows if name is None else rows[rows["Name"] == name]


def latency_from_stats(rows: pd.DataFrame) -> Latency:
    if rows.empty:
        return Latency(source="locust_stats.csv")
    # several methods under one name: keep the busiest
    r = rows.iloc[int(np.argmax(rows["Request Count"].fillna(0).to_numpy(dtype=float)))]

    def s(col: str) -> float | None:
        v = finite(r[col])
        return None if v is None else v / 1000.0

    return Latency(
        count=whole(r["Request Count"]) or 0,
        mean_s=s("Average Response Time"),
        p50_s=s("50%"),
        p95_s=s("95%"),
        p99_s=s("99%"),
        max_s=s("Max Response Time"),
        source="locust_stats.csv",
    )


def request_latency(data: RunData, name: str) -> Latency:
    """Latency of one request name: exact from locust.json, else the stats CSV snapshot."""
    if data.locust_json:
        return latency_from_json(entries(data, name, shed=False))
    return latency_from_stats(_stats_rows(data, name, shed=False))


def aggregated_latency(data: RunData) -> Latency:
    """Latency over every non-shed request (for a Locust export with no cycle requests)."""
    if data.locust_json:
        return latency_from_json(entries(data, None, shed=False))
    st = data.stats
    return latency_from_stats(st[(st["Name"] == "Aggregated") & (st["Type"] == "")])


def request_metrics(data: RunData) -> RequestMetrics:
    r = RequestMetrics()
    if data.locust_json is not None and data.locust_json:
        ok = entries(data, None, shed=False)
        shed = entries(data, None, shed=True)
        r.requests = sum(int(e.get("num_requests") or 0) for e in ok)
        r.failures = sum(int(e.get("num_failures") or 0) for e in ok)
        r.shed = sum(int(e.get("num_requests") or 0) for e in shed)
        firsts = [v for e in ok if (v := finite(e.get("start_time"))) is not None]
        lasts = [v for e in ok if (v := finite(e.get("last_request_timestamp"))) is not None]
        if firsts and lasts and max(lasts) > min(firsts):
            r.rps = r.requests / (max(lasts) - min(firsts))
        r.source = "locust.json"
    elif not data.stats.empty:
        ok_rows = _stats_rows(data, None, shed=False)
        shed_rows = _stats_rows(data, None, shed=True)
        r.requests = whole(ok_rows["Request Count"].sum()) or 0
        r.failures = whole(ok_rows["Failure Count"].sum()) or 0
        r.shed = whole(shed_rows["Request Count"].sum()) or 0
        r.rps = finite(ok_rows["Requests/s"].sum())
        r.source = "locust_stats.csv"
    if r.requests is not None:
        r.error_rate_pct = pct(float(r.failures or 0), float(r.requests))
        r.shed_pct = pct(float(r.shed or 0), float(r.requests))
        if r.requests == 0:
            r.error_rate_pct = r.shed_pct = None
    if not data.exceptions.empty or any(
        s.name.endswith("_exceptions.csv") and s.state == "ok" for s in data.inputs
    ):
        r.exceptions = whole(data.exceptions["Count"].sum()) or 0
    users = data.history["User Count"].dropna()
    if len(users):
        r.peak_users = whole(users.max())
    elif len(u := col(data.samples, "users").dropna()):
        r.peak_users = whole(u.max())
    f = data.failures
    if not f.empty:
        top = f.sort_values("Occurrences", ascending=False, kind="stable").head(5)
        r.top_failures = [
            {
                "method": str(x["Method"]),
                "name": str(x["Name"]),
                "error": str(x["Error"])[:300],
                "occurrences": whole(x["Occurrences"]) or 0,
            }
            for _, x in top.iterrows()
        ]
    return r


class HistoryCounters:
    """Cumulative Locust counters per request (from ``_stats_history.csv``), read at any time."""

    def __init__(self, history: pd.DataFrame) -> None:
        h = history
        per_name = h[h["Name"] != "Aggregated"]
        self.per_name = not per_name.empty
        if not self.per_name:
            per_name = h[h["Name"] == "Aggregated"]
        self.groups: dict[tuple[str, str], tuple[np.ndarray, ...]] = {}
        for (typ, name), g in per_name.groupby(["Type", "Name"], sort=False):
            self.groups[(str(typ), str(name))] = (
                g["Timestamp"].to_numpy(dtype=float),
                g["Total Request Count"].fillna(0).to_numpy(dtype=float),
                g["Total Failure Count"].fillna(0).to_numpy(dtype=float),
                (g["Total Request Count"] * g["Total Average Response Time"])
                .fillna(0)
                .to_numpy(dtype=float),
            )
        self.history = h

    def at(self, key: tuple[str, str], t: float) -> tuple[float, float, float]:
        ts, req, fail, total_ms = self.groups[key]
        i = int(np.searchsorted(ts, t, side="right")) - 1
        if i < 0:
            return 0.0, 0.0, 0.0
        return float(req[i]), float(fail[i]), float(total_ms[i])

    def delta(self, key: tuple[str, str], a: float, b: float) -> tuple[float, float, float]:
        r0, f0, s0 = self.at(key, a)
        r1, f1, s1 = self.at(key, b)
        return max(0.0, r1 - r0), max(0.0, f1 - f0), max(0.0, s1 - s0)

    def window_latency(self, name: str, a: float, b: float) -> Latency:
        """Cycle latency in [a, b): exact count and mean from the cumulative totals; the
        percentiles are the median of Locust's rolling-window percentiles in the window."""
        keys = [k for k in self.groups if k[1] == name and k[0] != SHED_TYPE]
        if not keys:
            return Latency(source="none")
        n = total = 0.0
        for k in keys:
            r, _, s = self.delta(k, a, b)
            n += r
            total += s
        if n <= 0:
            return Latency(source="locust_stats_history.csv")
        h = self.history
        rows = h[(h["Name"] == name) & (h["Type"] != SHED_TYPE)]
        rows = rows[(rows["Timestamp"] >= a) & (rows["Timestamp"] < b)]

        def p(col: str) -> float | None:
            v = rows[col]
            v = v[v > 0]
            return float(v.median()) / 1000.0 if len(v) else None

        mx = rows["100%"]
        mx = mx[mx > 0]
        return Latency(
            count=round(n),
            mean_s=total / n / 1000.0,
            p50_s=p("50%"),
            p95_s=p("95%"),
            p99_s=p("99%"),
            max_s=float(mx.max()) / 1000.0 if len(mx) else None,
            source="locust_stats_history.csv (percentiles approximate)",
        )


@dataclass
class NamedLatency:
    """Response times of one request name (every name the run sent, shed answers apart)."""

    method: str
    name: str
    latency: Latency


def latency_by_name(data: RunData) -> list[NamedLatency]:
    """p50/p95/p99 of each request name, busiest first: exact from locust.json, else the CSV."""
    out: list[NamedLatency] = []
    if data.locust_json:
        keys = sorted(
            {(str(e.get("method", "")), str(e.get("name", ""))) for e in data.locust_json}
            - {(SHED_TYPE, n) for n in (str(e.get("name", "")) for e in data.locust_json)}
        )
        for method, name in keys:
            group = [
                e
                for e in data.locust_json
                if str(e.get("method", "")) == method and str(e.get("name", "")) == name
            ]
            out.append(NamedLatency(method, name, latency_from_json(group)))
    else:
        rows = _stats_rows(data, None, shed=False)
        rows = rows[rows["Name"] != "Aggregated"]
        for key, frame in rows.groupby(["Type", "Name"], sort=True):
            kind, label = key if isinstance(key, tuple) else (key, "")
            out.append(NamedLatency(str(kind), str(label), latency_from_stats(frame)))
    out.sort(key=lambda n: -n.latency.count)
    return out


DEFINITIONS: dict[str, tuple[str, str, str]] = {
    "cycle.count": ("management cycles", "", f"Locust requests named {CYCLE_REQUEST!r}"),
    "cycle.mean_s": (
        "mean cycle time",
        "s",
        "mean response time of the cycle requests (locust.json totals)",
    ),
    "cycle.p50_s": ("p50 cycle time", "s", "median cycle response time (Locust's histogram)"),
    "cycle.p95_s": ("p95 cycle time", "s", "95th percentile cycle response time"),
    "cycle.p99_s": ("p99 cycle time", "s", "99th percentile cycle response time"),
    "cycle.max_s": ("max cycle time", "s", "slowest cycle request"),
    "requests.requests": ("requests", "", "Locust requests of every name, SHED rows excluded"),
    "requests.failures": ("errors", "", "Locust failures, SHED rows excluded"),
    "requests.error_rate_pct": ("error rate", "%", "100 * errors / requests"),
    "requests.shed": (
        "shed",
        "",
        "answers shed with 429/503 + Retry-After (Locust type SHED); not errors",
    ),
    "requests.shed_pct": ("shed rate", "%", "100 * shed / requests"),
    "requests.exceptions": (
        "user exceptions",
        "",
        "exceptions raised in Locust users (locust_exceptions.csv)",
    ),
    "requests.rps": (
        "requests/s",
        "",
        "requests over the time from the first to the last request",
    ),
    "requests.peak_users": ("peak users", "", "highest Locust user count"),
}
"""Label, unit and one-line definition of each figure above, keyed by its path in the
results' ``metrics``; the report prints them side by side."""
