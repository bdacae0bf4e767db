"""Leak detection from real runs: recall, delay, slope error, every alarm, final verdicts.

Every run is real end to end: a target, a Locust process running
``locustfile.py`` (scenario ``baseline``: its agents, its cycler) with the memory
monitor at its default 1 s interval, and the monitor's own ``events.csv``. No
recording is replayed.

Targets:

- ``bench/leak_target.py``, the benchmark's own, which leaks in its own code:
  steady and unaccounted, steady inside an accounted tier (the tier's bytes
  grow past its ``limit_bytes``), per request (grows with load, not time),
  starting mid-run; or, leak-free, a cache filling to a plateau, one step
  allocation, a large sawtooth. Every run of it also carries a small sawtooth
  whose phase and period come from the seed, so repeats differ. It reports
  what its leak holds (``/leak/state``), from which the true rate is measured;
- the bundled reference service under the same scenario load, leak-free.

Seeds: the ``dev`` set (1, 2, 3) is for tuning the detector, the ``holdout`` set
(31, 32, 33; the default) is what the figures in ``results.json`` come from;
choose with ``BENCH_LEAK_SEEDS=dev``. Nothing was tuned on the holdout set, and
it is run only to report, after the detector is frozen. The ``seen`` set (11,
12, 13, 21, 22, 23) were holdouts until their figures were looked at: 11-13 showed
the slope error of 2026-12-06, 21-23 a per-request leak cleared while it grew
(fixed by the clearing's hysteresis, checked on dev); they are kept to reproduce
those figures and are no holdout any more.

For tuning on a shared machine: ``BENCH_LEAK_CASES=steady-1mb,free-step`` runs
only those cases, ``BENCH_LEAK_PARALLEL=8`` at most 8 runs at a time (default:
all at once, as the reported figures were measured). Each run keeps its run
folder (``memory_samples.csv``, ``leak_verdict.json``) under ``--out``'s
``_runs/``, to replay through :func:`monitors.leak.replay`.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests

from bench.procs import (
    PYTHON,
    ROOT,
    BenchError,
    clean_env,
    read_rows,
    start_locust,
    start_service,
    stop_process,
)
from bench.results import BenchResult, Goal, Table
from memstress.common.units import MB

LOCUSTFILE = ROOT / "locustfile.py"
VERDICT_FILE = "leak_verdict.json"  # the monitor's final verdict in the run folder (issue 11)
SCENARIO = "baseline"
SEEDS = {"dev": (1, 2, 3), "holdout": (31, 32, 33), "seen": (11, 12, 13, 21, 22, 23)}
PRE_S = 60.0  # the leak starts here: past the detector's warm-up and the caches' filling
TAIL_S = 30.0
FREE_S = 600.0
RECALL = {2.0: ("leak_recall_2mb_90s", 90.0), 1.0: ("leak_recall_1mb_180s", 180.0)}
RECALL[0.5] = ("leak_recall_05mb_420s", 420.0)


@dataclass(frozen=True)
class Case:
    name: str
    target: str  # "own" (bench/leak_target.py) or "service" (the reference service)
    leak: bool
    duration_s: float
    args: tuple[str, ...] = ()  # bench/leak_target.py's options
    rate: float | None = None  # MB/min as set (None: per request, measured only)
    start_s: float = PRE_S
    goal_s: float | None = None  # found within this many seconds of the leak's start
    monitor_interval: float = 1.0
    scaled: bool = False  # small mode: --duration as is, the detector on a faster clock


def cases(small: bool) -> list[Case]:
    if small:
        return [
            Case(
                "steady-60mb",
                "own",
                True,
                16.0,
                ("--mode", "steady", "--rate", "60", "--start-s", "4", "--saw-mb", "1"),
                60.0,
                4.0,
                12.0,
                0.25,
                True,
            ),
            Case("free-sawtooth", "own", False, 16.0, ("--saw-mb", "2"), None, 0, None, 0.25, True),
        ]
    out = []
    for rate, (_, goal) in RECALL.items():
        out.append(
            Case(
                f"steady-{rate:g}mb",
                "own",
                True,
                PRE_S + goal + TAIL_S,
                ("--mode", "steady", "--rate", f"{rate:g}", "--start-s", f"{PRE_S:g}"),
                rate,
                PRE_S,
                goal,
            )
        )
    goal1 = RECALL[1.0][1]
    out.append(
        Case(
            "tier-1mb",
            "own",
            True,
            PRE_S + goal1 + TAIL_S,
            # A full cache whose eviction broke: at its limit when the leak starts, so every
            # leaked byte is past the limit (below it, growth is a cache filling, no leak).
            (
                *("--mode", "tier", "--rate", "1", "--start-s", f"{PRE_S:g}"),
                *("--tier-mb", "6", "--tier-limit-mb", "6"),
            ),
            1.0,
            PRE_S,
            goal1,
        )
    )
    mid = 240.0
    out.append(
        Case(
            "midrun-1mb",
            "own",
            True,
            mid + goal1 + TAIL_S,
            ("--mode", "steady", "--rate", "1", "--start-s", f"{mid:g}"),
            1.0,
            mid,
            goal1,
        )
    )
    out.append(
        Case(
            "per-request",
            "own",
            True,
            PRE_S + goal1 + TAIL_S,
            ("--mode", "per-request", "--bytes-per-request", "3072", "--start-s", f"{PRE_S:g}"),
            None,
            PRE_S,
            goal1,
        )
    )
    out += [
        Case("free-plateau", "own", False, FREE_S, ("--mode", "plateau", "--mb", "30")),
        Case(
            "free-step", "own", False, FREE_S, ("--mode", "step", "--mb", "20", "--start-s", "120")
        ),
        Case(
            "free-sawtooth-24mb", "own", False, FREE_S, ("--saw-mb", "24", "--saw-period-s", "90")
        ),
        Case("free-service", "service", False, FREE_S),
    ]
    return out


@dataclass
class RunResult:
    case: Case
    seed: int
    t0: float | None = None  # the run's first stage
    leak_start: float | None = None
    leak_points: list[tuple[float, int]] = field(default_factory=list)  # (time, bytes held)
    events: list[dict[str, str]] = field(default_factory=list)
    verdict_file: dict[str, Any] | None = (
        None  # the monitor's leak_verdict.json, when it writes one
    )
    exit_code: int | None = None
    error: str | None = None
    wall_s: float = 0.0


def _saw_args(seed: int, case: Case) -> list[str]:
    """A seed's own background sawtooth: period 20-50 s (its phase is drawn in the target)."""
    if "--saw-period-s" in case.args:
        return ["--seed", str(seed)]
    return ["--seed", str(seed), "--saw-period-s", f"{20 + (seed * 7) % 31:g}"]


