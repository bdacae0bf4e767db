"""Leak detection: recall, delay and false alarms of the monitor's leak detector.

Two parts, run in parallel (every run has its own fresh reference service):

- **Leak-free runs, real end to end**: baseline, vector_store and
  concurrent_agents as they are, each a real Locust process running
  ``locustfile.py`` with the memory monitor at its default interval. Any
  ``leak_detected`` in ``events.csv`` is a false alarm. The benchmark also
  samples the service's RSS itself (psutil, 1 s) and replays that series
  through :class:`monitors.leak.LeakDetector` (a cross-check of the online
  verdict).
- **Leak runs, recorded and replayed**: a service under a steady
  ``POST /faults/leak`` drip (once a second at 0.5, 1, 2, 5, 20 MB/min,
  MB = 2**20 B) that starts after ``PRE_S`` seconds, with light read-only
  traffic the whole time (searches and context reads with a fixed pool of
  queries, history reads, health, a management cycle every second, as the
  baseline's cycler sends) so the allocator churns but nothing but the leak
  grows. The service's RSS is sampled every second (psutil, as the monitor's
  first source does) and the series replayed through the detector class the
  monitor uses, with the config's settings: the delay is the first
  ``leak_detected`` minus the first drip.

What the detector judges is what :class:`monitors.monitor.MemoryMonitor` feeds
it: RSS less the bytes the target accounts to its tiers (conversations,
vectors, embedding cache, ballast) when the target serves ``/memory/stats``, as
the reference service does. The replays use that input (RSS from psutil, tiers
from ``/memory/stats`` taken in the same tick) and, as a second column, plain
RSS: what the monitor judges on a platform without ``/memory/stats``.
"""

from __future__ import annotations

import json
import math
import random
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil
import requests

from bench.procs import (
    ROOT,
    BenchError,
    Service,
    finish_locust,
    read_rows,
    start_locust,
    start_service,
)
from bench.results import BenchResult, Goal, Table
from common.units import MB

RATES = (0.5, 1.0, 2.0, 5.0, 20.0)
GOAL_S = {0.5: 600.0, 1.0: 300.0, 2.0: 120.0, 5.0: 120.0, 20.0: 120.0}
REPEATS = 3
PRE_S = 60.0  # before the drip starts; the detector's warm-up and the caches' are in it
TAIL_S = 30.0  # recorded past the goal
FREE_SCENARIOS = ("baseline", "vector_store", "concurrent_agents")
FREE_S = 600.0
BACKGROUND_PERIOD_S = 0.2  # read-only traffic during a drip recording: 5 requests/s
LOCUSTFILE = ROOT / "locustfile.py"

Series = list[tuple[float, float]]
Points = Sequence[tuple[float, float | None]]  # a series that may miss values


@dataclass(frozen=True)
class Job:
    kind: str  # "drip": recorded and replayed; "real": a Locust run with the monitor
    scenario: str  # the real run's scenario ("" for a drip recording)
    rate: float  # MB/min; 0 for a leak-free run
    rep: int
    duration_s: float
    pre_s: float = PRE_S  # seconds from the start to the first drip
    goal_s: float | None = None  # found within this many seconds of the first drip
    sample_s: float = 1.0  # the monitor's default interval

    @property
    def tag(self) -> str:
        return f"drip{self.rate:g}-{self.rep}" if self.kind == "drip" else f"free-{self.scenario}"


@dataclass
class JobResult:
    job: Job
    t0: float | None = None  # the detector's start: first sample (drip), first stage (real)
    leak_start: float | None = None  # time of the first drip
    leaked_bytes: int = 0
    drips: int = 0
    drip_errors: int = 0
    rss: Series = field(default_factory=list)  # (time, RSS) sampled by this process
    judged: list[tuple[float, float | None]] = field(default_factory=list)  # RSS - tiers
    accounted: Series = field(default_factory=list)  # (time, bytes the target's tiers hold)
    events: list[dict[str, str]] = field(default_factory=list)
    exit_code: int | None = None
    monitor_samples: int = 0
    background_requests: int = 0
    background_errors: int = 0
    error: str | None = None
    service_cpu_s: float | None = None
    wall_s: float = 0.0


