"""Monitor cost: what the memory monitor's sampler costs, in CPU and in requests/s.

A real run each time: ``locustfile.py`` with the baseline scenario against one
reference service (pinned to one CPU; Locust to the other), alternating the
monitor on (``--monitor-interval 1``, the config's default) and off.

"Off": the monitor has no switch, so "off" is ``--monitor-interval 3600`` (the
option's maximum): one sample when the run starts, then none for an hour. Its
health check (every 30 s) and cleanup cycle (every 60 s) keep running in both,
as they are not the sampler; so the difference is the sampler's cost exactly.

Figures: requests/s over the steady stage (Locust's per-second counts); the
sampler greenlet's own CPU per sample (``sample_cpu_ms`` in memory_samples.csv,
measured by the monitor's greenlet-switch tracer) scaled to an hour at the
default interval; and, as a cross-check, the Locust process's CPU over the same
seconds on against off (process CPU accounting from outside).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from bench.procs import (
    ROOT,
    CpuWatch,
    Service,
    cpus,
    read_rows,
    run_locust,
    service,
    start_locust,
)
from bench.profiling import children_of, py_spy_path, py_spy_record, summarize_collapsed
from bench.results import BenchResult, Goal, Table

LOCUSTFILE = ROOT / "locustfile.py"
ON_INTERVAL = 1.0
OFF_INTERVAL = 3600.0
STRESS_LEVEL = 4  # 20 agents: enough requests per run for a steady rate
GOAL_CORE_SHARE = 0.01  # under 1% of one core
GOAL_RATIO = 0.98


def _steady_window(run_dir: Path) -> tuple[float, float] | None:
    """[start of 'steady' + 2 s, start of the next stage) from stages.csv."""
    rows = read_rows(run_dir / "stages.csv")
    for i, row in enumerate(rows):
        if row.get("name") == "steady" and i + 1 < len(rows):
            return float(row["time"]) + 2.0, float(rows[i + 1]["time"])
    return None


def _requests_in(entries: list[dict[str, Any]], t0: float, t1: float) -> int:
    n = 0
    for e in entries:
        if e.get("method") == "SHED":
            continue
        for k, v in e.get("num_reqs_per_sec", {}).items():
            if t0 <= int(k) < t1:
                n += int(v)
    return n


def _one(
    svc: Service,
    workdir: Path,
    tag: str,
    interval: float,
    *,
    duration: float,
    cpu: int | None,
    watch: CpuWatch,
) -> dict[str, Any]:
    run_dir = workdir / tag
    args = ["--headless", "--scenario", "baseline", "--stress-level", str(STRESS_LEVEL)]
    args += ["--duration", f"{duration:g}", "--monitor-interval", f"{interval:g}"]
    args += ["--run-dir", str(run_dir), "--csv", str(run_dir / "locust"), "--only-summary"]
    args += ["--target-pid", str(svc.pid)]
    run = run_locust(
        LOCUSTFILE,
        run_dir,
        args,
        host=svc.url,
        timeout=duration + 90,
        cpu=cpu,
        watch=watch,
        watch_as=tag,
    )
    window = _steady_window(run_dir)
    out: dict[str, Any] = {"run": tag, "interval_s": interval, "exit_code": run.exit_code}
    if window is None:
        out["error"] = "no steady stage in stages.csv"
        return out
    # Whole seconds inside the stage: Locust counts per whole second.
    w0, w1 = float(int(window[0]) + 1), float(int(window[1]))
    span = w1 - w0
    n = _requests_in(run.entries, w0, w1)
    gen = watch.between(tag, w0, w1)
    svc_cpu = watch.between("service", w0, w1)
    samples = read_rows(run_dir / "memory_samples.csv")
    inside = [s for s in samples if w0 <= float(s["time"]) < w1]
    cpu_ms = [float(s["sample_cpu_ms"]) for s in inside if s.get("sample_cpu_ms")]
    cost_ms = [float(s["sample_cost_ms"]) for s in inside if s.get("sample_cost_ms")]
    out.update(
        {
            "window_s": span,
            "requests": n,
            "rps": n / span if span > 0 else None,
            "generator_cpu_util": None if gen is None else gen / span,
            "service_cpu_util": None if svc_cpu is None else svc_cpu / span,
            "samples_in_window": len(inside),
            "samples_total": len(samples),
            "sample_cpu_ms_mean": statistics.fmean(cpu_ms) if cpu_ms else None,
            "sample_cpu_ms_median": statistics.median(cpu_ms) if cpu_ms else None,
            "sample_cost_ms_mean": statistics.fmean(cost_ms) if cost_ms else None,
            "sample_cost_ms_median": statistics.median(cost_ms) if cost_ms else None,
            "failures": sum(int(e["num_failures"]) for e in run.entries),
        }
    )
    return out


PROFILE_INTERVAL = 0.05  # the option's minimum: 20 x the samples, so py-spy sees enough of them
PROFILE_S = 25


def _profile(svc: Service, workdir: Path, cpu: int | None) -> dict[str, Any] | None:
    """An extra run sampling every 0.05 s under py-spy: where the sampler's CPU goes."""
    if py_spy_path() is None:
        return None
    run_dir = workdir / "profile"
    args = ["--headless", "--scenario", "baseline", "--stress-level", str(STRESS_LEVEL)]
    args += ["--duration", f"{PROFILE_S + 8}", "--monitor-interval", f"{PROFILE_INTERVAL:g}"]
    args += ["--run-dir", str(run_dir), "--only-summary", "--target-pid", str(svc.pid)]
    proc = start_locust(LOCUSTFILE, run_dir, args, host=svc.url, cpu=cpu)
    try:
        time.sleep(4)
        raw = py_spy_record(proc.pid, PROFILE_S, run_dir / "py-spy.txt")
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    if raw is None:
        return None
    take = children_of(raw, "Sampler._read")  # each source's read, in a greenlet of its own
    lines = children_of(raw, "MemoryMonitor.sample_once")["top"]
    lines += [""] + take["top"]
    lines += [""] + summarize_collapsed(raw, top=12, within="sample_once")["top"]
    return {"top": lines, "sources": take["shares"], "samples": take["samples"]}


