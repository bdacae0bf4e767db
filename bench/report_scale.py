"""Report scale: ``reports.build_run_report`` on synthetic run folders of 6 and 60 minutes.

The folders come from :mod:`reports.synthetic` (every file a run writes, 1 s
memory samples, a leak and a recovery stage) with the Locust history made as a
real baseline run's is with ``--csv-full-history``: one row per second for each
of its eight request names (the synthetic four plus context reads, history
reads, searches and document upserts) and the Aggregated row. Each build runs
on a fresh copy of its folder; sizes alternate 6, 60, 6, 60, 6, 60 after one
uncounted warm-up build (imports, matplotlib's font cache). One more 60-minute
build runs under cProfile, uncounted, to show where the time goes.
"""

from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import pandas as pd

from bench.profiling import cprofile_call
from bench.results import BenchResult, Goal, Table

GOAL_60_S = 10.0
GOAL_SCALE = 12.0

EXTRA_NAMES = (
    # (type, name, response ms, requests/s): the rest of a baseline run's traffic.
    ("GET", "GET /agents/[id]/context", 12.0, 3.0),
    ("GET", "GET /agents/[id]/messages", 6.0, 1.0),
    ("POST", "POST /vectors/search", 15.0, 1.0),
    ("POST", "POST /vectors/documents", 40.0, 1.0),
)
PHASES = ("read_run", "aggregate", "to_results", "render_charts", "render_run")


def make_folder(run_dir: Path, minutes: float) -> dict[str, Any]:
    """A synthetic run folder of ``minutes`` at 1 s samples; returns its row counts."""
    from memstress.reports.synthetic import Synthetic, write_run

    s = Synthetic(
        duration_s=minutes * 60, interval_s=1.0, scenario="baseline", extra_names=EXTRA_NAMES
    )
    write_run(run_dir, s)
    hist = pd.read_csv(run_dir / "locust_stats_history.csv")
    samples = pd.read_csv(run_dir / "memory_samples.csv")
    return {
        "minutes": minutes,
        "memory_samples_rows": len(samples),
        "history_rows": len(hist),
        "request_names": int(hist.loc[hist["Name"] != "Aggregated", "Name"].nunique()),
        "bytes": sum(p.stat().st_size for p in run_dir.iterdir() if p.is_file()),
    }


def _build(folder: Path, workdir: Path, tag: str) -> tuple[float, Path]:
    from memstress.common.config import load_config
    from memstress.reports import build_run_report

    copy = workdir / tag
    shutil.copytree(folder, copy)
    config = load_config()
    t0 = time.perf_counter()
    build_run_report(copy, config)
    return time.perf_counter() - t0, copy


def run(workdir: Path, small: bool) -> BenchResult:
    sizes = (0.6, 6.0) if small else (6.0, 60.0)
    repeats = 1 if small else 3
    result = BenchResult(
        name="report",
        title="Report scale: build time of 6- and 60-minute run folders",
        mode="small" if small else "full",
        what=(
            "Wall time of `reports.build_run_report` (read the folder, metrics, grades, "
            "value, results JSON, charts, Markdown) on synthetic run folders of "
            f"{sizes[0]:g} and {sizes[1]:g} minutes at 1 s samples, made by "
            "`reports.synthetic.write_run` with the Locust history of a real baseline run "
            "with `--csv-full-history` (one row per second for each of 8 request names plus "
            "Aggregated). Each build works on a fresh copy; sizes alternate after one "
            "uncounted warm-up build, in this process (so imports are not timed). An extra "
            f"{sizes[1]:g}-minute build under cProfile shows where the time goes."
        ),
    )
    folders: dict[float, Path] = {}
    shapes = []
    for m in sizes:
        folders[m] = workdir / f"source-{m:g}min"
        shapes.append(make_folder(folders[m], m))
    warm = workdir / "source-warmup"
    make_folder(warm, 0.5)
    _build(warm, workdir, "build-warmup")
    times: dict[float, list[float]] = {m: [] for m in sizes}
    order = []
    for i in range(repeats):
        for m in sizes:
            t, copy = _build(folders[m], workdir, f"build-{m:g}min-{i}")
            times[m].append(t)
            order.append([f"{m:g} min #{i + 1}", t])
            shutil.rmtree(copy, ignore_errors=True)
    profile = None
    if not small:
        copy = workdir / "build-profiled"
        shutil.copytree(folders[sizes[1]], copy)
        from memstress.common.config import load_config
        from memstress.reports import build_run_report

        config = load_config()
        _, prof = cprofile_call(lambda: build_run_report(copy, config), phases=PHASES)
        profile = prof
    small_t, big_t = statistics.median(times[sizes[0]]), statistics.median(times[sizes[1]])
    scale = big_t / small_t if small_t else None
    result.setup = {"sizes_min": list(sizes), "repeats": repeats, "interval_s": 1.0}
    result.raw = {"folders": shapes, "build_s": {f"{m:g}": times[m] for m in sizes}}
    result.ratios = {"build_time_60_over_6": scale}
    result.goals = [
        Goal(
            f"build time of the {sizes[1]:g}-minute folder (median)",
            big_t,
            "<",
            GOAL_60_S,
            "s",
            id="report_build_60min_s",
        ),
        Goal(
            f"build time {sizes[1]:g} min / {sizes[0]:g} min (10 x the data)",
            scale,
            "<=",
            GOAL_SCALE,
            "x",
            id="report_build_scaling",
        ),
    ]
    result.tables = [
        Table(
            "Folders",
            ["minutes", "memory_samples rows", "history rows", "request names", "MB on disk"],
            [
                [
                    s["minutes"],
                    s["memory_samples_rows"],
                    s["history_rows"],
                    s["request_names"],
                    s["bytes"] / 2**20,
                ]
                for s in shapes
            ],
        ),
        Table("Builds in the order they ran", ["build", "seconds"], order),
        Table(
            "Medians",
            ["minutes", "median s", "min s", "max s"],
            [[m, statistics.median(v), min(v), max(v)] for m, v in times.items()],
        ),
    ]
    reading = [
        f"The {sizes[1]:g}-minute folder built in {big_t:.2f} s (median of {repeats}), the "
        f"{sizes[0]:g}-minute one in {small_t:.2f} s: {scale:.2f} x the time for 10 x the data"
        + (
            ", so the build is sub-linear: a fixed cost (charts, the JSON and Markdown) "
            "dominates the short run."
            if scale is not None and scale < 10
            else "."
        )
    ]
    if profile is not None:
        phases: dict[str, float] = profile["phases"]
        result.raw["profile_phases_s"] = phases
        if phases:
            total = sum(phases.values())
            parts = ", ".join(f"{k} {v:.2f} s" for k, v in phases.items())
            reading.append(
                f"Under cProfile (slower than the timed builds) the phases took {parts} "
                f"({total:.2f} s in all)."
            )
        result.profile = {
            "tool": "cProfile",
            "of": f"one extra, uncounted build of the {sizes[1]:g}-minute folder",
            "top": profile["top"] + ["", "by cumulative time:"] + profile["by_cumulative"],
        }
    result.reading = reading
    return result
