"""Why the run stopped, and every metric cut by stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from memstress.common.config import Config
from memstress.common.exitcodes import ExitCode
from memstress.reports.collect import CYCLE_REQUEST, SHED_TYPE, RunData
from memstress.reports.metrics.base import (
    MB,
    StageSpan,
    col,
    counter_delta,
    few,
    finite,
    median,
    pct,
    rss_series,
    whole,
)
from memstress.reports.metrics.latency import HistoryCounters, Latency
from memstress.reports.metrics.leak import judged_series, settings_used, stage_slope
from memstress.reports.metrics.pressure import pressure_series


@dataclass
class StopInfo:
    kind: str  # completed | safety | target_lost | interrupted | usage | crashed | unknown
    reason: str
    meta_exit_code: int | None = None
    events: list[str] = field(default_factory=list)


def stop_info(data: RunData) -> StopInfo:
    if data.kind == "locust":
        return StopInfo("unknown", "not recorded (a Locust CSV export has no run_meta.json)")
    meta = data.meta
    ev = data.events
    stops = ev[ev["kind"].isin(["emergency_stop", "target_lost", "run_end"])]
    events = [
        f"{k}: {d}" if d else str(k) for k, d in zip(stops["kind"], stops["detail"], strict=True)
    ]
    code = whole((meta or {}).get("exit_code"))
    reason = str((meta or {}).get("stop_reason") or "")
    kinds = set(stops["kind"])
    if meta is not None and (meta.get("interrupted") or code == ExitCode.INTERRUPTED):
        return StopInfo("interrupted", reason or "interrupted by the user", code, events)
    if "target_lost" in kinds or code == ExitCode.TARGET_LOST:
        detail = next((e for e in events if e.startswith("target_lost")), "")
        return StopInfo("target_lost", reason or detail or "the target was lost", code, events)
    if "emergency_stop" in kinds or code == ExitCode.SAFETY:
        detail = next((e for e in events if e.startswith("emergency_stop")), "")
        return StopInfo("safety", reason or detail or "stopped by a safety limit", code, events)
    if code == ExitCode.USAGE:
        return StopInfo("usage", reason or "bad usage or config", code, events)
    if code is not None and code not in (ExitCode.OK, ExitCode.FAILED):
        # Locust killed by a signal (negative code) or crashed: the figures are cut short.
        why = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
        return StopInfo("crashed", reason or f"the load generator {why}", code, events)
    if meta is None:
        return StopInfo("unknown", "unknown: run_meta.json is missing or unreadable", None, events)
    if meta.get("ended") is None:
        return StopInfo(
            "unknown", reason or "unknown: the run did not record its end (killed?)", code, events
        )
    if reason:
        return StopInfo("completed", reason, code, events)
    return StopInfo("completed", "completed its stage plan", code, events)


@dataclass
class StageMetrics:
    index: int
    name: str
    phase: str
    leak: bool
    start_s: float
    end_s: float
    duration_s: float
    users: int | None
    params: dict[str, Any]
    memory_start_mb: float | None = None
    memory_end_mb: float | None = None
    growth_mb: float | None = None
    peak_mb: float | None = None
    pressure_peak: float | None = None
    pressure_mean: float | None = None
    leak_slope_mb_min: float | None = None
    optimizations: int | None = None
    requests: int | None = None
    failures: int | None = None
    error_rate_pct: float | None = None
    shed: int | None = None
    rps: float | None = None
    cycle: Latency = field(default_factory=Latency)


def stage_metrics(
    data: RunData, spans: list[StageSpan], t0: float, cfg: Config
) -> list[StageMetrics]:
    t, rss = rss_series(data.samples)
    tj, judged = judged_series(data.samples)
    judged = judged / MB
    p_all, _ = pressure_series(data)
    p_t = col(data.samples, "time").to_numpy(dtype=float)
    p_v = p_all.to_numpy(dtype=float) if len(p_all) else np.full(len(p_t), np.nan)
    opt = col(data.samples, "optimizations_total")
    counters = HistoryCounters(data.history) if not data.history.empty else None
    ld, _ = settings_used(data, cfg)  # the window the run's detector used (scaled)
    out = []
    for s in spans:
        m = StageMetrics(
            index=s.index,
            name=s.name,
            phase=s.phase,
            leak=s.leak,
            start_s=s.start - t0,
            end_s=s.end - t0,
            duration_s=s.end - s.start,
            users=s.users,
            params=s.params,
        )
        sel = (t >= s.start) & (t < s.end)
        r = rss[sel]
        if len(r):
            k = few(len(r))
            m.memory_start_mb = median(r[:k])
            m.memory_end_mb = median(r[-k:])
            if m.memory_start_mb is not None and m.memory_end_mb is not None:
                m.growth_mb = m.memory_end_mb - m.memory_start_mb
            m.peak_mb = float(r.max())
            jsel = (tj >= s.start) & (tj < s.end)
            m.leak_slope_mb_min = stage_slope(tj[jsel], judged[jsel], ld.window_s, ld.min_windows)
        psel = (p_t >= s.start) & (p_t < s.end)
        pv = p_v[psel]
        pv = pv[np.isfinite(pv)]
        if len(pv):
            m.pressure_peak = float(pv.max())
            m.pressure_mean = float(pv.mean())
        m.optimizations = whole(counter_delta(opt[psel]))
        if counters is not None:
            req = fail = shed = 0.0
            for key in counters.groups:
                rq, fl, _ = counters.delta(key, s.start, s.end)
                if key[0] == SHED_TYPE:
                    shed += rq
                else:
                    req += rq
                    fail += fl
            m.requests, m.failures, m.shed = round(req), round(fail), round(shed)
            m.error_rate_pct = pct(fail, req) if req else None
            m.rps = req / m.duration_s if m.duration_s > 0 else None
            m.cycle = counters.window_latency(CYCLE_REQUEST, s.start, s.end)
        out.append(m)
    return out


def first_shed(data: RunData, t0: float) -> float | None:
    h = data.history
    shed = h[(h["Type"] == SHED_TYPE) & (h["Total Request Count"] > 0)]
    return float(shed["Timestamp"].min()) - t0 if len(shed) else None


def health_failures(data: RunData) -> int | None:
    """health_failed events, None when events.csv could not be read."""
    if not any(s.name == "events.csv" and s.state == "ok" for s in data.inputs):
        return None
    return int((data.events["kind"] == "health_failed").sum())


def worker_summary(data: RunData) -> dict[str, Any]:
    w = data.workers
    if w.empty:
        return {}
    g = w.groupby("worker_id")
    return {
        "workers": int(g.ngroups),
        "cpu_percent_max": finite(w["cpu_percent"].max()),
        "rss_mb_max": None if (x := finite(w["rss_bytes"].max())) is None else x / MB,
    }
