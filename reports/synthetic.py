"""Synthetic run folders: every file a run writes, with figures known by construction.

One set of writers, two recipes:

- :func:`write_run` with a :class:`Synthetic`: a run of any length, for the report
  benchmark (``bench/report_scale.py``) and the tests of whole reports. RSS is
  ``base_mb`` plus a linear leak during the leak stage plus a GC sawtooth (minimum on
  each window start), so the lower-envelope slope of the leak stage is
  ``leak_mb_min`` exactly; memory drops back to ``base_mb`` in the recovery stage
  after ``recovery_after_s``.
- :func:`small_run`: the reference folder of the exact-figure tests, 100 samples
  whose every figure can be worked out by hand (its docstring lists them).

The writers both use (:func:`write_meta`, :func:`write_stages`, :func:`write_csv`,
:func:`locust_entry`) serve a test that writes one file of a folder again, changed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from memstress.common.runfiles import EVENT_COLUMNS, SAMPLE_COLUMNS, STAGE_COLUMNS, WORKER_COLUMNS
from memstress.common.units import MB
from memstress.reports.collect import (
    LOCUST_EXCEPTIONS_COLUMNS,
    LOCUST_FAILURES_COLUMNS,
    LOCUST_HISTORY_COLUMNS,
    LOCUST_STATS_COLUMNS,
    SHED_TYPE,
)

PCTS = ("50%", "66%", "75%", "80%", "90%", "95%", "98%", "99%", "99.9%", "99.99%", "100%")

# --- the writers ---------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """One row of ``stages.csv``: a stage that began ``start_s`` into the run."""

    name: str
    start_s: float
    length_s: float
    users: int
    params: dict[str, Any] = field(default_factory=dict)


def write_csv(path: Path, rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> Path:
    """``rows`` as a CSV file with exactly ``columns`` (a column a row lacks stays empty)."""
    pd.DataFrame(list(rows), columns=list(columns)).to_csv(path, index=False)
    return path


def write_meta(run_dir: Path, **fields: Any) -> dict[str, Any]:
    """``run_meta.json`` of a completed run (exit 0), with ``fields`` added or replaced."""
    meta: dict[str, Any] = {
        "schema": 1,
        "run_id": run_dir.name,
        "stress_level": 1,
        "exit_code": 0,
        "stop_reason": "",
        "interrupted": False,
        "config_path": "stress_test_config.yml",
        **fields,
    }
    (run_dir / "run_meta.json").write_text(json.dumps(meta, indent=2))
    return meta


def write_stages(run_dir: Path, start: float, stages: Sequence[Stage]) -> None:
    """``stages.csv``: one row per stage, each spawning its users in a second."""
    write_csv(
        run_dir / "stages.csv",
        [
            {
                "time": start + st.start_s,
                "elapsed_s": st.start_s,
                "index": i,
                "name": st.name,
                "users": st.users,
                "spawn_rate": st.users,
                "duration_s": st.length_s,
                "params": json.dumps(st.params),
            }
            for i, st in enumerate(stages)
        ],
        STAGE_COLUMNS,
    )


def empty_samples(n: int) -> pd.DataFrame:
    """``n`` rows of ``memory_samples.csv``, every column empty."""
    return pd.DataFrame({c: [""] * n for c in SAMPLE_COLUMNS})


def locust_entry(
    method: str,
    name: str,
    response_times: Mapping[float, int],
    *,
    start: float,
    end: float,
    failures: int = 0,
    content_bytes: int = 0,
) -> dict[str, Any]:
    """One request name of ``locust.json``: its counts and times from a histogram
    of response times (ms -> requests)."""
    count = sum(response_times.values())
    return {
        "name": name,
        "method": method,
        "last_request_timestamp": end,
        "start_time": start,
        "num_requests": count,
        "num_none_requests": 0,
        "num_failures": failures,
        "total_response_time": sum(ms * n for ms, n in response_times.items()),
        "max_response_time": max(response_times),
        "min_response_time": min(response_times),
        "total_content_length": content_bytes * count,
        "response_times": {str(round(ms)): n for ms, n in response_times.items()},
        "num_reqs_per_sec": {},
        "num_fail_per_sec": {},
    }


def write_locust_lists(run_dir: Path, failures: Sequence[Mapping[str, Any]]) -> None:
    """``locust_failures.csv`` with ``failures`` and an empty ``locust_exceptions.csv``."""
    write_csv(run_dir / "locust_failures.csv", failures, LOCUST_FAILURES_COLUMNS)
    write_csv(run_dir / "locust_exceptions.csv", [], LOCUST_EXCEPTIONS_COLUMNS)


# --- a run of any length -------------------------------------------------------------


@dataclass
class Synthetic:
    duration_s: float = 600.0
    interval_s: float = 1.0
    start: float = 1_800_000_000.0
    scenario: str = "memory_leak"
    base_mb: float = 200.0
    leak_mb_min: float = 6.0
    sawtooth_mb: float = 20.0
    sawtooth_s: float = 10.0
    recovery_after_s: float = 30.0
    budget_mb: float = 512.0
    users: int = 10
    cycle_ms: float = 40.0
    rps_per_name: float = 5.0
    fail_every: int = 50  # one failure per this many GET /memory/stats requests
    shed_per_s: float = 0.5
    workers: int = 0
    extra_names: tuple[tuple[str, str, float, float], ...] = ()
    """More request names, as (type, name, response ms, requests/s), none failing."""


def write_run(run_dir: Path, s: Synthetic | None = None) -> Path:
    """Write a complete run folder (warm-up 10%, leak 60%, recovery 30%) into ``run_dir``."""
    s = s or Synthetic()
    run_dir.mkdir(parents=True, exist_ok=True)
    t0, dur = s.start, s.duration_s
    stages = [
        Stage("warmup", 0.0, 0.1 * dur, s.users, {"phase": "warmup"}),
        Stage(
            "leak",
            0.1 * dur,
            0.6 * dur,
            s.users,
            {"leak_mb_per_min": s.leak_mb_min, "phase": "stress", "injects": "leak"},
        ),
        Stage(
            "recovery", 0.7 * dur, 0.3 * dur, s.users, {"leak_mb_per_min": 0, "phase": "recovery"}
        ),
    ]
    write_stages(run_dir, t0, stages)

    el = np.arange(0.0, dur, s.interval_s)
    leak_start, leak_end = stages[1].start_s, stages[2].start_s
    leaked = np.clip(el - leak_start, 0, leak_end - leak_start) / 60.0 * s.leak_mb_min
    leaked = np.where(el >= leak_end + s.recovery_after_s, 0.0, leaked)
    saw = s.sawtooth_mb * ((el % s.sawtooth_s) / s.sawtooth_s)
    rss_mb = s.base_mb + leaked + saw
    opt = (el // 10).astype(int)
    stage_names = np.where(el < leak_start, "warmup", np.where(el < leak_end, "leak", "recovery"))
    samples = empty_samples(len(el))
    samples["time"] = t0 + el
    samples["elapsed_s"] = el
    samples["stage"] = stage_names
    samples["users"] = s.users
    samples["rss_bytes"] = (rss_mb * MB).round()
    samples["rss_source"] = "psutil"
    samples["budget_bytes"] = int(s.budget_mb * MB)
    samples["pressure"] = (100 * rss_mb / s.budget_mb).round(3)
    samples["strategy"] = np.where(100 * rss_mb / s.budget_mb >= 80, "aggressive", "normal")
    samples["optimizations_total"] = opt
    samples["optimizations_failed"] = 0
    samples["bytes_freed_total"] = opt * MB
    samples["leak_suspected"] = ((el >= leak_start + 60) & (el < leak_end)).astype(int)
    samples["unaccounted_bytes"] = (leaked * MB).round()
    samples["vectors_bytes"] = 10 * MB
    samples["conversations_bytes"] = 5 * MB
    samples["host_percent"] = 40.0
    samples["leak_state"] = "clear"
    samples.to_csv(run_dir / "memory_samples.csv", index=False)

    events = [
        (t0 + st.start_s, "stage", json.dumps({"index": i, "name": st.name}))
        for i, st in enumerate(stages)
    ]
    detected = {
        "reason": f"rising {s.leak_mb_min:g} MB/min",
        "slope_mb_min": s.leak_mb_min,
        "ci_low_mb_min": 0.9 * s.leak_mb_min,
        "ci_high_mb_min": 1.1 * s.leak_mb_min,
        "scale_s": 60.0,
    }
    events.append((t0 + leak_start + 60, "leak_detected", json.dumps(detected)))
    events.append((t0 + leak_end + 40, "leak_cleared", json.dumps({"reason": "fell"})))
    events.append((t0 + dur, "run_end", "completed"))
    pd.DataFrame(events, columns=list(EVENT_COLUMNS)).to_csv(run_dir / "events.csv", index=False)
    # The detector's final verdict as the monitor writes it: the leak was called and
    # then given back after the reset.
    episode = {
        "kind": "trend",
        "series": "memory",
        "called_at": t0 + leak_start + 60,
        "cleared_at": t0 + leak_end + 40,
        **{k: v for k, v in detected.items() if k != "reason"},
        "confidence": 0.98,
        "step_mb": None,
        "ended": "released",
        "text": detected["reason"],
    }
    verdict = {
        "verdict": "no leak",
        "reason": "1 leak given back",
        "series": None,
        "episodes": [episode],
        "tiers": [],
        "tiers_note": "",
    }
    (run_dir / "leak_verdict.json").write_text(json.dumps(verdict), encoding="utf-8")

    if s.workers:
        wt = np.repeat(t0 + el[::3], s.workers)
        pd.DataFrame(
            {
                "time": wt,
                "worker_id": np.tile([f"w{i}" for i in range(s.workers)], len(el[::3])),
                "rss_bytes": 80 * MB,
                "cpu_percent": 35.0,
                "user_count": s.users // max(1, s.workers),
            },
            columns=list(WORKER_COLUMNS),
        ).to_csv(run_dir / "worker_samples.csv", index=False)

    _write_locust(run_dir, s)
    write_meta(
        run_dir,
        scenario=s.scenario,
        host="http://127.0.0.1:8000",
        duration_s=dur,
        started=t0,
        ended=t0 + dur,
        purpose="synthetic run",
        expected=["the monitor detects the leak"],
        budget_bytes=int(s.budget_mb * MB),
    )
    return run_dir


def _write_locust(run_dir: Path, s: Synthetic) -> None:
    t0 = s.start
    secs = np.arange(1, int(s.duration_s) + 1, dtype=float)
    per = s.rps_per_name
    names = [
        ("POST", "POST /memory/cycle", s.cycle_ms, 0, per),
        ("GET", "GET /memory/stats", 5.0, s.fail_every, per),
        ("POST", "POST /agents/[id]/messages", 8.0, 0, per),
        (SHED_TYPE, "POST /memory/optimize", 1.0, 0, s.shed_per_s),
        *((typ, name, ms, 0, rate) for typ, name, ms, rate in s.extra_names),
    ]
    hist_frames = []
    entries = []
    stats_rows: list[dict[str, Any]] = []
    agg_req = np.zeros(len(secs))
    agg_fail = np.zeros(len(secs))
    for typ, name, ms, fail_every, rate in names:
        req = np.floor(secs * rate)
        fail = np.floor(req / fail_every) if fail_every else np.zeros(len(secs))
        agg_req += req
        agg_fail += fail
        frame = pd.DataFrame({c: [0.0] * len(secs) for c in LOCUST_HISTORY_COLUMNS})
        frame["Timestamp"] = (t0 + secs).astype(int)
        frame["User Count"] = s.users
        frame["Type"] = typ
        frame["Name"] = name
        frame["Requests/s"] = rate
        frame["Failures/s"] = rate / fail_every if fail_every else 0.0
        for p in PCTS:
            frame[p] = ms * (2.0 if p in ("99%", "99.9%", "99.99%", "100%") else 1.0)
        frame["Total Request Count"] = req
        frame["Total Failure Count"] = fail
        frame["Total Average Response Time"] = ms
        frame["Total Median Response Time"] = ms
        hist_frames.append(frame)
        total = int(req[-1])
        slow = max(1, total // 100)
        entries.append(
            locust_entry(
                typ,
                name,
                {ms: total - slow, 2 * ms: slow},
                start=t0,
                end=t0 + s.duration_s,
                failures=int(fail[-1]),
                content_bytes=100,
            )
        )
        stats_rows.append(
            {
                "Type": typ,
                "Name": name,
                "Request Count": total,
                "Failure Count": int(fail[-1]),
                "Median Response Time": ms,
                "Average Response Time": ms,
                "Min Response Time": ms,
                "Max Response Time": 2 * ms,
                "Average Content Size": 100,
                "Requests/s": rate,
                "Failures/s": 0.0,
                **{p: ms for p in PCTS},
            }
        )
    agg = pd.DataFrame({c: [0.0] * len(secs) for c in LOCUST_HISTORY_COLUMNS})
    agg["Timestamp"] = (t0 + secs).astype(int)
    agg["User Count"] = s.users
    agg["Type"] = ""
    agg["Name"] = "Aggregated"
    agg["Total Request Count"] = agg_req
    agg["Total Failure Count"] = agg_fail
    hist_frames.append(agg)
    history = pd.concat(hist_frames).sort_values("Timestamp", kind="stable")
    history.to_csv(
        run_dir / "locust_stats_history.csv", index=False, columns=list(LOCUST_HISTORY_COLUMNS)
    )
    write_csv(run_dir / "locust_stats.csv", stats_rows, LOCUST_STATS_COLUMNS)
    (run_dir / "locust.json").write_text(json.dumps(entries))
    fails_of_stats = sum(
        int(r["Failure Count"]) for r in stats_rows if r["Name"] == "GET /memory/stats"
    )
    write_locust_lists(
        run_dir,
        [
            {
                "Method": "GET",
                "Name": "GET /memory/stats",
                "Error": "HTTPError('500 Server Error')",
                "Occurrences": int(fails_of_stats),
                "First Seen": "2027-01-15T08:00:01Z",
                "Last Seen": "2027-01-15T09:00:00Z",
            }
        ],
    )


# --- the reference folder of the exact-figure tests ----------------------------------

SMALL_START = 1_000_000.0
"""Unix time the small run starts at."""


def small_rss_mb() -> np.ndarray:
    """100 samples, 1 s apart: 100 MB for 20 s, +2 MB/s to 198 MB, 150 MB for 5 s, then 105 MB."""
    i = np.arange(100)
    return np.where(
        i < 20, 100.0, np.where(i < 70, 100.0 + (i - 20) * 2.0, np.where(i < 75, 150.0, 105.0))
    )


def small_run(run: Path, *, meta: bool = True, **meta_fields: Any) -> Path:
    """The reference folder of the exact-figure tests; ``meta_fields`` replace run_meta's.

    Expected: start 100 MB, end 105 MB, growth 5 MB, peak 198 MB (49.5% of 400 MB);
    20 optimizations, 2 failed (90%), 50 MB freed; 400 requests, 10 errors (2.5%),
    40 shed; recovery 5 s after the stress ended at 70 s; stage 1 has 100 cycles of
    150 ms and 25 shed answers.
    """
    t0 = SMALL_START
    run.mkdir(parents=True, exist_ok=True)
    if meta:
        write_meta(
            run,
            **{
                "scenario": "recovery",
                "host": "http://127.0.0.1:9",
                "duration_s": 100.0,
                "started": t0,
                "ended": t0 + 100,
                "purpose": "test",
                "expected": ["memory returns"],
                "budget_bytes": 400 * MB,
                **meta_fields,
            },
        )
    write_stages(
        run,
        t0,
        [
            Stage("warmup", 0, 20, 2, {"phase": "warmup"}),
            Stage("load", 20, 50, 10, {"leak_mb_per_min": 0, "agents": 4, "phase": "stress"}),
            Stage("idle", 70, 30, 1, {"traffic": False, "phase": "recovery"}),
        ],
    )
    i = np.arange(100)
    samples = empty_samples(100)
    samples["time"] = t0 + i
    samples["elapsed_s"] = i
    samples["stage"] = np.where(i < 20, "warmup", np.where(i < 70, "load", "idle"))
    samples["users"] = 10
    samples["rss_bytes"] = small_rss_mb() * MB
    samples["rss_source"] = "psutil"
    samples["budget_bytes"] = 400 * MB
    samples["optimizations_total"] = 10 + i * 20 // 99  # 10 -> 30
    samples["optimizations_failed"] = 1 + i * 2 // 99  # 1 -> 3
    samples["bytes_freed_total"] = i * 50 * MB // 99  # 0 -> 50 MB
    samples["strategy"] = "normal"
    samples["conversations_bytes"] = 2 * MB
    samples.to_csv(run / "memory_samples.csv", index=False)
    write_csv(
        run / "events.csv",
        [
            {"time": t0 + 20, "kind": "stage", "detail": "load"},
            {"time": t0 + 45, "kind": "health_failed", "detail": "HTTP 503"},
        ],
        EVENT_COLUMNS,
    )
    # 100 cycles: 50 x 100 ms, 45 x 200 ms, 4 x 900 ms, 1 x 2000 ms.
    # total 19600 ms -> mean 0.196 s; Locust percentiles p50 0.2 s, p95 0.9 s, p99 2.0 s.
    start, end = t0 + 1, t0 + 99
    entries = [
        locust_entry(
            "POST",
            "POST /memory/cycle",
            {100: 50, 200: 45, 900: 4, 2000: 1},
            failures=2,
            start=start,
            end=end,
        ),
        locust_entry("GET", "GET /memory/stats", {10: 300}, failures=8, start=start, end=end),
        locust_entry(SHED_TYPE, "POST /memory/optimize", {1: 40}, start=start, end=end),
    ]
    (run / "locust.json").write_text(json.dumps(entries))
    _small_history(run, t0)
    write_csv(
        run / "locust_stats.csv",
        [
            {
                "Type": "POST",
                "Name": "POST /memory/cycle",
                "Request Count": 97,
                "Failure Count": 2,
                "Average Response Time": 190,
                "50%": 200,
                "95%": 900,
                "99%": 2000,
                "Max Response Time": 2000,
                "Requests/s": 1.0,
            },
            {"Type": SHED_TYPE, "Name": "POST /memory/optimize", "Request Count": 39},
            {"Type": "", "Name": "Aggregated", "Request Count": 430},
        ],
        LOCUST_STATS_COLUMNS,
    )
    write_locust_lists(
        run,
        [
            {
                "Method": "GET",
                "Name": "GET /memory/stats",
                "Error": "HTTPError(500)",
                "Occurrences": 8,
            },
            {
                "Method": "POST",
                "Name": "POST /memory/cycle",
                "Error": "HTTPError(502)",
                "Occurrences": 2,
            },
        ],
    )
    return run


def _small_history(run: Path, t0: float) -> None:
    """One row per second and name, cumulative: cycles 2/s at 150 ms, SHED 0.5/s,
    stats 3/s with one failure per 10 s; rolling p95 of the cycle 300 ms."""
    rows = []
    for s in range(1, 101):
        base = {"Timestamp": int(t0 + s), "User Count": 10}
        rows.append(
            {
                **base,
                "Type": "POST",
                "Name": "POST /memory/cycle",
                "Total Request Count": 2 * s,
                "Total Failure Count": 0,
                "Total Average Response Time": 150.0,
                "50%": 150,
                "95%": 300,
                "99%": 400,
                "100%": 500,
                "Requests/s": 2.0,
            }
        )
        rows.append(
            {
                **base,
                "Type": SHED_TYPE,
                "Name": "POST /memory/optimize",
                "Total Request Count": s // 2,
                "Total Failure Count": 0,
                "Total Average Response Time": 1.0,
                "Requests/s": 0.5,
            }
        )
        rows.append(
            {
                **base,
                "Type": "GET",
                "Name": "GET /memory/stats",
                "Total Request Count": 3 * s,
                "Total Failure Count": s // 10,
                "Total Average Response Time": 10.0,
                "Requests/s": 3.0,
            }
        )
        rows.append(
            {
                **base,
                "Type": "",
                "Name": "Aggregated",
                "Total Request Count": 5 * s + s // 2,
                "Total Failure Count": s // 10,
                "Requests/s": 5.5,
            }
        )
    write_csv(run / "locust_stats_history.csv", rows, LOCUST_HISTORY_COLUMNS)
