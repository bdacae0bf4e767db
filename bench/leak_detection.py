"""Leak detection: recall, delay and false alarms of the monitor's online leak detector.

Every run here is a real one: a fresh reference service, a real Locust process
running ``locustfile.py`` (a real scenario, the memory monitor at its default
interval), on loopback. Runs go in parallel, longest first, a bounded number
at a time.

- **Leak runs**: the baseline scenario's traffic; after ``PRE_S`` seconds of it
  (cache warm-up included) this process drips ``POST /faults/leak`` once a
  second at a set rate (0.5, 1, 2, 5, 20 MB/min; MB = 2**20 B), to the end of
  the run. Detection delay: the monitor's first ``leak_detected`` event in
  ``events.csv`` minus the first drip.
- **Leak-free runs**: baseline, vector_store and concurrent_agents as they are;
  any ``leak_detected`` is a false alarm.

Alongside, this process records the service's RSS itself (psutil, 1 s) and
replays that series through :class:`monitors.leak.LeakDetector` afterwards: a
cross-check of the online verdict on an independently taken series, and the
series is kept in each run folder for re-analysis.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil
import requests

from bench.procs import ROOT, BenchError, cpus, finish_locust, start_locust, start_service
from bench.results import BenchResult, Goal, Table

RATES = (0.5, 1.0, 2.0, 5.0, 20.0)
GOAL_S = {0.5: 600.0, 1.0: 300.0, 2.0: 120.0, 5.0: 120.0, 20.0: 120.0}
REPEATS = 3
PRE_S = 60.0  # traffic before the drip starts: the warm-up is inside every leak run
TAIL_S = 30.0  # run on past the goal (and the scenario's cleanup stage)
FREE_SCENARIOS = ("baseline", "vector_store", "concurrent_agents")
FREE_S = 600.0
LOCUSTFILE = ROOT / "locustfile.py"
MB = 1 << 20


@dataclass(frozen=True)
class Job:
    scenario: str
    rate: float  # MB/min; 0 for a leak-free run
    rep: int
    duration_s: float  # the scenario's --duration
    pre_s: float  # seconds from the first stage to the first drip
    goal_s: float | None = None  # found within this many seconds of the first drip

    @property
    def tag(self) -> str:
        kind = f"leak{self.rate:g}" if self.rate else "free"
        return f"{kind}-{self.scenario}-{self.rep}"


@dataclass
class JobResult:
    job: Job
    t0: float | None = None  # time of the first stage (stages.csv)
    leak_start: float | None = None  # time of the first drip
    leaked_bytes: int = 0
    drips: int = 0
    drip_errors: int = 0
    series: list[tuple[float, int]] = field(default_factory=list)  # (time, RSS) taken here
    events: list[dict[str, str]] = field(default_factory=list)
    exit_code: int | None = None
    monitor_samples: int = 0
    error: str | None = None
    service_cpu_s: float | None = None
    wall_s: float = 0.0


def plan(small: bool) -> list[Job]:
    if small:
        return [Job("baseline", 60.0, 0, 9.0, 3.0, 6.0)]
    jobs = [
        Job("baseline", r, i, PRE_S + GOAL_S[r] + TAIL_S, PRE_S, GOAL_S[r])
        for r in RATES
        for i in range(REPEATS)
    ]
    jobs += [Job(s, 0.0, 0, FREE_S, FREE_S) for s in FREE_SCENARIOS]
    return sorted(jobs, key=lambda j: -j.duration_s)  # longest first: the pool ends sooner


def _first_stage_time(run_dir: Path) -> float | None:
    path = run_dir / "stages.csv"
    try:
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                return float(row["time"])
    except (OSError, ValueError, KeyError):
        return None
    return None


def _read_csv(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="") as fh:
            return list(csv.DictReader(fh))
    except OSError:
        return []


def run_job(job: Job, workdir: Path, stop: threading.Event) -> JobResult:
    """One real run: service, Locust (locustfile.py + monitor), the drip, the RSS record."""
    from scenarios.control import leak_bytes

    res = JobResult(job)
    started = time.monotonic()
    jobdir = workdir / job.tag
    run_dir = jobdir / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    svc = start_service(jobdir, budget_mb=512)
    session = requests.Session()
    try:
        args = ["--headless", "--scenario", job.scenario, "--duration", f"{job.duration_s:g}"]
        args += ["--run-dir", str(run_dir), "--csv", str(run_dir / "locust"), "--only-summary"]
        wall0 = time.time()
        proc = start_locust(LOCUSTFILE, run_dir, args, host=svc.url)
        cpu0 = svc.cpu()
        proc_svc = psutil.Process(svc.pid)
        deadline = time.monotonic() + job.duration_s + 120
        next_tick = time.monotonic()
        last_drip: float | None = None
        while proc.poll() is None and time.monotonic() < deadline and not stop.is_set():
            now = time.time()
            if res.t0 is None:
                res.t0 = _first_stage_time(run_dir)
            try:
                res.series.append((now, int(proc_svc.memory_info().rss)))
            except psutil.Error:
                res.error = "the service process went away"
                break
            if job.rate and res.t0 is not None and now >= res.t0 + job.pre_s:
                n = leak_bytes(job.rate, 1.0 if last_drip is None else now - last_drip)
                if res.leak_start is None:
                    res.leak_start = now
                last_drip = now
                try:
                    r = session.post(svc.url + "/faults/leak", json={"bytes": n}, timeout=5)
                    if r.status_code == 200:
                        res.leaked_bytes += n
                        res.drips += 1
                    else:
                        res.drip_errors += 1
                except requests.RequestException:
                    res.drip_errors += 1
            next_tick += 1.0
            time.sleep(max(0.0, next_tick - time.monotonic()))
        try:
            run = finish_locust(proc, run_dir, wall0, timeout=max(5.0, deadline - time.monotonic()))
            res.exit_code = run.exit_code
        except BenchError as exc:
            res.error = str(exc)
        res.service_cpu_s = svc.cpu() - cpu0
        res.events = _read_csv(run_dir / "events.csv")
        res.monitor_samples = len(_read_csv(run_dir / "memory_samples.csv"))
        (jobdir / "rss_series.json").write_text(
            json.dumps({"job": job.__dict__, "leak_start": res.leak_start, "series": res.series})
        )
    finally:
        session.close()
        svc.stop()
        res.wall_s = time.monotonic() - started
    return res


# --- judging --------------------------------------------------------------------------


@dataclass
class Verdict:
    detected_at: float | None  # first leak_detected at or after the leak start (or any, leak-free)
    false_alarms: int  # leak_detected before the leak started (all of them, leak-free)
    slope: float | None = None  # the slope the detector reported at detection, MB/min


def online_verdict(res: JobResult) -> Verdict:
    """From the monitor's events.csv (the end-to-end result)."""
    times = []
    for e in res.events:
        if e.get("kind") == "leak_detected":
            try:
                times.append((float(e["time"]), e.get("detail", "")))
            except (KeyError, ValueError):
                continue
    start = res.leak_start if res.job.rate else math.inf
    before = [t for t, _ in times if start is None or t < start]
    after = [(t, d) for t, d in times if start is not None and t >= start]
    slope = _slope_of(after[0][1]) if after else None
    # A false alarm before the leak that never cleared leaves the state 'leak' at its start.
    detected = after[0][0] if after else None
    if detected is None and before and res.job.rate and not _cleared_after(res, before[-1]):
        detected = start
    return Verdict(detected, len(before), slope)