def run(workdir: Path, small: bool) -> BenchResult:
    duration = 9.0 if small else 60.0
    pairs = 1 if small else 3
    cores = cpus()
    svc_cpu, gen_cpu = (cores[0], cores[1]) if len(cores) >= 2 else (None, None)
    result = BenchResult(
        name="monitor",
        title="Monitor cost: sampler CPU and requests/s with the monitor on vs off",
        mode="small" if small else "full",
        what=(
            "Real runs of `locustfile.py` (baseline scenario, stress level "
            f"{STRESS_LEVEL}: 20 agent users and the cycler, {duration:g} s plan) against one "
            "reference service, service and Locust each pinned to one CPU, alternating the "
            f"monitor on (`--monitor-interval {ON_INTERVAL:g}`, the default) and off "
            f"(`--monitor-interval {OFF_INTERVAL:g}`, the option's maximum: the monitor has no "
            "off switch, and with this interval the sampler takes one sample at the start and "
            "none after; its health check and cleanup cycle run the same in both, so the "
            "difference is the sampler). Requests/s: Locust's per-second counts over the "
            "steady stage. Sampler CPU: `sample_cpu_ms` of every sample in that stage (CPU "
            "time of the sampler greenlet and its source reads only, from the monitor's "
            "greenlet-switch tracer), "
            "scaled to an hour at one sample a second; cross-checked against the Locust "
            "process's CPU on minus off over the same seconds."
        ),
    )
    runs: list[dict[str, Any]] = []
    profile = None
    with service(workdir, cpu=svc_cpu) as svc:
        with CpuWatch({"service": svc.pid}) as watch:
            for i in range(pairs):
                for label, interval in (("on", ON_INTERVAL), ("off", OFF_INTERVAL)):
                    r = _one(
                        svc,
                        workdir,
                        f"{label}-{i}",
                        interval,
                        duration=duration,
                        cpu=gen_cpu,
                        watch=watch,
                    )
                    r["monitor"] = label
                    runs.append(r)
        if not small:
            profile = _profile(svc, workdir, gen_cpu)
    _aggregate(result, runs, profile)
    result.setup = {
        "scenario": "baseline",
        "stress_level": STRESS_LEVEL,
        "duration_s": duration,
        "pairs": pairs,
        "on": f"--monitor-interval {ON_INTERVAL:g}",
        "off": f"--monitor-interval {OFF_INTERVAL:g}",
        "service_cpu": svc_cpu,
        "generator_cpu": gen_cpu,
    }
    return result


