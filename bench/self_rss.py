"""memstress's own memory over a long run: its master and one worker against plain Locust's.

Two distributed runs side by side, each a Locust master and one worker with
its own reference service: ``locustfile.py --scenario endurance`` at the
default monitor interval (memstress), and ``bench/plain_locustfile.py`` with the
endurance plan's peak user count and the same think time (plain Locust). This
process samples the RSS of the memstress master, its worker and the plain
master every second (psutil) and judges each series with memstress's own leak
detector (``monitors.leak.LeakDetector``, the config's settings). The figure is
the Theil-Sen slope (MB/h) of each series' lower envelope (the minimum of each
detector window) after the warm-up: the larger of the memstress master's and
worker's, less the plain master's.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import psutil

from bench.procs import BENCH_DIR, ROOT, BenchError, free_port, service, start_locust, stop_process
from bench.results import BenchResult, Goal, Table
from memstress.common.units import MB

FULL_S = 3600.0
SMALL_S = 20.0


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
    """Theil-Sen slope (MB/h) of the per-window minima after ``skip_s``."""
    from scipy.stats import theilslopes

    if not series:
        return None
    t0 = series[0][0] + skip_s
    windows: dict[int, tuple[float, float]] = {}
    for t, v in series:
        if t < t0:
            continue
        k = int((t - t0) // window_s)
        if k not in windows or v < windows[k][1]:
            windows[k] = (t, v)
    pts = sorted(windows.values())
    if len(pts) < 4:
        return None
    slope = theilslopes([v / MB for _, v in pts], [t for t, _ in pts])[0]
    return float(slope) * 3600


def judge(series: list[tuple[float, float]], settings: Any) -> dict[str, Any]:
    from memstress.monitors.leak import LeakDetector

    det = LeakDetector(settings, start=series[0][0] if series else None)
    changes = []
    for t, v in series:
        verdict = det.add(t, v)
        if verdict.changed:
            changes.append(f"{verdict.changed} at {t - series[0][0]:.0f} s")
    return {"final_state": det.final_verdict().verdict, "state_changes": changes}


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
            f"minima, after the first minute and the detector's {settings.warmup_s:g} s warm-up."
        ),
    )
    series: dict[str, list[tuple[float, float]]] = {"memstress master": [], "memstress worker": []}
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
                        rss = float(psutil.Process(proc.pid).memory_info().rss)
                        series[name].append((now, rss))
                time.sleep(1.0)
        finally:
            for proc in (m_master, p_master, m_worker, p_worker):
                stop_process(proc, 15)
    if any(len(s) < 5 for s in series.values()):
        raise BenchError(f"too few RSS samples: { {k: len(v) for k, v in series.items()} }")
    # Past the imports and the ramp to load (a minute), then the detector's own warm-up.
    skip, window = (8.0, 1.0) if small else (60.0 + settings.warmup_s, settings.window_s)
    slopes = {k: envelope_slope_mb_h(v, window, skip) for k, v in series.items()}
    verdicts = {
        k: judge([p for p in v if p[0] >= v[0][0] + skip], settings) for k, v in series.items()
    }
    ours = [s for k, s in slopes.items() if k.startswith("memstress") and s is not None]
    ref = slopes["plain master"]
    value = max(ours) - ref if ours and ref is not None else None
    result.setup = {"seconds": seconds, "plain_users": users, "detector": vars(settings)}
    result.raw = {"slopes_mb_per_h": slopes, "verdicts": verdicts}
    result.ratios = {"memstress_over_plain_mb_per_h": value}
    reason = "small mode: seconds, not an hour" if small else ""
    if short:
        reason = f"a {seconds:g} s run (--seconds), not the goal's hour"
    result.goals = [
        Goal.of("self_rss_slope_mb_per_hour", value, reason=reason, valid=not (small or short))
    ]
    result.tables = [
        Table(
            "RSS per process",
            ["process", "first MB", "last MB", "envelope slope MB/h", "detector", "state changes"],
            [
                [
                    k,
                    v[0][1] / MB,
                    v[-1][1] / MB,
                    slopes[k],
                    verdicts[k]["final_state"],
                    "; ".join(verdicts[k]["state_changes"]) or "none",
                ]
                for k, v in series.items()
            ],
        )
    ]
    result.reading = [
        f"{k}: {slopes[k] if slopes[k] is not None else float('nan'):+.2f} MB/h, "
        f"detector {verdicts[k]['final_state']}."
        for k in series
    ]
    return result
