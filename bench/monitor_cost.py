"""Monitor cost: the monitor's process CPU, and requests/s with it on vs not attached.

**Sampler CPU, on minus off in one process.** ``bench/sampler_probe.py`` runs a
Locust environment with no users next to the reference service (which serves
every source: ``/metrics``, ``/memory/stats``, its PID for psutil; host, PSI
and cgroup are read from the machine). It alternates an idle phase and a phase
with a :class:`monitors.monitor.MemoryMonitor` running (every source, 1 s
interval: sampler, health check and cleanup greenlets). Each phase's CPU is the
process's user + system time from its CPU clock (``time.process_time``; /proc's
10 ms ticks would be a twentieth of the goal). The figure is the median
over cycles of (on - off) / phase length, as % of one core; the sampler
greenlet's own CPU (the monitor's greenlet-switch tracer) is a cross-check.

**Requests/s, monitor on vs truly off: side by side on one core.**
``bench/monitored_locustfile.py``: the plain search user at no think time against
:mod:`bench.fast_target` (which answers at once, and serves ``/metrics``,
``/memory/stats`` and ``/health`` so every source has something to read), with
the monitor attached (every source, 1 s) or not imported at all. The goal's runs
start both generators *at once, pinned to the same CPU* (the target on the
other): the scheduler gives two busy processes equal shares of the core, so each
one's requests over the seconds both ran are its requests per CPU second, and
whatever the shared machine does to that core in a second (a neighbour, the
clock, the caches) it does to both. The figure is the median over runs (which
one starts first alternates) of on / off over their common seconds; a run
counts only when each side had at least ``TOGETHER_SHARE`` of the core over
those seconds (both saturated it, and the scheduler split it evenly).
Each side has half a core, so the monitor's fixed CPU a second weighs twice what
it would against a whole core: the figure leans against the monitor, not for
it. Back-to-back runs, each alone on the core (on first in even pairs, off first
in odd ones; requests/s over each run's saturated seconds, as in ``bench load``),
are kept beside it as a cross-check: on this shared machine their pair ratios
spread by +-10 % or more, five times the goal's margin, so they cannot judge a
2 % cost; the side-by-side runs of two unmonitored generators agree within about
1 %. It counts only when wrk on the generator's CPU gets at least 3x the
generators' combined rate from the target: the generator is what is saturated,
so the monitor's CPU shows as lost requests.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.loadgen import (
    CEILING_FACTOR,
    ENDPOINT,
    MIN_SATURATED_S,
    SATURATED_SHARE,
    USERS,
    _wrk,
    saturated_seconds,
)
from bench.procs import (
    BENCH_DIR,
    PYTHON,
    ROOT,
    BenchError,
    CpuWatch,
    FastTarget,
    clean_env,
    cpus,
    fast_target,
    finish_locust,
    per_second,
    pin,
    run_locust,
    service,
    start_locust,
    steady_rate,
    stop_process,
    wrk_path,
)
from bench.results import BenchResult, Goal, Table

LOCUSTFILE = BENCH_DIR / "monitored_locustfile.py"
TOGETHER_SHARE = 0.45  # each side's least share of the core, side-by-side runs
TOGETHER_MIN_S = 4  # fewest common seconds a side-by-side run needs


def _probe(
    host: str, target_pid: int, workdir: Path, *, phase_s: float, cycles: int, cpu: int | None
) -> list[dict[str, Any]]:
    cmd = [PYTHON, "-m", "bench.sampler_probe", "--host", host, "--target-pid", str(target_pid)]
    cmd += ["--run-dir", str(workdir / "probe"), "--phase-s", f"{phase_s:g}"]
    cmd += ["--cycles", str(cycles)]
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=clean_env(),
        start_new_session=True,
    )
    pin(proc.pid, cpu)
    try:
        out, err = proc.communicate(timeout=2 * phase_s * cycles + 60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise BenchError("the sampler probe did not end in time") from None
    rows = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    if proc.returncode != 0 or len(rows) != 2 * cycles:
        raise BenchError(
            f"the sampler probe failed (exit {proc.returncode}): {err.decode()[-800:]}"
        )
    return rows


def _side(
    monitor: bool,
    target: FastTarget,
    workdir: Path,
    tag: str,
    *,
    seconds: float,
    cpu: int | None,
    watch: CpuWatch,
) -> dict[str, Any]:
    run = run_locust(
        LOCUSTFILE,
        workdir / tag,
        _args(seconds),
        host=target.url,
        timeout=seconds + 60,
        env=_env(monitor, target, workdir, tag),
        cpu=cpu,
        watch=watch,
        watch_as=tag,
    )
    entry = run.entry(ENDPOINT)
    if entry is None:
        raise BenchError(f"{tag}: no {ENDPOINT} requests (exit {run.exit_code}): {run.log_tail()}")
    rps, n, t0, t1 = steady_rate(entry)
    gen = watch.between(tag, t0, t1)
    per_sec = per_second(entry)
    sat_s, sat_n, _ = saturated_seconds(
        per_sec, [(t, watch.between(tag, t, t + 1)) for t in range(int(t0), int(t1))]
    )
    samples = 0
    csv = workdir / tag / "run" / "memory_samples.csv"
    if csv.exists():
        samples = max(0, len(csv.read_text().splitlines()) - 1)
    return {
        "run": tag,
        "monitor": "on" if monitor else "off",
        "rps": rps,
        "requests": n,
        "generator_cpu_util": None if gen is None else gen / max(1e-6, t1 - t0),
        "saturated_s": sat_s,
        "saturated_rps": sat_n / sat_s if sat_s >= MIN_SATURATED_S and sat_n > 0 else None,
        "monitor_samples": samples,
        "failures": sum(int(e["num_failures"]) for e in run.entries),
    }


def _args(seconds: float) -> list[str]:
    args = ["--headless", "-u", str(USERS), "-r", str(USERS), "-t", f"{seconds:g}s"]
    return [*args, "--only-summary", "--loglevel", "WARNING", "--stop-timeout", "2"]


def _env(monitor: bool, target: FastTarget, workdir: Path, tag: str) -> dict[str, str]:
    return {
        "BENCH_MONITOR": "1" if monitor else "0",
        "BENCH_TARGET_PID": str(target.pid),
        "BENCH_RUN_DIR": str(workdir / tag / "run"),
        "BENCH_NAMESPACE": "benchmon-ns-0",
    }


def common_seconds(on: dict[int, int], off: dict[int, int]) -> list[int]:
    """The whole seconds both sides ran, oldest first, the first and last (partial) cut."""
    return sorted(set(on) & set(off))[1:-1]


def together_ratio(
    on: dict[int, int], off: dict[int, int], cpu_on: float | None, cpu_off: float | None
) -> dict[str, Any]:
    """On / off requests over the whole seconds both sides ran (first and last cut).

    ``on`` and ``off`` are each side's requests a second (Unix second -> count);
    ``cpu_on`` and ``cpu_off`` each side's CPU seconds over those common seconds.
    ``ratio`` is None (the run does not count) with fewer than ``TOGETHER_MIN_S``
    common seconds, or when a side had less than ``TOGETHER_SHARE`` of the core.
    """
    common = common_seconds(on, off)
    span = len(common)
    n_on = sum(on[t] for t in common)
    n_off = sum(off[t] for t in common)
    share_on = None if cpu_on is None or not span else cpu_on / span
    share_off = None if cpu_off is None or not span else cpu_off / span
    ok = (
        span >= TOGETHER_MIN_S
        and n_off > 0
        and share_on is not None
        and share_off is not None
        and min(share_on, share_off) >= TOGETHER_SHARE
    )
    per_cpu = (n_on / cpu_on) / (n_off / cpu_off) if cpu_on and cpu_off and n_off and n_on else None
    return {
        "common_s": span,
        "start": common[0] if common else None,
        "rps_on": n_on / span if span else 0.0,
        "rps_off": n_off / span if span else 0.0,
        "share_on": share_on,
        "share_off": share_off,
        "ratio": n_on / n_off if ok else None,
        "per_cpu_ratio": per_cpu,
    }


def _together(
    i: int, target: FastTarget, workdir: Path, *, seconds: float, cpu: int | None, watch: CpuWatch
) -> dict[str, Any]:
    """Both generators at once on ``cpu``: on first in even runs, off first in odd ones."""
    order = (True, False) if i % 2 == 0 else (False, True)
    started: dict[bool, tuple[Any, str, float]] = {}
    try:
        for monitor in order:
            tag = f"together-{'on' if monitor else 'off'}-{i}"
            t0 = time.time()
            proc = start_locust(
                LOCUSTFILE,
                workdir / tag,
                _args(seconds),
                host=target.url,
                env=_env(monitor, target, workdir, tag),
                cpu=cpu,
            )
            watch.add(tag, proc.pid)
            started[monitor] = (proc, tag, t0)
        per_sec: dict[bool, dict[int, int]] = {}
        for monitor, (proc, tag, t0) in started.items():
            run = finish_locust(proc, workdir / tag, t0, seconds + 60)
            entry = run.entry(ENDPOINT)
            if entry is None:
                raise BenchError(
                    f"{tag}: no {ENDPOINT} requests (exit {run.exit_code}): {run.log_tail()}"
                )
            per_sec[monitor] = per_second(entry)
    finally:
        for proc, _, _ in started.values():
            stop_process(proc, 5)
    common = common_seconds(per_sec[True], per_sec[False])
    cpu_s = {
        m: watch.between(tag, common[0], common[-1] + 1) if common else None
        for m, (_, tag, _) in started.items()
    }
    out = together_ratio(per_sec[True], per_sec[False], cpu_s[True], cpu_s[False])
    return {"run": i, "first": "on" if order[0] else "off", **out}


def run(workdir: Path, small: bool) -> BenchResult:
    phase_s = 2.0 if small else 20.0
    cycles = 1 if small else 4
    seconds = 4.0 if small else 10.0
    pairs = 1 if small else 8
    together_n, together_s = (1, 9.0) if small else (8, 12.0)
    cores = cpus()
    tgt_cpu, gen_cpu = (cores[0], cores[1]) if len(cores) >= 2 else (None, None)
    result = BenchResult(
        name="monitor",
        title="Monitor cost: process CPU on minus off, and requests/s with it on vs not attached",
        mode="small" if small else "full",
        what=(
            f"Sampler CPU: one process (`bench/sampler_probe.py`, a Locust environment with "
            f"no users) alternating {cycles} x ({phase_s:g} s idle, {phase_s:g} s with a "
            "MemoryMonitor running every source at 1 s: sampler, health and cleanup greenlets) "
            "next to the reference service; CPU of each phase user + system from the "
            "process's CPU clock (time.process_time), the figure the median of (on - off) / phase "
            "over cycles. Requests/s: "
            f"`bench/monitored_locustfile.py` ({USERS} plain users, no think time) against "
            "`bench/fast_target.py`, the monitor attached (every source, 1 s) or not imported. "
            f"The goal's figure: {together_n} runs of {together_s:g} s with both generators "
            "started at once, pinned to the same CPU (the target on the other), so each gets "
            "half the core and the same machine noise; on / off requests over the seconds both "
            f"ran, a run counting when each side had >= {TOGETHER_SHARE:.0%} of the core; the "
            "median of the runs (which starts first alternates). Half a core each makes the "
            "monitor's fixed CPU weigh twice what it would against a whole core: the figure "
            f"leans against the monitor. Cross-check: {pairs} back-to-back pairs of "
            f"{seconds:g} s, each run alone on the core (on first in even pairs, off first in "
            f"odd ones), requests/s over its seconds with >= {SATURATED_SHARE:.0%} of the core. "
            f"Counted only when wrk gets >= {CEILING_FACTOR:g}x the generators' rate from the "
            "target on the generator's CPU."
        ),
    )
    result.setup = {
        "phase_s": phase_s,
        "cycles": cycles,
        "seconds_per_run": seconds,
        "pairs": pairs,
        "together_runs": together_n,
        "seconds_per_together_run": together_s,
        "users": USERS,
        "target_cpu": tgt_cpu,
        "generator_cpu": gen_cpu,
        "interval_s": 1.0,
        "sources": "process, prometheus, stats, host, psi, cgroup (each kept when present)",
    }
    with service(workdir, cpu=tgt_cpu) as svc:
        phases = _probe(svc.url, svc.pid, workdir, phase_s=phase_s, cycles=cycles, cpu=gen_cpu)
    runs: list[dict[str, Any]] = []
    wrk_runs: list[dict[str, Any]] = []
    with fast_target(workdir, cpu=tgt_cpu) as target, CpuWatch({}) as watch:
        for i in range(pairs):
            for monitor in (True, False) if i % 2 == 0 else (False, True):
                tag = f"{'on' if monitor else 'off'}-{i}"
                runs.append(
                    _side(monitor, target, workdir, tag, seconds=seconds, cpu=gen_cpu, watch=watch)
                )
            if wrk_path() is not None:
                wrk_runs.append(_wrk(target, workdir, 2.0 if small else 5.0, gen_cpu))
        together = [
            _together(i, target, workdir, seconds=together_s, cpu=gen_cpu, watch=watch)
            for i in range(together_n)
        ]
    _aggregate(result, phases, runs, wrk_runs, together)
    return result


def _med(values: list[Any]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return statistics.median(vals) if vals else None


def _per_cpu(on: dict[str, Any], off: dict[str, Any]) -> float | None:
    """Requests per generator CPU second, on / off (None when a CPU figure is missing)."""
    a, b = on["generator_cpu_util"], off["generator_cpu_util"]
    if not a or not b or not off["rps"]:
        return None
    return float((on["rps"] / a) / (off["rps"] / b))


def _aggregate(
    result: BenchResult,
    phases: list[dict[str, Any]],
    runs: list[dict[str, Any]],
    wrk_runs: list[dict[str, Any]],
    together: list[dict[str, Any]],
) -> None:
    cycles = sorted({p["cycle"] for p in phases})
    diffs: list[float] = []
    tracer: list[float] = []
    sources: list[str] = []
    for c in cycles:
        on = next(p for p in phases if p["cycle"] == c and p["phase"] == "on")
        off = next(p for p in phases if p["cycle"] == c and p["phase"] == "off")
        diffs.append(100 * (on["cpu_s"] / on["wall_s"] - off["cpu_s"] / off["wall_s"]))
        tracer.append(100 * on["sampler_greenlet_cpu_s"] / on["wall_s"])
        sources = on.get("sources", sources)
    pct = _med(diffs)
    on_r = [r for r in runs if r["monitor"] == "on"]
    off_r = [r for r in runs if r["monitor"] == "off"]
    pair = [
        a["saturated_rps"] / b["saturated_rps"]
        if a["saturated_rps"] is not None and b["saturated_rps"]
        else None
        for a, b in zip(on_r, off_r, strict=True)
    ]
    counted = sum(x is not None for x in pair)
    back_to_back = _med(pair) if counted > len(pair) // 2 else None
    side = [t["ratio"] for t in together]
    side_counted = sum(x is not None for x in side)
    enough = side_counted > len(side) // 2
    ratio = _med(side) if enough else None
    side_per_cpu = _med([t["per_cpu_ratio"] for t in together])
    all_seconds = _med(
        [a["rps"] / b["rps"] if b["rps"] else None for a, b in zip(on_r, off_r, strict=True)]
    )
    per_cpu = [_per_cpu(a, b) for a, b in zip(on_r, off_r, strict=True)]
    wrk_rps = min(w["rps"] for w in wrk_runs) if wrk_runs else None
    fastest = max((r["rps"] for r in runs), default=None)
    headroom = wrk_rps / fastest if wrk_rps and fastest else None
    if headroom is None:
        why = "wrk is not installed: nothing shows the generator was saturated"
    elif headroom < CEILING_FACTOR:
        why = (
            f"wrk got only {headroom:.2f}x the faster run's rate (needs >= {CEILING_FACTOR:g}x): "
            "the generator may not have been saturated"
        )
    else:
        why = ""
    if not why and not enough:
        why = (
            f"only {side_counted} of {len(side)} side-by-side runs had each generator on >= "
            f"{TOGETHER_SHARE:.0%} of the core for >= {TOGETHER_MIN_S} common seconds (needs "
            "most runs): the core was not shared evenly by two saturated generators"
        )
    result.raw = {"phases": phases, "runs": runs, "wrk": wrk_runs, "together": together}
    result.ratios = {
        "monitor_process_cpu_pct_of_core": pct,
        "sampler_greenlet_cpu_pct_of_core": _med(tracer),
        "rps_on_over_off": ratio,
        "rps_on_over_off_side_by_side_per_cpu": side_per_cpu,
        "rps_on_over_off_back_to_back": back_to_back,
        "rps_on_over_off_all_steady_seconds": all_seconds,
        "rps_per_generator_cpu_on_over_off": _med(per_cpu),
        "wrk_ceiling_over_fastest_run": headroom,
    }
    result.goals = [
        Goal.of("sampler_cpu_pct_of_core", pct),
        Goal.of("monitor_on_off_rps_ratio", ratio, reason=why, valid=not why),
    ]
    result.tables = [
        Table(
            "Sampler probe phases (one process; CPU from its CPU clock)",
            ["cycle", "phase", "CPU s", "wall s", "% of a core", "samples", "tracer CPU s"],
            [
                [
                    p["cycle"],
                    p["phase"],
                    p["cpu_s"],
                    p["wall_s"],
                    100 * p["cpu_s"] / p["wall_s"],
                    p.get("samples"),
                    p.get("sampler_greenlet_cpu_s"),
                ]
                for p in phases
            ],
        ),
        Table(
            "Requests/s runs against the fast target",
            [
                "run",
                "monitor",
                "requests/s",
                "requests",
                "generator CPU %",
                f"saturated s (>= {SATURATED_SHARE:.0%})",
                "saturated requests/s",
                "samples",
                "failures",
            ],
            [
                [
                    r["run"],
                    r["monitor"],
                    r["rps"],
                    r["requests"],
                    None if r["generator_cpu_util"] is None else 100 * r["generator_cpu_util"],
                    r["saturated_s"],
                    r["saturated_rps"],
                    r["monitor_samples"],
                    r["failures"],
                ]
                for r in runs
            ],
        ),
        Table(
            "Side by side: both generators at once on one core (the goal's figure)",
            [
                "run",
                "first",
                "common s",
                "requests/s on",
                "requests/s off",
                "core share on",
                "core share off",
                "ratio on / off",
                "per CPU s on / off",
            ],
            [
                [
                    t["run"],
                    t["first"],
                    t["common_s"],
                    t["rps_on"],
                    t["rps_off"],
                    t["share_on"],
                    t["share_off"],
                    t["ratio"],
                    t["per_cpu_ratio"],
                ]
                for t in together
            ],
        ),
        Table(
            "Back-to-back pairs (on / off), each run alone on the core (cross-check)",
            [
                "pair",
                "first",
                "saturated requests/s on",
                "saturated requests/s off",
                "ratio",
                "per generator CPU s (all steady seconds)",
            ],
            [
                [
                    i,
                    "on" if i % 2 == 0 else "off",
                    a["saturated_rps"],
                    b["saturated_rps"],
                    pair[i],
                    per_cpu[i],
                ]
                for i, (a, b) in enumerate(zip(on_r, off_r, strict=True))
            ],
        ),
        Table(
            "The setup that makes the figures mean what they say",
            ["figure", "value"],
            [
                ["sources the monitor read", ", ".join(sources)],
                ["CPU source", "time.process_time (user + system, all threads), per phase"],
                ["wrk ceiling requests/s (lowest run)", wrk_rps],
                ["fastest Locust run requests/s", fastest],
                [f"ceiling / fastest (must be >= {CEILING_FACTOR:g})", headroom],
            ],
        ),
    ]
    reading = []
    if pct is not None:
        reading.append(
            f"With every source on at 1 s the monitor's process used {pct:.2f}% of a core more "
            f"than the same process idle (median of {len(diffs)} cycles: "
            + ", ".join(f"{d:.2f}" for d in diffs)
            + f"); the sampler greenlet's own CPU by the tracer was {_med(tracer) or 0:.2f}%."
        )
    spread = [x for x in pair if x is not None]
    reading.append(
        "Requests/s with the monitor attached, side by side with an unmonitored generator on "
        "the same core, were "
        + ("n/a" if ratio is None else f"{ratio:.3f}")
        + f" of its neighbour's ({side_counted} of {len(side)} runs counted: "
        + ", ".join("-" if x is None else f"{x:.3f}" for x in side)
        + f"); per CPU second {side_per_cpu or 0:.3f}. "
        + "Back to back, each run alone on the core: "
        + ("n/a" if back_to_back is None else f"{back_to_back:.3f}")
        + f" ({counted} of {len(pair)} pairs counted: "
        + ", ".join("-" if x is None else f"{x:.3f}" for x in pair)
        + (f"; spread {min(spread):.3f}-{max(spread):.3f}" if spread else "")
        + f"); over all steady seconds {all_seconds or 0:.3f}; per generator CPU second, "
        + f"{_med(per_cpu) or 0:.3f}."
        + (f" Not judged: {why}." if why else "")
    )
    result.reading = reading