def _cleared_after(res: JobResult, t: float) -> bool:
    for e in res.events:
        if e.get("kind") == "leak_cleared":
            try:
                if float(e["time"]) > t:
                    return True
            except (KeyError, ValueError):
                continue
    return False


def _slope_of(detail: str) -> float | None:
    try:
        d = json.loads(detail)
    except ValueError:
        return None
    value = d.get("slope_mb_min") if isinstance(d, dict) else None
    return float(value) if isinstance(value, int | float) else None


def replay_verdict(res: JobResult, settings: Any) -> Verdict:
    """The same detector on the RSS series this process took (first sample = its start)."""
    from monitors.leak import LeakDetector

    if not res.series:
        return Verdict(None, 0)
    det = LeakDetector(settings, start=res.t0 if res.t0 is not None else res.series[0][0])
    start = res.leak_start if res.job.rate else math.inf
    detected: float | None = None
    false_alarms = 0
    slope = None
    for t, rss in res.series:
        if res.t0 is not None and t < res.t0:
            continue
        v = det.add(t, float(rss))
        if v.changed == "leak_detected":
            if start is None or t < start:
                false_alarms += 1
            elif detected is None:
                detected, slope = t, v.slope_mb_min
        if (
            detected is None
            and start is not None
            and res.job.rate
            and t >= start
            and v.state == "leak"
            and v.changed is None
        ):
            detected = start  # still 'leak' from before the drip began
    return Verdict(detected, false_alarms, slope)


