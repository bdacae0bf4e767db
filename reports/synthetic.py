"""A synthetic run folder with every file the suite writes, for tests and the report benchmark.

The figures are known by construction: RSS is ``base_mb`` plus a linear leak
during the leak stage plus a GC sawtooth (minimum on each window start), so the
lower-envelope slope of the leak stage is ``leak_mb_min`` exactly; memory drops
back to ``base_mb`` in the recovery stage after ``recovery_after_s``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from memstress.common.runfiles import EVENT_COLUMNS, SAMPLE_COLUMNS, STAGE_COLUMNS, WORKER_COLUMNS
from memstress.common.units import MB
from memstress.reports.collect import LOCUST_HISTORY_COLUMNS, LOCUST_STATS_COLUMNS, SHED_TYPE

PCTS = ("50%", "66%", "75%", "80%", "90%", "95%", "98%", "99%", "99.9%", "99.99%", "100%")


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
        ("warmup", 0.0, 0.1 * dur, {"phase": "warmup"}),
        (
            "leak",
            0.1 * dur,
            0.6 * dur,
            {"leak_mb_per_min": s.leak_mb_min, "phase": "stress", "injects": "leak"},
        ),
        ("recovery", 0.7 * dur, 0.3 * dur, {"leak_mb_per_min": 0, "phase": "recovery"}),
    ]
    pd.DataFrame(
        [
            {
                "time": t0 + off,
                "elapsed_s": off,
                "index": i,
                "name": name,
                "users": s.users,
                "spawn_rate": s.users,
                "duration_s": length,
                "params": json.dumps(params),
            }
            for i, (name, off, length, params) in enumerate(stages)
        ],
        columns=list(STAGE_COLUMNS),
    ).to_csv(run_dir / "stages.csv", index=False)

    el = np.arange(0.0, dur, s.interval_s)
    leak_start, leak_end = stages[1][1], stages[2][1]
    leaked = np.clip(el - leak_start, 0, leak_end - leak_start) / 60.0 * s.leak_mb_min
    leaked = np.where(el >= leak_end + s.recovery_after_s, 0.0, leaked)
    saw = s.sawtooth_mb * ((el % s.sawtooth_s) / s.sawtooth_s)
    rss_mb = s.base_mb + leaked + saw
    n = len(el)
    opt = (el // 10).astype(int)
    stage_names = np.where(el < leak_start, "warmup", np.where(el < leak_end, "leak", "recovery"))
    samples = pd.DataFrame({c: [""] * n for c in SAMPLE_COLUMNS})
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
        (t0 + off, "stage", json.dumps({"index": i, "name": name}))
        for i, (name, off, _, _) in enumerate(stages)
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

    _write_locust(run_dir, s, el)
    meta = {
        "schema": 1,
        "scenario": s.scenario,
        "run_id": run_dir.name,
        "host": "http://127.0.0.1:8000",
        "stress_level": 1,
        "duration_s": dur,
        "started": t0,
        "ended": t0 + dur,
        "exit_code": 0,
        "stop_reason": "",
        "interrupted": False,
        "config_path": "stress_test_config.yml",
        "purpose": "synthetic run",
        "expected": ["the monitor detects the leak"],
        "budget_bytes": int(s.budget_mb * MB),
    }
    (run_dir / "run_meta.json").write_text(json.dumps(meta, indent=2))
    return run_dir


def _write_locust(run_dir: Path, s: Synthetic, el: np.ndarray) -> None:
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
    stats_rows = []
    agg_req = np.zeros(len(secs))
    agg_fail = np.zeros(len(secs))
    for typ, name, ms, fail_every, rate in names:
        req = np.floor(secs * rate)
        fail = np.floor(req / fail_every) if fail_every else np.zeros(len(secs))
        agg_req += req
        agg_fail += fail
        row = {c: 0.0 for c in LOCUST_HISTORY_COLUMNS}
        frame = pd.DataFrame({c: [row[c]] * len(secs) for c in LOCUST_HISTORY_COLUMNS})
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
            {
                "name": name,
                "method": typ,
                "last_request_timestamp": t0 + s.duration_s,
                "start_time": t0,
                "num_requests": total,
                "num_none_requests": 0,
                "num_failures": int(fail[-1]),
                "total_response_time": ms * (total - slow) + 2 * ms * slow,
                "max_response_time": 2 * ms,
                "min_response_time": ms,
                "total_content_length": 100 * total,
                "response_times": {str(round(ms)): total - slow, str(round(2 * ms)): slow},
                "num_reqs_per_sec": {},
                "num_fail_per_sec": {},
            }
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
    stats = pd.DataFrame(stats_rows, columns=list(LOCUST_STATS_COLUMNS))
    stats.to_csv(run_dir / "locust_stats.csv", index=False)
    (run_dir / "locust.json").write_text(json.dumps(entries))
    fails_of_stats = stats.loc[stats["Name"] == "GET /memory/stats", "Failure Count"].sum()
    pd.DataFrame(
        [
            [
                "GET",
                "GET /memory/stats",
                "HTTPError('500 Server Error')",
                int(fails_of_stats),
                "2027-01-15T08:00:01Z",
                "2027-01-15T09:00:00Z",
            ]
        ],
        columns=["Method", "Name", "Error", "Occurrences", "First Seen", "Last Seen"],
    ).to_csv(run_dir / "locust_failures.csv", index=False)
    pd.DataFrame(columns=["Count", "Message", "Traceback", "Nodes"]).to_csv(
        run_dir / "locust_exceptions.csv", index=False
    )
