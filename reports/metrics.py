"""Aggregate: the metrics of a run from a :class:`RunData`, as plain dataclasses.

Units: memory in MB (2**20 bytes), times in seconds, rates in percent.
Every figure that cannot be computed from the inputs is ``None`` (shown as
"n/a"), never a guess. :data:`DEFINITIONS` holds the one-line definition the
report prints next to every figure.

How stages are read (``stages.csv`` plus the JSON ``params`` of each stage):

- a stage's **phase** is ``params["phase"]`` when it is ``warmup``, ``stress``
  or ``recovery``; otherwise a stage with ``cleanup`` or ``reset_faults`` true
  or ``traffic`` false in its params, or a name with a word starting
  ``recover`` or one of ``cleanup, cooldown, cool, rest, idle, drain, reset,
  release, settle, stop``, is a recovery stage; a name with ``warmup, warm,
  prime, baseline, pre`` a warm-up stage (when every stage looks like warm-up,
  all are stress); anything else stress. The scenarios' plans (``baseline`` ...
  ``cleanup``) read right under these rules;
- a stage **injects a leak** when a ``params`` key containing ``leak`` holds a
  positive number or ``true``; with no such key, when a word of its name
  starts with ``leak``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from common.config import Config
from common.units import MB
from reports.collect import CYCLE_REQUEST, SHED_TYPE, RunData

FEW = 5
"""Samples whose median is the start or end level of memory."""

STRATEGY_RANK = {"normal": 0, "aggressive": 1, "emergency": 2}


# --- the dataclasses -------------------------------------------------------------


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
class MemoryMetrics:
    samples: int = 0
    rss_source: str | None = None
    start_mb: float | None = None
    end_mb: float | None = None
    growth_mb: float | None = None
    peak_mb: float | None = None
    budget_mb: float | None = None
    peak_pct_of_budget: float | None = None
    end_vs_start_pct: float | None = None
    returned_to_start: bool | None = None
    tolerance_pct: float = 0.0


@dataclass
class OptimizationMetrics:
    count: int | None = None
    failed: int | None = None
    success_rate_pct: float | None = None
    freed_mb: float | None = None


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


@dataclass
class LeakMetrics:
    slope_mb_min: float | None = None
    trend_p_value: float | None = None
    trend_leak: bool | None = None  # slope >= threshold and Mann-Kendall p < significance
    windows: int = 0
    window_s: float = 0.0
    detected: bool | None = None  # the online detector wrote leak_detected
    first_detected_s: float | None = None
    injected_start_s: float | None = None  # first stage that injects a leak
    detection_delay_s: float | None = None
    detections_before_injection: int = 0
    target_flagged: bool | None = None  # the target's own leak_suspected
    unaccounted_peak_mb: float | None = None


@dataclass
class PressureMetrics:
    source: str | None = None  # target | rss/budget
    peak: float | None = None
    mean: float | None = None
    final: float | None = None
    psi_some_avg10_max: float | None = None
    psi_full_avg10_max: float | None = None
    host_percent_max: float | None = None
    max_strategy: str | None = None
    strategy_share_pct: dict[str, float] = field(default_factory=dict)
    cgroup_events: str | None = None


@dataclass
class RecoveryMetrics:
    measured: bool = False
    stress_end_s: float | None = None
    pre_stress_mb: float | None = None
    tolerance_pct: float = 0.0
    recovered: bool | None = None
    recovery_time_s: float | None = None
    observed_s: float | None = None  # how long memory was watched after the stress ended
    note: str = ""


@dataclass
class CostMetrics:
    per_request_kb: float | None = None
    per_vector_kb: float | None = None
    vector_basis: str = ""
    per_agent_kb: float | None = None
    agent_basis: str = ""


@dataclass
class StopInfo:
    kind: str  # completed | safety | target_lost | interrupted | usage | crashed | unknown
    reason: str
    meta_exit_code: int | None = None
    events: list[str] = field(default_factory=list)


@dataclass
class StageSpan:
    index: int
    name: str
    start: float  # Unix seconds
    end: float
    users: int | None
    params: dict[str, Any]
    phase: str  # warmup | stress | recovery
    leak: bool


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


@dataclass
class RunMetrics:
    t0: float
    t_end: float
    duration_s: float
    memory: MemoryMetrics
    optimization: OptimizationMetrics
    cycle: Latency
    requests: RequestMetrics
    leak: LeakMetrics
    pressure: PressureMetrics
    recovery: RecoveryMetrics
    cost: CostMetrics
    stop: StopInfo
    stages: list[StageMetrics]
    workers: dict[str, Any] = field(default_factory=dict)


DEFINITIONS: dict[str, tuple[str, str, str]] = {
    "memory.start_mb": (
        "start memory",
        "MB",
        "target RSS at the start: median of the first 5 samples",
    ),
    "memory.end_mb": ("end memory", "MB", "target RSS at the end: median of the last 5 samples"),
    "memory.growth_mb": ("memory growth", "MB", "end memory minus start memory"),
    "memory.peak_mb": ("peak memory", "MB", "highest target RSS sampled"),
    "memory.budget_mb": (
        "memory budget",
        "MB",
        "the target's budget (its /memory/stats, else run_meta)",
    ),
    "memory.peak_pct_of_budget": ("peak % of budget", "%", "100 * peak memory / budget"),
    "memory.end_vs_start_pct": ("end vs start", "%", "100 * (end - start) / start memory"),
    "memory.returned_to_start": (
        "returned to start memory",
        "",
        "end memory <= start memory * (1 + scenarios.recovery_tolerance_pct / 100)",
    ),
    "optimization.count": (
        "optimizations",
        "",
        "increase of the target's optimizations_total over the run",
    ),
    "optimization.failed": (
        "failed optimizations",
        "",
        "increase of optimizations_failed over the run",
    ),
    "optimization.success_rate_pct": (
        "optimization success rate",
        "%",
        "100 * (count - failed) / count",
    ),
    "optimization.freed_mb": (
        "memory freed by optimizations",
        "MB",
        "increase of bytes_freed_total over the run",
    ),
    "cycle.count": ("cycles", "", f"Locust requests named {CYCLE_REQUEST!r}"),
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
    "leak.slope_mb_min": (
        "leak slope",
        "MB/min",
        "Theil-Sen slope of the lower envelope (minimum per window; GC sawtooth is no leak) of "
        "RSS less the target's accounted tier bytes (plain RSS when it reports none)",
    ),
    "leak.trend_p_value": (
        "trend p-value",
        "",
        "Mann-Kendall (Kendall tau) test of the lower envelope",
    ),
    "leak.trend_leak": (
        "leak trend",
        "",
        "slope >= monitor.leak_detection.min_slope_mb_per_min, p-value < its significance, "
        "and a total rise of at least min_slope x lookback_s (as the online detector)",
    ),
    "leak.windows": ("envelope windows", "", "windows of monitor.leak_detection.window_s seconds"),
    "leak.detected": ("leak detected online", "", "the monitor wrote a leak_detected event"),
    "leak.first_detected_s": ("first detection", "s", "run time of the first leak_detected event"),
    "leak.injected_start_s": (
        "leak injected at",
        "s",
        "run time the first leak-injecting stage began",
    ),
    "leak.detection_delay_s": (
        "detection delay",
        "s",
        "first detection at or after injection minus injection start",
    ),
    "leak.detections_before_injection": (
        "false alarms",
        "",
        "leak_detected events before any leak was injected",
    ),
    "leak.target_flagged": (
        "target flagged a leak",
        "",
        "the target's leak_suspected was 1 in some sample",
    ),
    "leak.unaccounted_peak_mb": (
        "unaccounted memory",
        "MB",
        "highest unaccounted_bytes the target reported",
    ),
    "pressure.source": ("pressure source", "", "the target's own score, else 100 * RSS / budget"),
    "pressure.peak": ("peak pressure", "%", "highest memory pressure score"),
    "pressure.mean": ("mean pressure", "%", "mean memory pressure score"),
    "pressure.final": ("final pressure", "%", "median pressure of the last 5 samples"),
    "pressure.psi_some_avg10_max": ("PSI some avg10", "%", "highest Linux memory PSI 'some' avg10"),
    "pressure.psi_full_avg10_max": ("PSI full avg10", "%", "highest Linux memory PSI 'full' avg10"),
    "pressure.host_percent_max": ("peak host memory", "%", "highest host memory use"),
    "pressure.max_strategy": ("strongest strategy", "", "most drastic strategy the target used"),
    "pressure.cgroup_events": ("cgroup events", "", "last cgroup memory events (oom, max) sampled"),
    "recovery.pre_stress_mb": (
        "pre-stress memory",
        "MB",
        "median RSS before the first stress stage",
    ),
    "recovery.stress_end_s": (
        "stress ended at",
        "s",
        "run time the trailing recovery stages began",
    ),
    "recovery.recovery_time_s": (
        "recovery time",
        "s",
        "from the end of stress to RSS <= pre-stress * (1 + recovery_tolerance_pct/100)",
    ),
    "recovery.recovered": (
        "recovered",
        "",
        "RSS came back within tolerance of the pre-stress level",
    ),
    "recovery.observed_s": (
        "observed after stress",
        "s",
        "time memory was sampled after the stress ended",
    ),
    "cost.per_request_kb": ("memory per request", "KB", "memory growth / requests"),
    "cost.per_vector_kb": ("memory per stored vector", "KB", "vector tier bytes / stored items"),
    "cost.per_agent_kb": ("memory per agent", "KB", "conversation tier bytes / agents"),
    "duration_s": ("duration", "s", "from the run's start to its end"),
}


# --- small helpers ----------------------------------------------------------------


def _f(x: Any) -> float | None:
    """A finite float or None."""
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _i(x: Any) -> int | None:
    v = _f(x)
    return None if v is None else round(v)


def _median(values: np.ndarray) -> float | None:
    return float(np.median(values)) if len(values) else None


def _pct(part: float | None, whole: float | None) -> float | None:
    if part is None or not whole:
        return None
    return 100.0 * part / whole


def few(n: int) -> int:
    """How many samples make a start or end level (at most half of them, at least one)."""
    return max(1, min(FEW, n // 2))


def _col(df: pd.DataFrame, name: str) -> pd.Series:
    s = df[name] if name in df.columns else pd.Series(np.nan, index=df.index, dtype="float64")
    return pd.to_numeric(s, errors="coerce")


def _counter_delta(values: pd.Series) -> float | None:
    v = values.dropna().to_numpy(dtype=float)
    if not len(v):
        return None
    d = float(v[-1] - v[0])
    return float(v[-1]) if d < 0 else d  # a restarted target resets its counters


def parse_params(text: Any) -> dict[str, Any]:
    if not isinstance(text, str) or not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def _words(name: str) -> list[str]:
    return [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w]


RECOVERY_WORDS = frozenset(
    {"cleanup", "cooldown", "cool", "rest", "idle", "drain", "reset", "release", "settle", "stop"}
)
WARMUP_WORDS = frozenset({"warmup", "warm", "prime", "baseline", "pre"})


def stage_phase(name: str, params: dict[str, Any]) -> str:
    explicit = params.get("phase")
    if explicit in ("warmup", "stress", "recovery"):
        return str(explicit)
    if params.get("cleanup") is True or params.get("reset_faults") is True:
        return "recovery"
    if params.get("traffic") is False:
        return "recovery"
    words = _words(name)
    if any(w.startswith("recover") or w in RECOVERY_WORDS for w in words):
        return "recovery"
    if any(w in WARMUP_WORDS for w in words):
        return "warmup"
    return "stress"


def stage_leaks(name: str, params: dict[str, Any]) -> bool:
    keys = [k for k in params if "leak" in str(k).lower()]
    if keys:
        for k in keys:
            v = params[k]
            if v is True or (not isinstance(v, bool) and (_f(v) or 0) > 0):
                return True
        return False
    return any(w.startswith("leak") for w in _words(name))


# --- the timeline -------------------------------------------------------------------


def timeline(data: RunData) -> tuple[float, float]:
    """Start and end of the run, Unix seconds (0, 0 when nothing has a time)."""
    meta = data.meta or {}
    starts: list[float] = []
    ends: list[float] = []
    for df, col in (
        (data.stages, "time"),
        (data.samples, "time"),
        (data.events, "time"),
        (data.history, "Timestamp"),
    ):
        v = df[col].dropna()
        if len(v):
            starts.append(float(v.iloc[0]))
            ends.append(float(v.iloc[-1]))
    for e in data.locust_json or []:
        if (s := _f(e.get("start_time"))) is not None:
            starts.append(s)
        if (t := _f(e.get("last_request_timestamp"))) is not None:
            ends.append(t)
    t0 = _f(meta.get("started"))
    t_end = _f(meta.get("ended"))
    if t0 is None:
        t0 = min(starts) if starts else 0.0
    if t_end is None:
        t_end = max(ends) if ends else t0
    return t0, max(t0, t_end)


def stage_spans(data: RunData, t0: float, t_end: float) -> list[StageSpan]:
    st = data.stages
    spans: list[StageSpan] = []
    times = st["time"].to_numpy(dtype=float)
    planned = st["duration_s"].to_numpy(dtype=float)
    users = st["users"].to_numpy(dtype=float)
    indexes = st["index"].to_numpy(dtype=float)
    names = [str(x) for x in st["name"]]
    all_params = [parse_params(x) for x in st["params"]]
    for n, start in enumerate(times.tolist()):
        if n + 1 < len(times):
            end = float(times[n + 1])
        else:
            end = t_end if t_end > start else start + (_f(planned[n]) or 0.0)
        params = all_params[n]
        name = names[n]
        idx = _i(indexes[n])
        spans.append(
            StageSpan(
                index=n if idx is None else idx,
                name=name,
                start=start,
                end=max(start, end),
                users=_i(users[n]),
                params=params,
                phase=stage_phase(name, params),
                leak=stage_leaks(name, params),
            )
        )
    if spans and all(s.phase == "warmup" for s in spans):
        for s in spans:
            s.phase = "stress"
    return spans


# --- memory ------------------------------------------------------------------------


def _rss(samples: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Times (Unix s) and RSS (MB) of the samples that have an RSS."""
    rss = _col(samples, "rss_bytes")
    ok = rss.notna().to_numpy()
    t = _col(samples, "time").to_numpy(dtype=float)[ok]
    return t, rss.to_numpy(dtype=float)[ok] / MB