def _delay(v: Verdict, res: JobResult) -> float | None:
    if v.detected_at is None or res.leak_start is None:
        return None
    return max(0.0, v.detected_at - res.leak_start)


# --- the benchmark ---------------------------------------------------------------------


def run(workdir: Path, small: bool, *, slots: int | None = None) -> BenchResult:
    from common.config import load_config

    settings = load_config().monitor.leak_detection
    jobs = plan(small)
    cores = len(cpus())
    slots = slots or (1 if small else min(len(jobs), 5 * max(1, cores)))
    result = BenchResult(
        name="leak",
        title="Leak detection: recall, delay and false alarms",
        mode="small" if small else "full",
        what=(
            "The monitor's online leak detector (`monitors/leak.py`, config "
            f"`monitor.leak_detection`: warm-up {settings.warmup_s:g} s, {settings.window_s:g} s "
            f"windows, {settings.lookback_s:g} s lookback, min slope "
            f"{settings.min_slope_mb_per_min:g} MB/min, significance {settings.significance:g}) "
            "in real end-to-end runs: a fresh reference service and a real Locust process "
            "running `locustfile.py` with the memory monitor at its default interval. Leak runs: "
            f"the baseline scenario's traffic, and after {PRE_S:g} s of it (the warm-up is in "
            "every run) a steady `POST /faults/leak` drip once a second at "
            + ", ".join(f"{r:g}" for r in RATES)
            + f" MB/min (MB = 2^20 B), {REPEATS} runs each, each lasting until its goal plus "
            f"{TAIL_S:g} s; the delay is the monitor's first `leak_detected` event minus the "
            "first drip. Leak-free runs: "
            + ", ".join(FREE_SCENARIOS)
            + f" for {FREE_S:g} s each at the default stress level; any `leak_detected` is a "
            f"false alarm. Up to {slots} runs at a time, longest first. The service's RSS is "
            "also sampled by the benchmark itself (psutil, 1 s) and that series replayed "
            "through the same detector class afterwards (the replay columns)."
        ),
    )
    if small:
        result.what += (
            " Small mode: one 9 s baseline run with a 60 MB/min drip after 3 s, replayed with "
            "the detector's times divided by 20 (a smoke run of the whole path, no figures)."
        )
    stop = threading.Event()
    results: list[JobResult] = []
    with ThreadPoolExecutor(max_workers=slots, thread_name_prefix="leak") as pool:
        futures = [pool.submit(_guarded(run_job), j, workdir, stop) for j in jobs]
        try:
            for f in futures:
                results.append(f.result())
        except BaseException:
            stop.set()
            raise
    replay_settings = settings
    if small:
        k = 20.0
        replay_settings = replace(
            settings,
            warmup_s=settings.warmup_s / k,
            window_s=settings.window_s / k,
            lookback_s=settings.lookback_s / k,
        )
    _aggregate(result, results, replay_settings, small)
    result.setup = {
        "rates_mb_per_min": list(RATES) if not small else [60.0],
        "repeats": REPEATS if not small else 1,
        "pre_s": PRE_S if not small else 3.0,
        "goal_s": {f"{k:g}": v for k, v in GOAL_S.items()},
        "leak_free_scenarios": list(FREE_SCENARIOS) if not small else [],
        "leak_free_s": FREE_S,
        "parallel_runs": slots,
        "detector": settings.__dict__,
        "replay_detector": replay_settings.__dict__,
    }
    return result


