"""memstress's own memory over a long run: its master and one worker against plain Locust's.

Two distributed runs side by side, each a Locust master and one worker with
its own reference service: ``locustfile.py --scenario endurance`` at the
default monitor interval (memstress), and ``bench/plain_locustfile.py`` with the
endurance plan's peak user count and the same think time (plain Locust). This
process samples the RSS of the memstress master, its worker and the plain
master every second (psutil) and judges each series with memstress's own leak
detector (``monitors.leak.LeakDetector``, the config's settings). The figure is
the Theil-Sen slope (MB/h) of each series' lower envelope (the minimum of each
detector window) after the first minute and the detector's warm-up: the larger
of the memstress master's and worker's, less the plain master's.

Beside that figure, which the goal judges, each process's slope is also taken
over the second half of the run alone, and split into anonymous memory (heap,
arenas) and file-backed pages (shared libraries mapped as code first runs):
growth that stops early (imports, caches filling their bound) shows as a
whole-run slope with a flat second half, growth that goes on shows in both.
Every second's sample of each process is written to ``rss.csv`` in the run's
scratch folder, and each minute's minimum goes into the result, so a slope can
be re-read from the file.
"""

from __future__ import annotations

import contextlib
import csv
import time
from pathlib import Path
from typing import Any

import psutil

from bench.procs import BENCH_DIR, ROOT, BenchError, free_port, service, start_locust, stop_process
from bench.results import BenchResult, Goal, Table
from memstress.common.units import MB

FULL_S = 3600.0
SMALL_S = 20.0
KINDS = ("rss", "anon", "file")  # resident, of it anonymous, of it file-backed (and shmem)

Sample = tuple[float, float, float]  # wall time, RSS bytes, resident shared (file + shmem) bytes