def _med(values: list[Any]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return statistics.median(vals) if vals else None


def _aggregate(result: BenchResult, runs: list[dict[str, Any]], profile: Any) -> None:
    on = [r for r in runs if r["monitor"] == "on" and r.get("rps") is not None]
    off = [r for r in runs if r["monitor"] == "off" and r.get("rps") is not None]
    rps_on, rps_off = _med([r["rps"] for r in on]), _med([r["rps"] for r in off])
    ratio = rps_on / rps_off if rps_on is not None and rps_off else None
    cpu_ms = _med([r["sample_cpu_ms_mean"] for r in on])
    cost_ms = _med([r["sample_cost_ms_mean"] for r in on])
    per_hour = None if cpu_ms is None else cpu_ms / 1000 * 3600 / ON_INTERVAL
    share = None if per_hour is None else per_hour / 3600
    g_on = _med([r["generator_cpu_util"] for r in on])
    g_off = _med([r["generator_cpu_util"] for r in off])
    diff = None if g_on is None or g_off is None else g_on - g_off
    s_on = _med([r["service_cpu_util"] for r in on])
    s_off = _med([r["service_cpu_util"] for r in off])
    result.raw = {"runs": runs}
    result.ratios = {
        "rps_monitor_on_over_off": ratio,
        "sampler_core_share": share,
        "generator_cpu_on_minus_off_core_share": diff,
    }
    result.goals = [
        Goal(
            "sampler CPU at the default interval (1 s)",
            per_hour,
            "<",
            GOAL_CORE_SHARE * 3600,
            "CPU s/hour",
            note="1% of one core is 36 CPU seconds per hour",
        ),
        Goal("requests/s, monitor on / off", ratio, ">=", GOAL_RATIO),
    ]
    result.tables = [
        Table(
            "Runs in the order they ran",
            [
                "run",
                "requests/s",
                "requests",
                "failures",
                "samples in window",
                "sampler CPU ms/sample",
                "sample wall ms",
                "Locust CPU %",
                "service CPU %",
            ],
            [
                [
                    r["run"],
                    r.get("rps"),
                    r.get("requests"),
                    r.get("failures"),
                    r.get("samples_in_window"),
                    r.get("sample_cpu_ms_mean"),
                    r.get("sample_cost_ms_mean"),
                    None if r.get("generator_cpu_util") is None else 100 * r["generator_cpu_util"],
                    None if r.get("service_cpu_util") is None else 100 * r["service_cpu_util"],
                ]
                for r in runs
            ],
        ),
        Table(
            "Medians",
            ["figure", "monitor on", "monitor off", "on / off or on - off"],
            [
                ["requests/s", rps_on, rps_off, ratio],
                [
                    "Locust process CPU, % of one core",
                    None if g_on is None else 100 * g_on,
                    None if g_off is None else 100 * g_off,
                    None if diff is None else 100 * diff,
                ],
                [
                    "service CPU, % of one core",
                    None if s_on is None else 100 * s_on,
                    None if s_off is None else 100 * s_off,
                    None if s_on is None or s_off is None else 100 * (s_on - s_off),
                ],
                ["sampler CPU ms per sample (greenlet tracer)", cpu_ms, None, None],
                ["sample wall ms (incl. waiting on HTTP)", cost_ms, None, None],
                ["sampler CPU s per hour at 1 s", per_hour, None, None],
            ],
        ),
    ]
    reading = []
    if per_hour is not None and share is not None:
        reading.append(
            f"The sampler spends {cpu_ms:.2f} ms of CPU per sample, {per_hour:.1f} CPU seconds "
            f"per hour at one sample a second: {100 * share:.2f}% of one core "
            f"({'under' if share < GOAL_CORE_SHARE else 'over'} the 1% goal). A sample takes "
            f"{cost_ms:.1f} ms of wall time, most of it waiting on the target's /metrics and "
            "/memory/stats answers while other greenlets run."
        )
    if diff is not None and share is not None:
        reading.append(
            f"Cross-check by process CPU: the Locust process used {100 * diff:+.2f} points of a "
            f"core more with the monitor on than off (the tracer says {100 * share:.2f}); the "
            "process figure also carries the gevent hub's socket work for the sampler's "
            "requests and the run-to-run noise of the traffic itself."
        )
    if ratio is not None:
        reading.append(
            f"Requests/s with the monitor on were {ratio:.3f} of those with it off "
            f"({'meets' if ratio >= GOAL_RATIO else 'misses'} the {GOAL_RATIO} goal). The "
            "baseline scenario's users wait 0.2-0.8 s between tasks and Locust's core was far "
            "from busy, so this ratio says the monitor does not disturb the scenario's load; "
            "on a saturated generator the monitor would take about its core share above."
        )
    if profile and profile.get("sources"):
        top = list(profile["sources"].items())[:3]
        reading.append(
            "Where the sampler's CPU goes (py-spy, busy samples under `Sampler._read`): "
            + ", ".join(f"{name.split(' (')[0]} {100 * share:.0f}%" for name, share in top)
            + (
                ": the HTTP sources cost most, a requests round trip each (and /metrics is "
                "parsed as text)."
                if top and top[0][0].startswith(("PrometheusSource", "StatsSource"))
                else "."
            )
        )
    result.reading = reading
    if profile:
        result.profile = {
            "tool": f"py-spy record --nonblocking, 100 Hz, {PROFILE_S} s",
            "of": f"an extra run sampling every {PROFILE_INTERVAL:g} s (20 x the default): "
            "where the sampler's own CPU goes (py-spy records busy samples only)",
            "top": profile["top"],
        }