def _start_own(case: Case, seed: int, jobdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    out = jobdir / "target.out"
    with open(out, "wb") as fh:
        proc = subprocess.Popen(
            [PYTHON, "-m", "bench.leak_target", *case.args, *_saw_args(seed, case)],
            cwd=ROOT,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=clean_env(),
            start_new_session=True,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        first = out.read_text().split("\n", 1)
        if len(first) > 1 and first[0].strip().isdigit():
            return proc, int(first[0])
        time.sleep(0.1)
    stop_process(proc, 5)
    raise BenchError(f"the leak target did not start: {out.read_text()[-500:]}")


def one_run(case: Case, seed: int, workdir: Path, stop: threading.Event) -> RunResult:
    res = RunResult(case, seed)
    started = time.monotonic()
    jobdir = workdir / f"{case.name}-s{seed}"
    run_dir = jobdir / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    svc = None
    target: subprocess.Popen[bytes] | None = None
    try:
        if case.target == "service":
            svc = start_service(jobdir, budget_mb=512)
            url, pid = svc.url, svc.pid
        else:
            target, port = _start_own(case, seed, jobdir)
            url, pid = f"http://127.0.0.1:{port}", target.pid
        planned = case.duration_s if case.scaled else max(300.0, case.duration_s)
        args = ["--headless", "--scenario", SCENARIO, "--duration", f"{planned:g}"]
        args += ["--run-dir", str(run_dir), "--only-summary", "--target-pid", str(pid)]
        args += ["--monitor-interval", f"{case.monitor_interval:g}"]
        proc = start_locust(LOCUSTFILE, run_dir, args, host=url)
        end = time.monotonic() + case.duration_s + 20  # Locust's start-up is not the run's
        session = requests.Session()
        try:
            while proc.poll() is None and time.monotonic() < end and not stop.is_set():
                stages = read_rows(run_dir / "stages.csv")
                if res.t0 is None and stages:
                    res.t0 = float(stages[0]["time"])
                    end = time.monotonic() + case.duration_s
                if target is not None:
                    try:
                        st = session.get(url + "/leak/state", timeout=2).json()
                        if st.get("started_at"):
                            res.leak_start = float(st["started_at"])
                            res.leak_points.append((time.time(), int(st["leaked_bytes"])))
                    except (requests.RequestException, ValueError):
                        pass
                time.sleep(1.0)
        finally:
            session.close()
            res.exit_code = stop_process(proc, 30)
        if res.t0 is None:
            res.error = f"Locust never started its stages (exit {res.exit_code})"
        res.events = read_rows(run_dir / "events.csv")
        try:
            res.verdict_file = json.loads((run_dir / VERDICT_FILE).read_text())
        except (OSError, ValueError):
            res.verdict_file = None
        (jobdir / "result.json").write_text(json.dumps(asdict(res), default=str))
    except Exception as exc:  # one failed run is reported; the others still count
        res.error = f"{type(exc).__name__}: {exc}"
    finally:
        if svc is not None:
            svc.stop()
        if target is not None:
            stop_process(target, 5)
        res.wall_s = time.monotonic() - started
    return res


# --- judging -------------------------------------------------------------------------------


def _num(text: str | None) -> float | None:
    try:
        v = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return v if v is not None and math.isfinite(v) else None


def alarms(res: RunResult) -> list[tuple[float, str, float | None]]:
    """(time, leak_detected | leak_cleared, slope MB/min) of every state change."""
    out = []
    for e in res.events:
        kind = e.get("kind")
        t = _num(e.get("time"))
        if kind in ("leak_detected", "leak_cleared") and t is not None:
            slope = None
            try:
                d = json.loads(e.get("detail") or "")
                s = d.get("slope_mb_min") if isinstance(d, dict) else None
                slope = float(s) if isinstance(s, int | float) else None
            except ValueError:
                pass
            out.append((t, str(kind), slope))
    return sorted(out)


def true_rate(res: RunResult) -> float | None:
    """MB/min the leak held, least squares over what ``/leak/state`` said (None: too few)."""
    pts = [(t, b) for t, b in res.leak_points if b > 0]
    if len(pts) < 5:
        return None
    ts, bs = [t for t, _ in pts], [b / MB for _, b in pts]
    mt, mb = statistics.fmean(ts), statistics.fmean(bs)
    var = sum((t - mt) ** 2 for t in ts)
    if var <= 0:
        return None
    return 60 * sum((t - mt) * (b - mb) for t, b in zip(ts, bs, strict=True)) / var


def judge(res: RunResult) -> dict[str, Any]:
    case = res.case
    changes = alarms(res)
    start = res.leak_start if case.leak else None
    detected = [(t, s) for t, k, s in changes if k == "leak_detected"]
    before = [t for t, _ in detected if start is None or t < start]
    after = [(t, s) for t, s in detected if start is not None and t >= start]
    delay = after[0][0] - start if after and start is not None else None
    slope = after[0][1] if after else None
    rate = true_rate(res) if case.leak else None
    err = abs(slope - rate) / rate * 100 if slope is not None and rate else None
    # The monitor's own final verdict when it writes one; else the state after the last event.
    final = "leak" if changes and changes[-1][1] == "leak_detected" else "no leak"
    if isinstance(res.verdict_file, dict) and isinstance(res.verdict_file.get("verdict"), str):
        final = res.verdict_file["verdict"]
    t0 = res.t0 or 0.0
    return {
        "case": case.name,
        "seed": res.seed,
        "leak": case.leak,
        "set_rate_mb_min": case.rate,
        "true_rate_mb_min": rate,
        "goal_s": case.goal_s,
        "delay_s": delay,
        "found_in_goal": delay is not None and (case.goal_s is None or delay <= case.goal_s),
        "slope_at_detection_mb_min": slope,
        "slope_error_pct": err,
        "alarms_before_leak": len(before),
        "state_changes": [f"{k} at {t - t0:.0f} s" for t, k, _ in changes],
        "final_verdict": final,
        "leak_started_s": None if start is None else start - t0,
        "exit_code": res.exit_code,
        "error": res.error,
        "wall_s": res.wall_s,
    }


# --- the benchmark -----------------------------------------------------------------------------


def run(workdir: Path, small: bool) -> BenchResult:
    seed_set = os.environ.get("BENCH_LEAK_SEEDS", "holdout")
    if seed_set not in SEEDS:
        raise BenchError(f"BENCH_LEAK_SEEDS={seed_set!r} (valid: {', '.join(SEEDS)})")
    seeds = SEEDS[seed_set][:1] if small else SEEDS[seed_set]
    chosen = _chosen_cases(small)
    plan = [(c, s) for c in chosen for s in seeds]
    parallel = _parallel(len(plan))
    plan.sort(key=lambda cs: -cs[0].duration_s)
    result = BenchResult(
        name="leak",
        title="Leak detection from real runs: recall, delay, slope error, alarms, final verdicts",
        mode="small" if small else "full",
        what=_what(small, seed_set, len(plan), parallel),
    )
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="leak") as pool:
        futures = [pool.submit(one_run, c, s, workdir, stop) for c, s in plan]
        try:
            results = [f.result() for f in futures]
        except BaseException:
            stop.set()
            raise
    rows = [judge(r) for r in results]
    _aggregate(result, rows, small)
    result.setup = {
        "scenario": SCENARIO,
        "seed_set": seed_set,
        "seeds": list(seeds),
        "cases": [asdict(c) for c in chosen],
        "parallel_runs": parallel,
    }
    return result


def _chosen_cases(small: bool) -> list[Case]:
    """The cases ``BENCH_LEAK_CASES`` names (comma-separated), else all of them."""
    every = cases(small)
    wanted = [n.strip() for n in os.environ.get("BENCH_LEAK_CASES", "").split(",") if n.strip()]
    if not wanted:
        return every
    names = [c.name for c in every]
    bad = [n for n in wanted if n not in names]
    if bad:
        raise BenchError(f"BENCH_LEAK_CASES: unknown case {bad[0]!r} (valid: {', '.join(names)})")
    return [c for c in every if c.name in wanted]


def _parallel(runs: int) -> int:
    """Runs at a time: ``BENCH_LEAK_PARALLEL`` (a positive integer), else all of them."""
    text = os.environ.get("BENCH_LEAK_PARALLEL", "").strip()
    if not text:
        return max(1, runs)
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise BenchError(f"BENCH_LEAK_PARALLEL={text!r} (valid: a positive integer, e.g. 8)")
    return min(n, max(1, runs))


def _what(small: bool, seed_set: str, n: int, parallel: int) -> str:
    at_once = "in parallel" if parallel >= n else f"{parallel} at a time"
    text = (
        f"{n} real runs {at_once}, each a target and a Locust process running "
        f"`locustfile.py --scenario {SCENARIO}` with the memory monitor at 1 s; the monitor's "
        "own `events.csv` gives every `leak_detected` / `leak_cleared`; the final verdict is "
        "the monitor's `leak_verdict.json` when it writes one, else the state after the last "
        "event. Leaks in `bench/leak_target.py`'s "
        "own code: steady unaccounted at 2, 1 and 0.5 MB/min from 60 s; 1 MB/min inside an "
        "accounted tier that is at its limit_bytes when the leak starts and grows past it "
        "(a full cache whose eviction broke); 1 MB/min starting at 240 s; 3 KiB "
        "per request from 60 s (rate measured). Leak-free: a cache filling to 30 MB (tau 60 s), "
        "one 20 MB step at 120 s, a 24 MB sawtooth (90 s period), and the reference service "
        "under the same load, 600 s each. Every own-target run also carries a small sawtooth "
        "whose phase and period come from the seed. True leak rates from the target's "
        f"`/leak/state`. Seeds: the `{seed_set}` set"
        + {
            "holdout": " (the holdout set, seeds 31-33: never run while tuning; tuning used "
            "BENCH_LEAK_SEEDS=dev, seeds 1-3).",
            "seen": " (seeds 11-13 and 21-23, holdouts until their figures were looked at: "
            "no holdout any more).",
        }.get(seed_set, " (the tuning set: these figures are not the reported ones).")
    )
    if small:
        text += (
            " Small mode: one 16 s 60 MB/min leak and one leak-free run, the detector on the "
            "run's shortened clock: a smoke run of the whole path, no figures."
        )
    return text


def _med(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _aggregate(result: BenchResult, rows: list[dict[str, Any]], small: bool) -> None:
    result.raw = {"runs": rows}
    per_case: list[dict[str, Any]] = []
    for name in dict.fromkeys(r["case"] for r in rows):
        rr = [r for r in rows if r["case"] == name]
        delays = [r["delay_s"] for r in rr if r["delay_s"] is not None]
        per_case.append(
            {
                "case": name,
                "runs": len(rr),
                "leak": rr[0]["leak"],
                "found_in_goal": sum(r["found_in_goal"] for r in rr) if rr[0]["leak"] else None,
                "median_delay_s": _med(delays),
                "worst_delay_s": max(delays) if delays else None,
                "alarms_before_leak": sum(r["alarms_before_leak"] for r in rr),
                "state_changes": sum(len(r["state_changes"]) for r in rr),
                "final_leak_verdicts": sum(r["final_verdict"] == "leak" for r in rr),
                "errors": sum(r["error"] is not None for r in rr),
            }
        )
    result.raw["per_case"] = per_case
    errors = [f"{r['case']} seed {r['seed']}: {r['error']}" for r in rows if r["error"]]
    result.notes += errors
    if not small:
        for rate, (gid, goal) in RECALL.items():
            rr = [r for r in rows if r["leak"] and r["set_rate_mb_min"] == rate]
            value = sum(r["found_in_goal"] for r in rr) / len(rr) if rr else None
            names = sorted({r["case"] for r in rr})
            result.goals.append(
                Goal.of(gid, value, note=f"{len(rr)} runs: {', '.join(names)}; within {goal:g} s")
            )
        free = [r for r in rows if not r["leak"]]
        result.goals.append(
            Goal.of(
                "leak_false_final_verdicts",
                float(sum(r["final_verdict"] == "leak" for r in free)) if free else None,
                note=f"{len(free)} leak-free runs",
            )
        )
        errs = [r["slope_error_pct"] for r in rows if r["slope_error_pct"] is not None]
        result.goals.append(
            Goal.of(
                "leak_slope_error_pct",
                max(errs) if errs else None,
                reason="" if errs else "no detected leak with a measured true rate",
            )
        )
    result.tables = [
        Table(
            "Per case (seeds of the set; delay = first leak_detected - the leak's start)",
            [
                "case",
                "runs",
                "found in goal",
                "median delay s",
                "worst delay s",
                "alarms before the leak (or any, leak-free)",
                "state changes (all)",
                "final 'leak' verdicts",
                "run errors",
            ],
            [
                [
                    c["case"],
                    c["runs"],
                    "-" if c["found_in_goal"] is None else f"{c['found_in_goal']}/{c['runs']}",
                    c["median_delay_s"],
                    c["worst_delay_s"],
                    c["alarms_before_leak"],
                    c["state_changes"],
                    c["final_leak_verdicts"],
                    c["errors"],
                ]
                for c in per_case
            ],
        ),
        Table(
            "Every run, every alarm",
            [
                "case",
                "seed",
                "set MB/min",
                "true MB/min",
                "delay s",
                "slope at detection",
                "slope error %",
                "state changes (s from the run's start)",
                "final verdict",
            ],
            [
                [
                    r["case"],
                    r["seed"],
                    r["set_rate_mb_min"],
                    r["true_rate_mb_min"],
                    r["delay_s"],
                    r["slope_at_detection_mb_min"],
                    r["slope_error_pct"],
                    "; ".join(r["state_changes"]) or "none",
                    r["final_verdict"],
                ]
                for r in rows
            ],
        ),
    ]
    lines = []
    for c in per_case:
        if c["leak"]:
            lines.append(
                f"{c['case']}: {c['found_in_goal']}/{c['runs']} found in goal"
                + (
                    f", delay median {c['median_delay_s']:.0f} s, worst {c['worst_delay_s']:.0f} s"
                    if c["median_delay_s"] is not None
                    else ", none found"
                )
                + f"; {c['alarms_before_leak']} alarms before the leak."
            )
        else:
            lines.append(
                f"{c['case']}: {c['state_changes']} state changes over {c['runs']} runs, "
                f"{c['final_leak_verdicts']} final 'leak' verdicts."
            )
    if small:
        lines.append("Small mode: a smoke run of the whole path; the figures mean nothing.")
    result.reading = lines