TIER_COLUMNS = ("conversations_bytes", "vectors_bytes", "embedding_cache_bytes", "ballast_bytes")


def _judged(samples: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Times and MB the leak trend is judged on, as the online detector judges them:
    RSS less the bytes the target accounts to its tiers (a filling cache is memory
    it knows about, a leak is memory it does not); plain RSS when it reports no tiers.
    """
    tiers = [c for c in (_col(samples, name) for name in TIER_COLUMNS) if c.notna().any()]
    if not tiers:
        return _rss(samples)
    rss = _col(samples, "rss_bytes")
    ok = rss.notna() & pd.concat([c.notna() for c in tiers], axis=1).all(axis=1)
    net = rss - sum(c.fillna(0.0) for c in tiers)
    t = _col(samples, "time").to_numpy(dtype=float)[ok.to_numpy()]
    return t, net.to_numpy(dtype=float)[ok.to_numpy()] / MB


def budget_mb(data: RunData) -> float | None:
    b = _col(data.samples, "budget_bytes").dropna()
    if len(b) and b.iloc[-1] > 0:
        return float(b.iloc[-1]) / MB
    meta_b = _f((data.meta or {}).get("budget_bytes"))
    return meta_b / MB if meta_b else None


def memory_metrics(data: RunData, tol_pct: float) -> MemoryMetrics:
    _, rss = _rss(data.samples)
    m = MemoryMetrics(samples=len(rss), tolerance_pct=tol_pct, budget_mb=budget_mb(data))
    if not len(rss):
        return m
    src = data.samples["rss_source"].astype("str")
    src = src[src.str.len() > 0]
    m.rss_source = str(src.mode().iloc[0]) if len(src) else None
    k = few(len(rss))
    m.start_mb = _median(rss[:k])
    m.end_mb = _median(rss[-k:])
    assert m.start_mb is not None and m.end_mb is not None
    m.growth_mb = m.end_mb - m.start_mb
    m.peak_mb = float(rss.max())
    m.peak_pct_of_budget = _pct(m.peak_mb, m.budget_mb)
    m.end_vs_start_pct = _pct(m.growth_mb, m.start_mb)
    m.returned_to_start = bool(m.end_mb <= m.start_mb * (1 + tol_pct / 100.0))
    return m


def optimization_metrics(data: RunData) -> OptimizationMetrics:
    s = data.samples
    count = _counter_delta(_col(s, "optimizations_total"))
    failed = _counter_delta(_col(s, "optimizations_failed"))
    freed = _counter_delta(_col(s, "bytes_freed_total"))
    o = OptimizationMetrics(
        count=_i(count), failed=_i(failed), freed_mb=None if freed is None else freed / MB
    )
    if o.count:
        o.success_rate_pct = 100.0 * (o.count - (o.failed or 0)) / o.count
    return o


# --- Locust ------------------------------------------------------------------------


def locust_percentile(hist: dict[float, int], num_requests: int, percent: float) -> float:
    """Locust's own ``calculate_response_time_percentile`` (ms buckets, same rounding)."""
    wanted = int(num_requests * percent)
    processed = 0
    for rt in sorted(hist, reverse=True):
        processed += hist[rt]
        if num_requests - processed <= wanted:
            return rt
    return 0.0


def _entries(data: RunData, name: str | None, shed: bool) -> list[dict[str, Any]]:
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
            key = _f(k)
            if key is not None:
                hist[key] = hist.get(key, 0) + int(v)
    maxes = [_f(e.get("max_response_time")) for e in entries]
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
        v = _f(r[col])
        return None if v is None else v / 1000.0

    return Latency(
        count=_i(r["Request Count"]) or 0,
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
        return latency_from_json(_entries(data, name, shed=False))
    return latency_from_stats(_stats_rows(data, name, shed=False))


def aggregated_latency(data: RunData) -> Latency:
    """Latency over every non-shed request (for a Locust export with no cycle requests)."""
    if data.locust_json:
        return latency_from_json(_entries(data, None, shed=False))
    st = data.stats
    return latency_from_stats(st[(st["Name"] == "Aggregated") & (st["Type"] == "")])


def request_metrics(data: RunData) -> RequestMetrics:
    r = RequestMetrics()
    if data.locust_json is not None and data.locust_json:
        ok = _entries(data, None, shed=False)
        shed = _entries(data, None, shed=True)
        r.requests = sum(int(e.get("num_requests") or 0) for e in ok)
        r.failures = sum(int(e.get("num_failures") or 0) for e in ok)
        r.shed = sum(int(e.get("num_requests") or 0) for e in shed)
        firsts = [v for e in ok if (v := _f(e.get("start_time"))) is not None]
        lasts = [v for e in ok if (v := _f(e.get("last_request_timestamp"))) is not None]
        if firsts and lasts and max(lasts) > min(firsts):
            r.rps = r.requests / (max(lasts) - min(firsts))
        r.source = "locust.json"
    elif not data.stats.empty:
        ok_rows = _stats_rows(data, None, shed=False)
        shed_rows = _stats_rows(data, None, shed=True)
        r.requests = _i(ok_rows["Request Count"].sum()) or 0
        r.failures = _i(ok_rows["Failure Count"].sum()) or 0
        r.shed = _i(shed_rows["Request Count"].sum()) or 0
        r.rps = _f(ok_rows["Requests/s"].sum())
        r.source = "locust_stats.csv"
    if r.requests is not None:
        r.error_rate_pct = _pct(float(r.failures or 0), float(r.requests))
        r.shed_pct = _pct(float(r.shed or 0), float(r.requests))
        if r.requests == 0:
            r.error_rate_pct = r.shed_pct = None
    if not data.exceptions.empty or any(
        s.name.endswith("_exceptions.csv") and s.state == "ok" for s in data.inputs
    ):
        r.exceptions = _i(data.exceptions["Count"].sum()) or 0
    users = data.history["User Count"].dropna()
    if len(users):
        r.peak_users = _i(users.max())
    elif len(u := _col(data.samples, "users").dropna()):
        r.peak_users = _i(u.max())
    f = data.failures
    if not f.empty:
        top = f.sort_values("Occurrences", ascending=False, kind="stable").head(5)
        r.top_failures = [
            {
                "method": str(x["Method"]),
                "name": str(x["Name"]),
                "error": str(x["Error"])[:300],
                "occurrences": _i(x["Occurrences"]) or 0,
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


# --- leak ---------------------------------------------------------------------------


def lower_envelope(t: np.ndarray, y: np.ndarray, window_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-window minima: in each window of ``window_s`` seconds, the lowest sample and its time."""
    if not len(t):
        return t, y
    bins = np.floor((t - t[0]) / window_s).astype(np.int64)
    df = pd.DataFrame({"bin": bins, "t": t, "y": y})
    idx = df.groupby("bin", sort=True)["y"].idxmin()
    low = df.loc[idx.to_numpy()]
    return low["t"].to_numpy(dtype=float), low["y"].to_numpy(dtype=float)


def trend(
    t: np.ndarray, y: np.ndarray, window_s: float, min_windows: int
) -> tuple[float | None, float | None, int]:
    """(Theil-Sen slope in MB/min, Mann-Kendall p-value, windows) of the lower envelope."""
    tw, yw = lower_envelope(t, y, window_s)
    n = len(tw)
    if n < max(3, min_windows):
        return None, None, n
    minutes = (tw - tw[0]) / 60.0
    if np.ptp(yw) == 0:
        return 0.0, 1.0, n
    slope = float(sps.theilslopes(yw, minutes).slope)
    p = float(sps.kendalltau(minutes, yw).pvalue)
    return slope, (p if math.isfinite(p) else None), n


def leak_metrics(data: RunData, cfg: Config, t0: float, spans: list[StageSpan]) -> LeakMetrics:
    ld = cfg.monitor.leak_detection
    _, rss = _rss(data.samples)
    m = LeakMetrics(window_s=ld.window_s)
    if len(rss):
        tj, judged = _judged(data.samples)
        m.slope_mb_min, m.trend_p_value, m.windows = trend(tj, judged, ld.window_s, ld.min_windows)
        if m.slope_mb_min is not None and m.trend_p_value is not None:
            # As the online detector: a shorter span needs the same total rise as the
            # lookback at the minimum slope, so a short run's warm-up is no leak.
            minutes = (tj[-1] - tj[0]) / 60.0 if len(tj) else 0.0
            rise_needed = ld.min_slope_mb_per_min * ld.lookback_s / 60.0
            m.trend_leak = bool(
                m.slope_mb_min >= ld.min_slope_mb_per_min
                and m.trend_p_value < ld.significance
                and m.slope_mb_min * minutes >= rise_needed
            )
    ev = data.events
    det = ev.loc[ev["kind"] == "leak_detected", "time"].to_numpy(dtype=float)
    # Without samples the detector had nothing to judge: "not detected" would be a guess.
    if len(rss) and any(s.name == "events.csv" and s.state == "ok" for s in data.inputs):
        m.detected = bool(len(det))
    if len(det):
        m.first_detected_s = float(det[0] - t0)
    leak_starts = [s.start for s in spans if s.leak]
    if leak_starts:
        start = leak_starts[0]
        m.injected_start_s = start - t0
        after = det[det >= start]
        m.detections_before_injection = int((det < start).sum())
        if len(after):
            m.detection_delay_s = float(after[0] - start)
    else:
        m.detections_before_injection = len(det)
    flag = _col(data.samples, "leak_suspected").dropna()
    if len(flag):
        m.target_flagged = bool((flag > 0).any())
    un = _col(data.samples, "unaccounted_bytes").dropna()
    if len(un):
        m.unaccounted_peak_mb = float(un.max()) / MB
    return m


# --- pressure -----------------------------------------------------------------------


def pressure_series(data: RunData) -> tuple[pd.Series, str | None]:
    p = _col(data.samples, "pressure")
    if p.notna().any():
        return p, "target"
    b = budget_mb(data)
    rss = _col(data.samples, "rss_bytes")
    if b and rss.notna().any():
        return 100.0 * rss / MB / b, "rss/budget"
    return pd.Series(dtype="float64"), None


def pressure_metrics(data: RunData) -> PressureMetrics:
    p, source = pressure_series(data)
    m = PressureMetrics(source=source)
    v = p.dropna().to_numpy(dtype=float)
    if len(v):
        m.peak = float(v.max())
        m.mean = float(v.mean())
        m.final = _median(v[-few(len(v)) :])
    s = data.samples
    for attr, col in (
        ("psi_some_avg10_max", "psi_some_avg10"),
        ("psi_full_avg10_max", "psi_full_avg10"),
        ("host_percent_max", "host_percent"),
    ):
        c = _col(s, col).dropna()
        if len(c):
            setattr(m, attr, float(c.max()))
    strat = s["strategy"].astype("str")
    strat = strat[strat.str.len() > 0]
    if len(strat):
        share = strat.value_counts(normalize=True) * 100.0
        m.strategy_share_pct = {str(k): round(float(v), 2) for k, v in share.items()}
        m.max_strategy = max(m.strategy_share_pct, key=lambda k: STRATEGY_RANK.get(k, -1))
    cg = (
        s["cgroup_events"].astype("str") if "cgroup_events" in s.columns else pd.Series(dtype="str")
    )
    cg = cg[cg.str.len() > 0]
    if len(cg):
        m.cgroup_events = str(cg.iloc[-1])
    return m


# --- recovery -------------------------------------------------------------------------


def recovery_metrics(
    data: RunData, spans: list[StageSpan], t0: float, tol_pct: float
) -> RecoveryMetrics:
    m = RecoveryMetrics(tolerance_pct=tol_pct)
    t, rss = _rss(data.samples)
    if not spans:
        m.note = "no stages.csv: the stress period is unknown"
        return m
    stress = [s for s in spans if s.phase == "stress"]
    if not stress:
        m.note = "no stress stage"
        return m
    last_stress = max(i for i, s in enumerate(spans) if s.phase == "stress")
    trailing = [s for s in spans[last_stress + 1 :] if s.phase == "recovery"]
    if not trailing:
        m.note = "no recovery stage after the last stress stage"
        return m
    stress_end = trailing[0].start
    m.stress_end_s = stress_end - t0
    if not len(rss):
        m.note = "no memory samples"
        return m
    first_stress = stress[0].start
    before = rss[t < first_stress]
    m.pre_stress_mb = _median(before) if len(before) else _median(rss[: few(len(rss))])
    after_t = t[t >= stress_end]
    after = rss[t >= stress_end]
    if not len(after):
        m.note = "no memory samples after the stress ended"
        return m
    m.measured = True
    m.observed_s = float(after_t[-1] - stress_end)
    assert m.pre_stress_mb is not None
    ok = np.nonzero(after <= m.pre_stress_mb * (1 + tol_pct / 100.0))[0]
    if len(ok):
        m.recovered = True
        m.recovery_time_s = float(after_t[ok[0]] - stress_end)
    else:
        m.recovered = False
        m.note = f"memory watched for {m.observed_s:.0f} s after the stress"
    return m


# --- cost ------------------------------------------------------------------------------


def _agents(spans: list[StageSpan]) -> float | None:
    counts = [
        v
        for s in spans
        for k, raw in s.params.items()
        if "agents" in str(k).lower() and (v := _f(raw)) is not None and v > 0
    ]
    return max(counts) if counts else None


def cost_metrics(
    data: RunData, memory: MemoryMetrics, req: RequestMetrics, spans: list[StageSpan]
) -> CostMetrics:
    c = CostMetrics()
    if memory.growth_mb is not None and req.requests:
        c.per_request_kb = memory.growth_mb * 1024.0 / req.requests
    s = data.samples
    vec_bytes = _col(s, "vectors_bytes").dropna()
    if len(vec_bytes) and vec_bytes.max() > 0:
        items = _col(s, "vectors_items").dropna() if "vectors_items" in s.columns else None
        if items is not None and len(items) and items.iloc[-1] > 0:
            c.per_vector_kb = float(vec_bytes.iloc[-1]) / float(items.iloc[-1]) / 1024.0
            c.vector_basis = "vectors_bytes / vectors_items (last sample)"
        else:
            docs = sum(
                int(e.get("num_requests") or 0) - int(e.get("num_failures") or 0)
                for e in _entries(data, "POST /vectors/documents", shed=False)
            )
            if docs > 0:
                c.per_vector_kb = float(vec_bytes.max()) / docs / 1024.0
                c.vector_basis = (
                    "peak vectors_bytes / documents stored (per document: no item count)"
                )
    conv = _col(s, "conversations_bytes").dropna()
    agents = _agents(spans)
    if len(conv) and conv.max() > 0 and agents:
        c.per_agent_kb = float(conv.max()) / agents / 1024.0
        c.agent_basis = f"peak conversations_bytes / {agents:g} agents (stage params)"
    return c


# --- stop ---------------------------------------------------------------------------------


def stop_info(data: RunData) -> StopInfo:
    if data.kind == "locust":
        return StopInfo("unknown", "not recorded (a Locust CSV export has no run_meta.json)")
    meta = data.meta
    ev = data.events
    stops = ev[ev["kind"].isin(["emergency_stop", "target_lost", "run_end"])]
    events = [
        f"{k}: {d}" if d else str(k) for k, d in zip(stops["kind"], stops["detail"], strict=True)
    ]
    code = _i((meta or {}).get("exit_code"))
    reason = str((meta or {}).get("stop_reason") or "")
    kinds = set(stops["kind"])
    if meta is not None and (meta.get("interrupted") or code == 130):
        return StopInfo("interrupted", reason or "interrupted by the user", code, events)
    if "target_lost" in kinds or code == 3:
        detail = next((e for e in events if e.startswith("target_lost")), "")
        return StopInfo("target_lost", reason or detail or "the target was lost", code, events)
    if "emergency_stop" in kinds or code == 4:
        detail = next((e for e in events if e.startswith("emergency_stop")), "")
        return StopInfo("safety", reason or detail or "stopped by a safety limit", code, events)
    if code == 2:
        return StopInfo("usage", reason or "bad usage or config", code, events)
    if code is not None and code not in (0, 1):
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


# --- per stage ------------------------------------------------------------------------------


def stage_metrics(
    data: RunData, spans: list[StageSpan], t0: float, cfg: Config
) -> list[StageMetrics]:
    t, rss = _rss(data.samples)
    tj, judged = _judged(data.samples)
    p_all, _ = pressure_series(data)
    p_t = _col(data.samples, "time").to_numpy(dtype=float)
    p_v = p_all.to_numpy(dtype=float) if len(p_all) else np.full(len(p_t), np.nan)
    opt = _col(data.samples, "optimizations_total")
    counters = HistoryCounters(data.history) if not data.history.empty else None
    ld = cfg.monitor.leak_detection
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
            m.memory_start_mb = _median(r[:k])
            m.memory_end_mb = _median(r[-k:])
            if m.memory_start_mb is not None and m.memory_end_mb is not None:
                m.growth_mb = m.memory_end_mb - m.memory_start_mb
            m.peak_mb = float(r.max())
            jsel = (tj >= s.start) & (tj < s.end)
            m.leak_slope_mb_min = trend(tj[jsel], judged[jsel], ld.window_s, ld.min_windows)[0]
        psel = (p_t >= s.start) & (p_t < s.end)
        pv = p_v[psel]
        pv = pv[np.isfinite(pv)]
        if len(pv):
            m.pressure_peak = float(pv.max())
            m.pressure_mean = float(pv.mean())
        m.optimizations = _i(_counter_delta(opt[psel]))
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
            m.error_rate_pct = _pct(fail, req) if req else None
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
        "cpu_percent_max": _f(w["cpu_percent"].max()),
        "rss_mb_max": None if (x := _f(w["rss_bytes"].max())) is None else x / MB,
    }


def compute(data: RunData, cfg: Config) -> RunMetrics:
    """Every run-level and per-stage metric of a run."""
    tol = cfg.scenarios.recovery_tolerance_pct
    t0, t_end = timeline(data)
    spans = stage_spans(data, t0, t_end)
    memory = memory_metrics(data, tol)
    req = request_metrics(data)
    cycle = request_latency(data, CYCLE_REQUEST)
    req.first_shed_s = first_shed(data, t0)
    return RunMetrics(
        t0=t0,
        t_end=t_end,
        duration_s=t_end - t0,
        memory=memory,
        optimization=optimization_metrics(data),
        cycle=cycle,
        requests=req,
        leak=leak_metrics(data, cfg, t0, spans),
        pressure=pressure_metrics(data),
        recovery=recovery_metrics(data, spans, t0, tol),
        cost=cost_metrics(data, memory, req, spans),
        stop=stop_info(data),
        stages=stage_metrics(data, spans, t0, cfg),
        workers=worker_summary(data),
    )
