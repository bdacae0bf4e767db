"""Shared pieces of the metrics: units, small numeric helpers, the run's timeline and stages.

Units: memory in MB (2**20 bytes), times in seconds, rates in percent. Every
figure that cannot be computed from the inputs is ``None`` (shown as "n/a"),
never a guess.

Stages are read from ``stages.csv`` and the JSON ``params`` of each stage. A
stage's **phase** (``warmup``, ``stress``, ``recovery``) and what it
**injects** (``leak``) are declared by the scenario in those params (see
``scenarios.spec.Part``); a stage that declares no phase is a ``recovery``
stage when it is the cleanup (``cleanup: true``), else ``stress``. Nothing is
guessed from stage names.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from memstress.common.units import MB
from memstress.reports.collect import RunData

FEW = 5
"""Samples whose median is the start or end level of memory."""

PHASES = ("warmup", "stress", "recovery")


@dataclass
class StageSpan:
    index: int
    name: str
    start: float  # Unix seconds
    end: float
    users: int | None
    params: dict[str, Any]
    phase: str  # warmup | stress | recovery
    injects: str | None

    @property
    def leak(self) -> bool:
        return self.injects == "leak"


def finite(x: Any) -> float | None:
    """A finite float or None."""
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def whole(x: Any) -> int | None:
    v = finite(x)
    return None if v is None else round(v)


def median(values: np.ndarray) -> float | None:
    return float(np.median(values)) if len(values) else None


def pct(part: float | None, whole: float | None) -> float | None:
    if part is None or not whole:
        return None
    return 100.0 * part / whole


def few(n: int) -> int:
    """How many samples make a start or end level (at most half of them, at least one)."""
    return max(1, min(FEW, n // 2))


def col(df: pd.DataFrame, name: str) -> pd.Series:
    s = df[name] if name in df.columns else pd.Series(np.nan, index=df.index, dtype="float64")
    return pd.to_numeric(s, errors="coerce")


def counter_delta(values: pd.Series) -> float | None:
    v = values.dropna().to_numpy(dtype=float)
    if not len(v):
        return None
    d = float(v[-1] - v[0])
    return float(v[-1]) if d < 0 else d  # a restarted target resets its counters


def parse_params(text: Any) -> dict[str, Any]:
    """A JSON object in CSV text (a stage's params, an event's detail); {} for anything else."""
    if not isinstance(text, str) or not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def stage_phase(params: dict[str, Any]) -> str:
    """The phase a stage declares; the cleanup stage is recovery; otherwise stress."""
    declared = params.get("phase")
    if declared in PHASES:
        return str(declared)
    return "recovery" if params.get("cleanup") is True else "stress"


def stage_injects(params: dict[str, Any]) -> str | None:
    v = params.get("injects")
    return str(v) if isinstance(v, str) and v else None


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
        if (s := finite(e.get("start_time"))) is not None:
            starts.append(s)
        if (t := finite(e.get("last_request_timestamp"))) is not None:
            ends.append(t)
    t0 = finite(meta.get("started"))
    t_end = finite(meta.get("ended"))
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
            end = t_end if t_end > start else start + (finite(planned[n]) or 0.0)
        params = all_params[n]
        name = names[n]
        idx = whole(indexes[n])
        spans.append(
            StageSpan(
                index=n if idx is None else idx,
                name=name,
                start=start,
                end=max(start, end),
                users=whole(users[n]),
                params=params,
                phase=stage_phase(params),
                injects=stage_injects(params),
            )
        )
    if spans and all(s.phase == "warmup" for s in spans):
        for s in spans:
            s.phase = "stress"
    return spans


def event_field(data: RunData, kind: str, key: str, want: type) -> Any:
    """``key`` of the first ``kind`` event whose JSON detail has it as a non-empty ``want``
    (None when no event has: a run without one, or an older folder)."""
    ev = data.events
    if ev.empty or "kind" not in ev:
        return None
    for detail in ev.loc[ev["kind"] == kind, "detail"]:
        try:
            value = json.loads(detail).get(key)
        except (ValueError, TypeError, AttributeError):
            continue
        if isinstance(value, want) and value:
            return value
    return None


def adapter_name(data: RunData) -> str | None:
    """The run's adapter from its ``adapter`` event (None: a run without one)."""
    name: str | None = event_field(data, "adapter", "name", str)
    return name


def adapter_requests(data: RunData) -> dict[str, str]:
    """Operation -> Locust request name, from the run's ``adapter`` event ({} when the run
    has none: a run from before adapters, or a user's own locustfile)."""
    names = event_field(data, "adapter", "requests", dict) or {}
    return {str(k): str(v) for k, v in names.items()}


def rss_series(samples: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Times (Unix s) and RSS (MB) of the samples that have an RSS."""
    rss = col(samples, "rss_bytes")
    ok = rss.notna().to_numpy()
    t = col(samples, "time").to_numpy(dtype=float)[ok]
    return t, rss.to_numpy(dtype=float)[ok] / MB


def budget_mb(data: RunData) -> float | None:
    b = col(data.samples, "budget_bytes").dropna()
    if len(b) and b.iloc[-1] > 0:
        return float(b.iloc[-1]) / MB
    meta_b = finite((data.meta or {}).get("budget_bytes"))
    return meta_b / MB if meta_b else None