def _guarded(fn: Callable[[Job, Path, threading.Event], JobResult]) -> Callable[..., JobResult]:
    def call(job: Job, workdir: Path, stop: threading.Event) -> JobResult:
        try:
            return fn(job, workdir, stop)
        except Exception as exc:  # one failed run is reported, the others still count
            return JobResult(job, error=f"{type(exc).__name__}: {exc}")

    return call


def _aggregate(result: BenchResult, results: list[JobResult], settings: Any, small: bool) -> None:
    rows: list[dict[str, Any]] = []
    for r in results:
        on = online_verdict(r)
        rp = replay_verdict(r, settings)
        rows.append(
            {
                "run": r.job.tag,
                "scenario": r.job.scenario,
                "rate_mb_min": r.job.rate,
                "duration_s": r.job.duration_s,
                "goal_s": r.job.goal_s,
                "leaked_mb": r.leaked_bytes / MB,
                "drips": r.drips,
                "drip_errors": r.drip_errors,
                "online_delay_s": _delay(on, r),
                "online_false_alarms": on.false_alarms,
                "online_slope_mb_min": on.slope,
                "replay_delay_s": _delay(rp, r),
                "replay_false_alarms": rp.false_alarms,
                "replay_slope_mb_min": rp.slope,
                "monitor_samples": r.monitor_samples,
                "own_samples": len(r.series),
                "rss_start_mb": r.series[0][1] / MB if r.series else None,
                "rss_end_mb": r.series[-1][1] / MB if r.series else None,
                "service_cpu_s": r.service_cpu_s,
                "exit_code": r.exit_code,
                "error": r.error,
                "wall_s": r.wall_s,
            }
        )
    result.raw = {"runs": rows}
    rates = sorted({row["rate_mb_min"] for row in rows if row["rate_mb_min"]})
    per_rate = []
    for rate in rates:
        rr = [row for row in rows if row["rate_mb_min"] == rate]
        goal = rr[0]["goal_s"]
        entry: dict[str, Any] = {"rate_mb_min": rate, "runs": len(rr), "goal_s": goal}
        for src in ("online", "replay"):
            delays = [row[f"{src}_delay_s"] for row in rr]
            found = [d for d in delays if d is not None]
            in_goal = [d for d in found if goal is None or d <= goal]
            entry[f"{src}_found"] = len(found)
            entry[f"{src}_found_in_goal"] = len(in_goal)
            entry[f"{src}_recall"] = len(in_goal) / len(rr) if rr else None
            entry[f"{src}_median_delay_s"] = statistics.median(found) if found else None
            entry[f"{src}_max_delay_s"] = max(found) if found else None
        per_rate.append(entry)
    free = [row for row in rows if not row["rate_mb_min"]]
    pre = [row for row in rows if row["rate_mb_min"]]
    fa_free_on = sum(row["online_false_alarms"] for row in free)
    fa_free_rp = sum(row["replay_false_alarms"] for row in free)
    fa_pre_on = sum(row["online_false_alarms"] for row in pre)
    fa_pre_rp = sum(row["replay_false_alarms"] for row in pre)
    monitor_ran = all(row["monitor_samples"] > 0 for row in rows)
    result.raw["per_rate"] = per_rate
    result.raw["false_alarms"] = {
        "leak_free_runs": len(free),
        "online_on_leak_free_runs": fa_free_on,
        "replay_on_leak_free_runs": fa_free_rp,
        "online_before_the_drip_in_leak_runs": fa_pre_on,
        "replay_before_the_drip_in_leak_runs": fa_pre_rp,
    }
    result.raw["monitor_ran_in_every_run"] = monitor_ran
    errors = [f"{row['run']}: {row['error']}" for row in rows if row["error"]]
    result.notes += errors
    src = "online" if monitor_ran else "replay"
    result.ratios = {f"recall_{e['rate_mb_min']:g}_mb_min": e[f"{src}_recall"] for e in per_rate}
    if not small:
        for e in per_rate:
            result.goals.append(
                Goal(
                    f"{e['rate_mb_min']:g} MB/min leaks found within {e['goal_s'] or 0:g} s "
                    f"({src}, share of {e['runs']} runs)",
                    e[f"{src}_recall"],
                    ">=",
                    1.0,
                )
            )
        result.goals.append(
            Goal(
                f"false alarms on the {len(free)} leak-free runs ({src})",
                float(fa_free_on if src == "online" else fa_free_rp),
                "==",
                0.0,
            )
        )
    result.tables = [
        Table(
            "Per rate (delay = detection time minus the first drip)",
            [
                "MB/min",
                "runs",
                "goal s",
                "found in goal (online)",
                "median delay s (online)",
                "max delay s (online)",
                "found in goal (replay)",
                "median delay s (replay)",
            ],
            [
                [
                    e["rate_mb_min"],
                    e["runs"],
                    e["goal_s"],
                    f"{e['online_found_in_goal']}/{e['runs']}",
                    e["online_median_delay_s"],
                    e["online_max_delay_s"],
                    f"{e['replay_found_in_goal']}/{e['runs']}",
                    e["replay_median_delay_s"],
                ]
                for e in per_rate
            ],
        ),
        Table(
            "False alarms",
            ["where", "online (monitor)", "replay"],
            [
                [f"leak-free runs ({len(free)})", fa_free_on, fa_free_rp],
                [f"leak runs, before the drip began ({len(pre)})", fa_pre_on, fa_pre_rp],
            ],
        ),
        Table(
            "Every run",
            [
                "run",
                "s",
                "leaked MB",
                "online delay s",
                "online slope MB/min",
                "replay delay s",
                "false alarms (online/replay)",
                "RSS MB start -> end",
                "service CPU s",
                "exit",
            ],
            [
                [
                    row["run"],
                    row["duration_s"],
                    row["leaked_mb"],
                    row["online_delay_s"],
                    row["online_slope_mb_min"],
                    row["replay_delay_s"],
                    f"{row['online_false_alarms']}/{row['replay_false_alarms']}",
                    (
                        f"{row['rss_start_mb']:.0f} -> {row['rss_end_mb']:.0f}"
                        if row["rss_start_mb"] is not None
                        else None
                    ),
                    row["service_cpu_s"],
                    row["exit_code"],
                ]
                for row in rows
            ],
        ),
    ]
    reading = [
        "Real end-to-end: every run (service, Locust with `locustfile.py`, the monitor, the "
        "drip through the API); the goals use the monitor's own `leak_detected` events"
        + (
            "."
            if monitor_ran
            else " where the monitor ran; it did not in every run, so the goals use the replay."
        )
        + " Replay: the benchmark's own psutil series of the same runs through the same "
        "detector class, as a cross-check."
    ]
    for e in per_rate:
        med = e[f"{src}_median_delay_s"]
        reading.append(
            f"{e['rate_mb_min']:g} MB/min: {e[f'{src}_found_in_goal']}/{e['runs']} found within "
            f"{e['goal_s'] or 0:g} s"
            + (f", median delay {med:.0f} s." if med is not None else ", none found.")
        )
    reading.append(
        f"False alarms: {fa_free_on if src == 'online' else fa_free_rp} on {len(free)} "
        f"leak-free runs, {fa_pre_on if src == 'online' else fa_pre_rp} in the "
        f"{PRE_S:g} s before the drip in {len(pre)} leak runs."
    )
    if small:
        reading.append("Small mode: a smoke run of the whole path; the figures mean nothing.")
    result.reading = reading