def _pair(kind: str, url: str, workdir: Path, seconds: float, users: int) -> tuple[Any, Any]:
    out = workdir / kind
    port = free_port()
    env = {"BENCH_NAMESPACE": "selfrss-ns-0", "BENCH_WAIT": "0.2,0.8"}
    master = ["--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port)]
    master += ["--headless", "--expect-workers", "1", "--loglevel", "WARNING", "--only-summary"]
    if kind == "memstress":
        locustfile = ROOT / "locustfile.py"
        master += ["--scenario", "endurance", "--duration", f"{seconds:g}"]
        master += ["--run-dir", str(out / "run")]
    else:
        locustfile = BENCH_DIR / "plain_locustfile.py"
        master += ["-u", str(users), "-r", str(users), "-t", f"{seconds:g}s"]
    worker = ["--worker", "--master-host", "127.0.0.1", "--master-port", str(port)]
    worker += ["--loglevel", "WARNING"]
    m = start_locust(locustfile, out, master, host=url, env=env)
    w = start_locust(locustfile, out, worker, host=url, env=env, log_name="worker.log")
    return m, w


def envelope_slope_mb_h(
    series: list[tuple[float, float]], window_s: float, skip_s: float
) -> float | None:
    """Theil-Sen slope (MB/h) of the per-window minima after ``skip_s``: the report's own
    stage slope (:func:`memstress.reports.metrics.leak.stage_slope`), per hour."""
    from memstress.reports.metrics.leak import stage_slope

    if not series:
        return None
    t, mb = _after(series, series[0][0] + skip_s)
    slope = stage_slope(t, mb, window_s, min_windows=4)
    return None if slope is None else slope * 60


def _after(series: list[tuple[float, float]], start: float) -> tuple[Any, Any]:
    """The points from ``start`` on, as arrays of times and MB."""
    import numpy as np

    kept = [(t, v / MB) for t, v in series if t >= start]
    return np.array([t for t, _ in kept], dtype=float), np.array([v for _, v in kept], dtype=float)


def judge(series: list[tuple[float, float]], settings: Any) -> dict[str, Any]:
    from memstress.monitors.leak import LeakDetector

    det = LeakDetector(settings, start=series[0][0] if series else None)
    changes = []
    for t, v in series:
        verdict = det.add(t, v)
        if verdict.changed:
            changes.append(f"{verdict.changed} at {t - series[0][0]:.0f} s")
    return {"final_state": det.final_verdict().verdict, "state_changes": changes}


def _kind(samples: list[Sample], kind: str) -> list[tuple[float, float]]:
    """One kind of memory over time: RSS, its anonymous part or its file-backed part."""
    if kind == "rss":
        return [(t, rss) for t, rss, _ in samples]
    if kind == "anon":
        return [(t, rss - shared) for t, rss, shared in samples]
    return [(t, shared) for t, _, shared in samples]


def _per_minute(samples: list[Sample]) -> list[list[float]]:
    """Each minute's lowest RSS sample: seconds from the first sample, RSS MB, anon MB."""
    from memstress.reports.metrics.leak import lower_envelope

    if not samples:
        return []
    t0 = samples[0][0]
    shared_at = {t: shared for t, _, shared in samples}
    times, rss_mb = lower_envelope(*_after(_kind(samples, "rss"), t0), 60.0)
    return [
        [round(t - t0, 1), round(mb, 3), round(mb - shared_at[t] / MB, 3)]
        for t, mb in zip(times.tolist(), rss_mb.tolist(), strict=True)
    ]


def _mb_h(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


def _over(slopes: dict[str, dict[str, float | None]], key: str) -> float | None:
    """The larger of memstress's master and worker slopes, less plain Locust's master's."""
    ours = [s[key] for k, s in slopes.items() if k.startswith("memstress")]
    ref = slopes["plain master"][key]
    if ref is None or any(v is None for v in ours):
        return None
    return max(v for v in ours if v is not None) - ref


def why(slopes: dict[str, dict[str, float | None]]) -> str:
    """One line on where the slope comes from: each process whole and in its second half."""
    each = "; ".join(
        f"{k} {_mb_h(s['rss'])} (second half {_mb_h(s['rss_2nd'])}; anon "
        f"{_mb_h(s['anon'])}, file {_mb_h(s['file'])})"
        for k, s in slopes.items()
    )
    return (
        f"MB/h after the warm-up: {each}. Over plain: {_mb_h(_over(slopes, 'rss'))} "
        f"over the run, {_mb_h(_over(slopes, 'rss_2nd'))} over its second half"
    )


def run(workdir: Path, small: bool, seconds: float | None = None) -> BenchResult:
    """One side-by-side run: ``seconds`` long (default: an hour, or 20 s when ``small``)."""
    from memstress.common.config import load_config
    from memstress.scenarios.registry import get_scenario

    config = load_config()
    settings = config.monitor.leak_detection
    if seconds is None:
        seconds = SMALL_S if small else FULL_S
    short = not small and seconds < FULL_S
    plan = get_scenario("endurance").build_plan(
        config, config.stress(config.stress_levels.default_level), seconds
    )
    users = max(p.users for p in plan)
    result = BenchResult(
        name="selfrss",
        title="memstress's own memory: master and worker RSS slope against plain Locust",
        mode="small" if small else ("short" if short else "full"),
        what=(
            f"Two distributed runs at once for {seconds:g} s, each a master, one worker and its "
            "own reference service: `locustfile.py --scenario endurance` (monitor at the "
            f"default interval) and `bench/plain_locustfile.py` with {users} users (the "
            "endurance plan's peak) waiting 0.2-0.8 s. RSS of the memstress master, its worker "
            "and the plain master every second (psutil); each series judged by memstress's "
            "own leak detector and its slope the Theil-Sen slope (MB/h) of its per-window "
            f"minima, after the first minute and the detector's {settings.warmup_s:g} s warm-up; "
            "the same slope over the second half of the run, and split into anonymous and "
            "file-backed pages (psutil's shared), to tell growth that stops early from growth "
            "that goes on. Every sample is kept in the scratch folder's rss.csv."
        ),
    )
    series: dict[str, list[Sample]] = {"memstress master": [], "memstress worker": []}
    series["plain master"] = []
    with service(workdir / "svc-m", budget_mb=512) as svc_m, service(workdir / "svc-p") as svc_p:
        svc_p.post(
            "/vectors/documents",
            {"namespace": "selfrss-ns-0", "doc_id": "d0", "text": "alpha beta gamma " * 50},
        )
        m_master, m_worker = _pair("memstress", svc_m.url, workdir, seconds, users)
        p_master, p_worker = _pair("plain", svc_p.url, workdir, seconds, users)
        procs = {
            "memstress master": m_master,
            "memstress worker": m_worker,
            "plain master": p_master,
        }
        try:
            end = time.monotonic() + seconds + 15
            while time.monotonic() < end and m_master.poll() is None and p_master.poll() is None:
                now = time.time()
                for name, proc in procs.items():
                    with contextlib.suppress(psutil.Error):
                        mem = psutil.Process(proc.pid).memory_info()
                        series[name].append((now, float(mem.rss), float(mem.shared)))
                time.sleep(1.0)
        finally:
            for proc in (m_master, p_master, m_worker, p_worker):
                stop_process(proc, 15)
    if any(len(s) < 5 for s in series.values()):
        raise BenchError(f"too few RSS samples: { {k: len(v) for k, v in series.items()} }")
    _write_csv(workdir / "rss.csv", series)
    # Past the imports and the ramp to load (a minute), then the detector's own warm-up.
    skip, window = (8.0, 1.0) if small else (60.0 + settings.warmup_s, settings.window_s)
    slopes: dict[str, dict[str, float | None]] = {}
    for k, v in series.items():
        slopes[k] = {kind: envelope_slope_mb_h(_kind(v, kind), window, skip) for kind in KINDS}
        slopes[k]["rss_2nd"] = envelope_slope_mb_h(_kind(v, "rss"), window, max(skip, seconds / 2))
    verdicts = {
        k: judge([p for p in _kind(v, "rss") if p[0] >= v[0][0] + skip], settings)
        for k, v in series.items()
    }
    value = _over(slopes, "rss")
    result.setup = {"seconds": seconds, "plain_users": users, "detector": vars(settings)}
    result.raw = {
        "slopes_mb_per_h": {k: s["rss"] for k, s in slopes.items()},
        "slopes_by_kind_mb_per_h": slopes,
        "second_half_over_plain_mb_per_h": _over(slopes, "rss_2nd"),
        "verdicts": verdicts,
        "per_minute_min": {
            "columns": ["s", "rss MB", "anon MB"],
            **{k: _per_minute(v) for k, v in series.items()},
        },
    }
    result.ratios = {"memstress_over_plain_mb_per_h": value}
    reason = why(slopes)
    if small:
        reason = f"small mode: seconds, not an hour. {reason}"
    elif short:
        reason = f"a {seconds:g} s run (--seconds), not the goal's hour. {reason}"
    result.goals = [
        Goal.of("self_rss_slope_mb_per_hour", value, reason=reason, valid=not (small or short))
    ]
    result.tables = [
        Table(
            "RSS per process (slopes in MB/h of per-window minima, after the warm-up)",
            [
                "process",
                "first MB",
                "last MB",
                "RSS slope",
                "second half",
                "anon slope",
                "file slope",
                "detector",
                "state changes",
            ],
            [
                [
                    k,
                    v[0][1] / MB,
                    v[-1][1] / MB,
                    slopes[k]["rss"],
                    slopes[k]["rss_2nd"],
                    slopes[k]["anon"],
                    slopes[k]["file"],
                    verdicts[k]["final_state"],
                    "; ".join(verdicts[k]["state_changes"]) or "none",
                ]
                for k, v in series.items()
            ],
        )
    ]
    result.reading = [
        f"{k}: {_mb_h(slopes[k]['rss'])} MB/h over the run, {_mb_h(slopes[k]['rss_2nd'])} "
        f"over its second half; detector {verdicts[k]['final_state']}."
        for k in series
    ]
    result.reading.append(
        f"Over plain Locust's master: {_mb_h(value)} MB/h over the run (the goal's figure), "
        f"{_mb_h(_over(slopes, 'rss_2nd'))} over the second half."
    )
    return result


def _write_csv(path: Path, series: dict[str, list[Sample]]) -> None:
    """Every sample, so a slope can be re-read later: process, wall time, RSS and shared bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["process", "time", "rss_bytes", "shared_bytes"])
        for k, v in series.items():
            out.writerows([k, t, int(rss), int(shared)] for t, rss, shared in v)