def plan(small: bool) -> list[Job]:
    if small:
        return [
            Job("drip", "", 60.0, 0, 9.0, 3.0, 6.0, sample_s=0.25),
            Job("real", "baseline", 0.0, 0, 9.0),
        ]
    jobs = [
        Job("drip", "", r, i, PRE_S + GOAL_S[r] + TAIL_S, PRE_S, GOAL_S[r])
        for r in RATES
        for i in range(REPEATS)
    ]
    jobs += [Job("real", s, 0.0, 0, FREE_S) for s in FREE_SCENARIOS]
    return sorted(jobs, key=lambda j: -j.duration_s)  # longest first: the pool ends sooner


def _num(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


TIERS = ("conversations", "vectors", "embedding_cache", "ballast")
"""The tiers whose bytes the monitor takes off RSS (``monitors.sources.TIERS``)."""


def _accounted(stats: dict[str, Any]) -> float:
    tiers = stats.get("tiers") or {}
    return float(sum(float((tiers.get(t) or {}).get("bytes") or 0) for t in TIERS))


# --- part 1: a drip recording --------------------------------------------------------------


class Background(threading.Thread):
    """Read-only traffic on a seeded service: nothing it does makes the service grow."""

    def __init__(self, url: str, stop: threading.Event, period: float) -> None:
        super().__init__(name="leak-background", daemon=True)
        self.url = url
        self.stop_event = stop
        self.period = period
        self.session = requests.Session()
        self.requests = 0
        self.errors = 0
        rng = random.Random(3)
        from scenarios.api import WORDS, text_of

        self.queries = [" ".join(rng.choices(WORDS, k=5)) for _ in range(16)]
        self.agents = [f"bench-agent-{k}" for k in range(4)]
        for a in self.agents:
            for i in range(10):
                body = {"role": "user" if i % 2 else "assistant", "content": text_of(rng, 400)}
                self._call("POST", f"/agents/{a}/messages", body)
        for d in range(4):
            body = {"namespace": "bench-ns", "doc_id": f"d{d}", "text": text_of(rng, 2048)}
            self._call("POST", "/vectors/documents", body)
        self.requests = self.errors = 0

    def _call(self, method: str, path: str, body: Any = None) -> None:
        try:
            r = self.session.request(method, self.url + path, json=body, timeout=5)
            self.requests += 1
            self.errors += r.status_code >= 400
        except requests.RequestException:
            self.errors += 1

    def run(self) -> None:
        i = 0
        next_at = time.monotonic()
        while not self.stop_event.is_set():
            q = self.queries[i % len(self.queries)]
            agent = self.agents[i % len(self.agents)]
            step = i % 4
            if step == 0:
                self._call("POST", "/vectors/search", {"namespace": "bench-ns", "query": q, "k": 5})
            elif step == 1:
                self._call("GET", f"/agents/{agent}/context?query={q.replace(' ', '+')}&k=5")
            elif step == 2:
                self._call("GET", f"/agents/{agent}/messages?offset=0&limit=20")
            else:
                self._call("GET", "/health")
            i += 1
            next_at += self.period
            self.stop_event.wait(max(0.0, next_at - time.monotonic()))
        self.session.close()


def record_drip(job: Job, workdir: Path, stop: threading.Event) -> JobResult:
    """A service, read-only traffic, a cycle a second, the drip; RSS and accounting each second."""
    from scenarios.control import leak_bytes

    res = JobResult(job)
    started = time.monotonic()
    jobdir = workdir / job.tag
    jobdir.mkdir(parents=True, exist_ok=True)
    svc: Service = start_service(jobdir, budget_mb=512)
    quit_traffic = threading.Event()
    try:
        traffic = Background(svc.url, quit_traffic, BACKGROUND_PERIOD_S)
        traffic.start()
        proc = psutil.Process(svc.pid)
        cpu0 = svc.cpu()
        res.t0 = time.time()
        end = time.monotonic() + job.duration_s
        next_tick = time.monotonic()
        last_drip: float | None = None
        while time.monotonic() < end and not stop.is_set():
            now = time.time()
            try:
                rss = float(proc.memory_info().rss)
            except psutil.Error:
                res.error = "the service process went away"
                break
            res.rss.append((now, rss))
            judged: float | None = None
            try:
                svc.post("/memory/cycle", timeout=5)  # as the baseline's cycler does
                acc = _accounted(svc.get("/memory/stats", timeout=5))
                res.accounted.append((now, acc))
                judged = rss - acc
            except (requests.RequestException, BenchError, ValueError):
                pass  # the monitor judges nothing for a sample whose stats did not come
            res.judged.append((now, judged))
            if job.rate and now >= res.t0 + job.pre_s:
                n = leak_bytes(job.rate, job.sample_s if last_drip is None else now - last_drip)
                if res.leak_start is None:
                    res.leak_start = now
                last_drip = now
                try:
                    svc.post("/faults/leak", {"bytes": n}, timeout=5)
                    res.leaked_bytes += n
                    res.drips += 1
                except (requests.RequestException, BenchError):
                    res.drip_errors += 1
            next_tick += job.sample_s
            time.sleep(max(0.0, next_tick - time.monotonic()))
        res.service_cpu_s = svc.cpu() - cpu0
        quit_traffic.set()
        traffic.join(10)
        res.background_requests, res.background_errors = traffic.requests, traffic.errors
        _save(jobdir, res)
    finally:
        quit_traffic.set()
        svc.stop()
        res.wall_s = time.monotonic() - started
    return res


def _save(jobdir: Path, res: JobResult) -> None:
    (jobdir / "series.json").write_text(
        json.dumps(
            {
                "job": asdict(res.job),
                "t0": res.t0,
                "leak_start": res.leak_start,
                "rss": res.rss,
                "judged": res.judged,
                "accounted": res.accounted,
            }
        )
    )


# --- part 2: a real leak-free run ------------------------------------------------------------


def run_real(job: Job, workdir: Path, stop: threading.Event) -> JobResult:
    """A service and a real Locust run of ``locustfile.py`` (monitor on); RSS sampled here too."""
    res = JobResult(job)
    started = time.monotonic()
    jobdir = workdir / job.tag
    run_dir = jobdir / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    svc = start_service(jobdir, budget_mb=512)
    try:
        args = ["--headless", "--scenario", job.scenario, "--duration", f"{job.duration_s:g}"]
        args += ["--run-dir", str(run_dir), "--csv", str(run_dir / "locust"), "--only-summary"]
        args += ["--target-pid", str(svc.pid)]
        wall0 = time.time()
        proc = start_locust(LOCUSTFILE, run_dir, args, host=svc.url)
        cpu0 = svc.cpu()
        target = psutil.Process(svc.pid)
        deadline = time.monotonic() + job.duration_s + 120
        next_tick = time.monotonic()
        while proc.poll() is None and time.monotonic() < deadline and not stop.is_set():
            try:
                res.rss.append((time.time(), float(target.memory_info().rss)))
            except psutil.Error:
                res.error = "the service process went away"
                break
            next_tick += 1.0
            time.sleep(max(0.0, next_tick - time.monotonic()))
        try:
            run = finish_locust(proc, run_dir, wall0, timeout=max(5.0, deadline - time.monotonic()))
            res.exit_code = run.exit_code
        except BenchError as exc:
            res.error = str(exc)
        res.service_cpu_s = svc.cpu() - cpu0
        stages = read_rows(run_dir / "stages.csv")
        res.t0 = _num(stages[0]["time"]) if stages else (res.rss[0][0] if res.rss else None)
        res.events = read_rows(run_dir / "events.csv")
        samples = read_rows(run_dir / "memory_samples.csv")
        res.monitor_samples = len(samples)
        for row in samples:  # the monitor's own input, as MemoryMonitor._judged_value makes it
            t, rss = _num(row.get("time")), _num(row.get("rss_bytes"))
            if t is None:
                continue
            tiers = [_num(row.get(f"{k}_bytes")) for k in TIERS]
            if rss is None or all(v is None for v in tiers):
                res.judged.append((t, None))
                continue
            acc = sum(v for v in tiers if v is not None)
            res.accounted.append((t, acc))
            res.judged.append((t, rss - acc))
        _save(jobdir, res)
    finally:
        svc.stop()
        res.wall_s = time.monotonic() - started
    return res


# --- judging ---------------------------------------------------------------------------------


@dataclass
class Verdict:
    detected_at: float | None  # first leak_detected at or after the first drip
    false_alarms: int  # leak_detected before the first drip (every one, on a leak-free run)
    slope: float | None = None  # MB/min the detector reported when it called the leak


def online_verdict(res: JobResult) -> Verdict:
    """The monitor's own verdict, from the run's events.csv."""
    hits = [
        (t, e.get("detail", ""))
        for e in res.events
        if e.get("kind") == "leak_detected" and (t := _num(e.get("time"))) is not None
    ]
    start = res.leak_start if res.job.rate else None
    before = [t for t, _ in hits if start is None or t < start]
    after = [(t, d) for t, d in hits if start is not None and t >= start]
    return Verdict(
        after[0][0] if after else None, len(before), _slope(after[0][1]) if after else None
    )


def _slope(detail: str) -> float | None:
    try:
        d = json.loads(detail)
    except ValueError:
        return None
    value = d.get("slope_mb_min") if isinstance(d, dict) else None
    return float(value) if isinstance(value, int | float) else None


def replay(res: JobResult, series: Points, settings: Any) -> Verdict:
    """The monitor's detector class on a recorded series, started where the run started."""
    from monitors.leak import LEAK, LeakDetector

    if not series or res.t0 is None:
        return Verdict(None, 0)
    det = LeakDetector(settings, start=res.t0)
    start = res.leak_start if res.job.rate else None
    detected: float | None = None
    slope: float | None = None
    false_alarms = 0
    for t, value in series:
        if t < res.t0:
            continue
        v = det.add(t, value)
        if start is None or t < start:
            false_alarms += v.changed == "leak_detected"
        elif detected is None and v.state == LEAK:
            # The first verdict of 'leak' at or after the first drip (a call made before
            # the drip that never cleared counts from the drip's start).
            detected, slope = t, v.slope_mb_min
    return Verdict(detected, false_alarms, slope)


def _delay(v: Verdict, res: JobResult) -> float | None:
    if v.detected_at is None or res.leak_start is None:
        return None
    return max(0.0, v.detected_at - res.leak_start)


MARKS_S = (0, 60, 120, 180, 300)


def at_marks(series: Points, t0: float | None) -> str | None:
    """'MB at 0 / 60 / ... s / the end' of a series (the sample nearest each mark)."""
    pts = [(t, v) for t, v in series if v is not None and (t0 is None or t >= t0)]
    if not pts or t0 is None:
        return None
    end = pts[-1][0] - t0
    out = []
    for mark in [m for m in MARKS_S if m < end] + [end]:
        _, v = min(pts, key=lambda p: abs(p[0] - t0 - mark))
        out.append(f"{v / MB:.1f}")
    return " / ".join(out)


def growth(series: Points, t0: float | None) -> dict[str, float | None]:
    """MB from first to last (medians of 10 points each end) and MB/min over the last half."""
    pts = [(t, v) for t, v in series if (t0 is None or t >= t0) and v is not None]
    if len(pts) < 20:
        return {"start_mb": None, "end_mb": None, "mb_per_min_last_half": None}
    first = statistics.median(v for _, v in pts[:10]) / MB
    last = statistics.median(v for _, v in pts[-10:]) / MB
    half = pts[len(pts) // 2 :]
    span = half[-1][0] - half[0][0]
    a = statistics.median(v for _, v in half[:10]) / MB
    per_min = (last - a) / (span / 60) if span > 0 else None
    return {"start_mb": first, "end_mb": last, "mb_per_min_last_half": per_min}


# --- the benchmark -----------------------------------------------------------------------------


def run(workdir: Path, small: bool) -> BenchResult:
    from common.config import load_config

    settings = load_config().monitor.leak_detection
    jobs = plan(small)
    replay_settings = settings
    if small:  # a smoke run: the detector's clock divided by 20 so 9 s can reach a verdict
        k = 20.0
        replay_settings = replace(
            settings,
            warmup_s=settings.warmup_s / k,
            window_s=settings.window_s / k,
            lookback_s=settings.lookback_s / k,
        )
    result = BenchResult(
        name="leak",
        title="Leak detection: recall, delay and false alarms",
        mode="small" if small else "full",
        what=_what(settings, len(jobs)),
    )
    if small:
        result.what += (
            " Small mode: one 9 s drip recording (60 MB/min after 3 s, sampled every 0.25 s, "
            "replayed with the detector's times divided by 20) and one 9 s real baseline run: "
            "a smoke run of the whole path, no figures."
        )
    stop = threading.Event()
    results: list[JobResult] = []
    with ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="leak") as pool:
        futures = [pool.submit(_guarded(j), j, workdir, stop) for j in jobs]
        try:
            results = [f.result() for f in futures]
        except BaseException:
            stop.set()
            raise
    _aggregate(result, results, replay_settings, small)
    result.setup = {
        "rates_mb_per_min": sorted({j.rate for j in jobs if j.rate}),
        "repeats": 1 if small else REPEATS,
        "pre_s": jobs[0].pre_s if small else PRE_S,
        "goal_s": {f"{k:g}": v for k, v in GOAL_S.items()},
        "leak_free_scenarios": [j.scenario for j in jobs if j.kind == "real"],
        "leak_free_s": FREE_S if not small else 9.0,
        "parallel_runs": len(jobs),
        "background_requests_per_s": 1 / BACKGROUND_PERIOD_S,
        "detector": asdict(settings),
        "replay_detector": asdict(replay_settings),
    }
    return result


def _what(s: Any, n: int) -> str:
    return (
        "The monitor's leak detector (`monitors/leak.py` with the config's "
        f"`monitor.leak_detection`: warm-up {s.warmup_s:g} s, {s.window_s:g} s windows, "
        f"{s.lookback_s:g} s lookback, min slope {s.min_slope_mb_per_min:g} MB/min, "
        f"significance {s.significance:g}), judging what the monitor feeds it: RSS less the "
        "bytes the target's tiers account for (from `/memory/stats`). **Leak-free runs, real "
        "end to end:** "
        + ", ".join(FREE_SCENARIOS)
        + f" for {FREE_S:g} s each, each a fresh reference service and a real Locust process "
        "running `locustfile.py` with the memory monitor at its default 1 s interval; any "
        "`leak_detected` event is a false alarm. **Leak runs, recorded and replayed:** a fresh "
        "service under a steady `POST /faults/leak` drip once a second at "
        + ", ".join(f"{r:g}" for r in RATES)
        + f" MB/min (MB = 2^20 B; {REPEATS} recordings per rate), starting after {PRE_S:g} s, "
        f"with read-only traffic all along ({1 / BACKGROUND_PERIOD_S:g} requests/s: searches "
        "and context reads from a fixed pool of 16 queries over a seeded namespace and four "
        "seeded agents, history reads, health) and a management cycle a second, so nothing "
        "but the leak grows; each second its RSS (psutil, the monitor's first source) and its "
        "tiers' bytes (`/memory/stats`) are recorded, and the series is replayed afterwards "
        "through the detector class the monitor runs, with the monitor's input. Delay: the "
        f"first 'leak' verdict minus the first drip. All {n} runs in parallel, each with its "
        "own service. A second replay judges plain RSS (what the monitor judges when the "
        "target has no `/memory/stats`)."
    )


def _guarded(job: Job) -> Callable[[Job, Path, threading.Event], JobResult]:
    fn = record_drip if job.kind == "drip" else run_real

    def call(job: Job, workdir: Path, stop: threading.Event) -> JobResult:
        try:
            return fn(job, workdir, stop)
        except Exception as exc:  # one failed run is reported; the others still count
            return JobResult(job, error=f"{type(exc).__name__}: {exc}")

    return call


def _aggregate(result: BenchResult, results: list[JobResult], settings: Any, small: bool) -> None:
    drips = [r for r in results if r.job.kind == "drip"]
    reals = [r for r in results if r.job.kind == "real"]
    drip_rows: list[dict[str, Any]] = []
    for r in drips:
        v_mon, v_rss = replay(r, r.judged, settings), replay(r, r.rss, settings)
        drip_rows.append(
            {
                "run": r.job.tag,
                "rate_mb_min": r.job.rate,
                "goal_s": r.job.goal_s,
                "recorded_s": r.job.duration_s,
                "leaked_mb": r.leaked_bytes / MB,
                "drips": r.drips,
                "drip_errors": r.drip_errors,
                "delay_s": _delay(v_mon, r),
                "slope_mb_min": v_mon.slope,
                "false_alarms_before_drip": v_mon.false_alarms,
                "rss_delay_s": _delay(v_rss, r),
                "rss_false_alarms_before_drip": v_rss.false_alarms,
                "judged_growth": growth(r.judged, r.leak_start),
                "background_requests": r.background_requests,
                "background_errors": r.background_errors,
                "samples": len(r.rss),
                "samples_without_stats": sum(v is None for _, v in r.judged),
                "service_cpu_s": r.service_cpu_s,
                "error": r.error,
            }
        )
    real_rows: list[dict[str, Any]] = []
    for r in reals:
        on, mon, own = online_verdict(r), replay(r, r.judged, settings), replay(r, r.rss, settings)
        first = next((e for e in r.events if e.get("kind") == "leak_detected"), None)
        first_t = _num(first.get("time")) if first else None
        real_rows.append(
            {
                "run": r.job.tag,
                "scenario": r.job.scenario,
                "duration_s": r.job.duration_s,
                "online_false_alarms": on.false_alarms,
                "online_first_alarm_s": (
                    first_t - r.t0 if first_t is not None and r.t0 is not None else None
                ),
                "online_first_alarm": first.get("detail") if first else None,
                "replay_of_monitor_samples_false_alarms": mon.false_alarms,
                "replay_of_rss_false_alarms": own.false_alarms,
                "rss_growth": growth(r.rss, r.t0),
                "accounted_growth": growth(r.accounted, r.t0),
                "judged_growth": growth(r.judged, r.t0),
                "judged_mb_at_marks": at_marks(r.judged, r.t0),
                "monitor_samples": r.monitor_samples,
                "exit_code": r.exit_code,
                "service_cpu_s": r.service_cpu_s,
                "error": r.error,
            }
        )
    per_rate = []
    for rate in sorted({row["rate_mb_min"] for row in drip_rows}):
        rr = [row for row in drip_rows if row["rate_mb_min"] == rate]
        goal = rr[0]["goal_s"]
        entry: dict[str, Any] = {"rate_mb_min": rate, "runs": len(rr), "goal_s": goal}
        for prefix in ("", "rss_"):
            found = [d for row in rr if (d := row[f"{prefix}delay_s"]) is not None]
            entry[f"{prefix}found_in_goal"] = sum(goal is None or d <= goal for d in found)
            entry[f"{prefix}recall"] = entry[f"{prefix}found_in_goal"] / len(rr)
            entry[f"{prefix}median_delay_s"] = statistics.median(found) if found else None
            entry[f"{prefix}max_delay_s"] = max(found) if found else None
        per_rate.append(entry)
    fa = {
        "leak_free_runs": len(real_rows),
        "online_monitor": sum(row["online_false_alarms"] for row in real_rows),
        "replay_of_monitor_samples": sum(
            row["replay_of_monitor_samples_false_alarms"] for row in real_rows
        ),
        "replay_of_plain_rss": sum(row["replay_of_rss_false_alarms"] for row in real_rows),
        "drip_recordings_before_the_drip": sum(
            row["false_alarms_before_drip"] for row in drip_rows
        ),
        "drip_recordings_before_the_drip_plain_rss": sum(
            row["rss_false_alarms_before_drip"] for row in drip_rows
        ),
    }
    result.raw = {
        "per_rate": per_rate,
        "false_alarms": fa,
        "drip_recordings": drip_rows,
        "leak_free_runs": real_rows,
    }
    errors = [f"{row['run']}: {row['error']}" for row in drip_rows + real_rows if row["error"]]
    result.notes += errors
    result.ratios = {f"recall_{e['rate_mb_min']:g}_mb_min": e["recall"] for e in per_rate}
    if not small:
        for e in per_rate:
            result.goals.append(
                Goal(
                    f"{e['rate_mb_min']:g} MB/min leaks found within {e['goal_s']:g} s "
                    f"(share of {e['runs']} recordings, replayed)",
                    e["recall"],
                    ">=",
                    1.0,
                )
            )
        result.goals.append(
            Goal(
                f"false alarms on the {len(real_rows)} leak-free real runs (the monitor's own)",
                float(fa["online_monitor"]),
                "==",
                0.0,
            )
        )
    result.tables = _tables(per_rate, drip_rows, real_rows, fa)
    result.reading = _reading(per_rate, real_rows, fa, small, settings.min_slope_mb_per_min)


def _mb(g: dict[str, float | None]) -> str | None:
    if g.get("start_mb") is None or g.get("end_mb") is None:
        return None
    return f"{g['start_mb']:.1f} -> {g['end_mb']:.1f}"


def _tables(
    per_rate: list[dict[str, Any]],
    drip_rows: list[dict[str, Any]],
    real_rows: list[dict[str, Any]],
    fa: dict[str, int],
) -> list[Table]:
    return [
        Table(
            "Leak runs (recorded, replayed) per rate; delay: first 'leak' verdict - first drip",
            [
                "MB/min",
                "recordings",
                "goal s",
                "found in goal",
                "median delay s",
                "max delay s",
                "found in goal (plain RSS)",
                "median delay s (plain RSS)",
            ],
            [
                [
                    e["rate_mb_min"],
                    e["runs"],
                    e["goal_s"],
                    f"{e['found_in_goal']}/{e['runs']}",
                    e["median_delay_s"],
                    e["max_delay_s"],
                    f"{e['rss_found_in_goal']}/{e['runs']}",
                    e["rss_median_delay_s"],
                ]
                for e in per_rate
            ],
        ),
        Table(
            "Leak-free runs (real, end to end); MB columns: first -> last (medians of 10 samples)",
            [
                "scenario",
                "s",
                "false alarms (monitor)",
                "first alarm at s",
                "replay of the monitor's samples",
                "replay of plain RSS",
                "RSS MB",
                "tiers MB",
                "RSS - tiers MB (judged)",
                "judged MB at " + " / ".join(str(m) for m in MARKS_S) + " s / end",
                "judged MB/min, last half",
            ],
            [
                [
                    row["scenario"],
                    row["duration_s"],
                    row["online_false_alarms"],
                    row["online_first_alarm_s"],
                    row["replay_of_monitor_samples_false_alarms"],
                    row["replay_of_rss_false_alarms"],
                    _mb(row["rss_growth"]),
                    _mb(row["accounted_growth"]),
                    _mb(row["judged_growth"]),
                    row["judged_mb_at_marks"],
                    row["judged_growth"]["mb_per_min_last_half"],
                ]
                for row in real_rows
            ],
        ),
        Table(
            "Every drip recording",
            [
                "run",
                "s",
                "leaked MB",
                "delay s",
                "slope at detection MB/min",
                "delay s (plain RSS)",
                "false alarms before the drip (judged/plain RSS)",
                "judged MB from the drip",
                "background requests (errors)",
            ],
            [
                [
                    row["run"],
                    row["recorded_s"],
                    row["leaked_mb"],
                    row["delay_s"],
                    row["slope_mb_min"],
                    row["rss_delay_s"],
                    f"{row['false_alarms_before_drip']}/{row['rss_false_alarms_before_drip']}",
                    _mb(row["judged_growth"]),
                    f"{row['background_requests']} ({row['background_errors']})",
                ]
                for row in drip_rows
            ],
        ),
        Table(
            "False alarms",
            ["where", "count"],
            [
                [
                    f"leak-free real runs ({fa['leak_free_runs']}), the monitor",
                    fa["online_monitor"],
                ],
                ["same runs, the monitor's samples replayed", fa["replay_of_monitor_samples"]],
                [
                    "same runs, plain RSS (taken by the benchmark) replayed",
                    fa["replay_of_plain_rss"],
                ],
                [
                    "drip recordings before the drip, replayed",
                    fa["drip_recordings_before_the_drip"],
                ],
                [
                    "drip recordings before the drip, plain RSS replayed",
                    fa["drip_recordings_before_the_drip_plain_rss"],
                ],
            ],
        ),
    ]


def _reading(
    per_rate: list[dict[str, Any]],
    real_rows: list[dict[str, Any]],
    fa: dict[str, int],
    small: bool,
    min_slope: float,
) -> list[str]:
    lines = [
        "What is real: the leak-free runs (service, Locust, `locustfile.py`, the monitor and "
        "its `events.csv`). What is replayed: the leak runs, series recorded each second from "
        "real services under a real drip through the API and fed afterwards to the detector "
        "class the monitor runs, with the monitor's settings and input (the same code, not the "
        "monitor's greenlet)."
    ]
    for e in per_rate:
        med = e["median_delay_s"]
        lines.append(
            f"{e['rate_mb_min']:g} MB/min: {e['found_in_goal']}/{e['runs']} found within "
            f"{e['goal_s'] or 0:g} s"
            + (f", median delay {med:.0f} s." if med is not None else ", none found.")
        )
    if real_rows:
        lines.append(
            f"False alarms on the {fa['leak_free_runs']} leak-free real runs: "
            f"{fa['online_monitor']} by the monitor ({fa['replay_of_monitor_samples']} when its "
            "own samples are replayed through the detector, a check that the replay is "
            f"faithful); {fa['replay_of_plain_rss']} if it judged plain RSS; "
            f"{fa['drip_recordings_before_the_drip']} in the drip recordings before the drip."
        )
        parts = []
        for r in real_rows:
            g, a, j = r["rss_growth"], r["accounted_growth"], r["judged_growth"]
            if g["start_mb"] is None or a["start_mb"] is None or j["start_mb"] is None:
                continue
            parts.append(
                f"{r['scenario']} {g['end_mb'] - g['start_mb']:+.1f} MB of RSS, "
                f"{a['end_mb'] - a['start_mb']:+.1f} MB in the tiers, "
                f"{j['end_mb'] - j['start_mb']:+.1f} MB judged"
            )
        if parts:
            lines.append(
                "Over the leak-free runs: "
                + "; ".join(parts)
                + ". Most RSS growth is caches and tiers filling toward their soft limits "
                "(conversation turns, stored vectors, cached embeddings), memory the target "
                "accounts for: judged as plain RSS it looks like a leak for minutes, which is why "
                "the monitor takes the tiers off."
            )
        alarmed = [r for r in real_rows if r["online_false_alarms"]]
        for r in alarmed:
            lines.append(
                f"What limits it: the monitor's alarm on {r['scenario']} came at "
                f"{r['online_first_alarm_s'] or 0:.0f} s ({_reason(r['online_first_alarm'])}); "
                f"the judged memory (RSS less the tiers) read {r['judged_mb_at_marks']} MB at "
                + " / ".join(str(m) for m in MARKS_S)
                + " s / the end"
                + _after(r["judged_growth"]["mb_per_min_last_half"], min_slope)
            )
    if small:
        lines.append("Small mode: a smoke run of the whole path; the figures mean nothing.")
    return lines


def _after(slope: float | None, min_slope: float) -> str:
    if slope is None:
        return "."
    if slope < min_slope:
        return (
            f", and moved {slope:+.2f} MB/min over the last half of the run, under the "
            f"detector's {min_slope:g} MB/min: memory the tiers do not account for that grew "
            "while the run warmed up and then stopped, which is not a leak. At the alarm the "
            "rise was still going in both halves of the span judged, which is all the rule "
            "can see."
        )
    return f", and was still rising at {slope:.2f} MB/min over the last half of the run."


def _reason(detail: str | None) -> str:
    try:
        d = json.loads(detail or "")
    except ValueError:
        return detail or "no detail"
    if not isinstance(d, dict):
        return str(d)
    keys = ("reason", "slope_mb_min", "recent_slope_mb_min", "older_slope_mb_min", "span_s")
    return ", ".join(f"{k} {d[k]}" for k in keys if k in d)
