"""The benchmarks run and write well-formed results (their --small mode; no timing asserted).

Each benchmark's small mode runs as its own ``python -m bench NAME --small``
process into a folder of the test's own; the five run side by side, so the
whole test takes about as long as the slowest one. What is checked: exit code
0, no traceback, ``results.json`` with the keys and types a reader relies on,
``RESULTS.md`` with a section per benchmark, and ``render`` rebuilding it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bench.results import GOALS, Goal
from tests.locust_helpers import ROOT, assert_no_traceback, locust_env, run_to_end

NAMES = ("load", "monitor", "report", "leak", "service", "selfrss", "capture")
NUMBER = (int, float)


def bench(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return run_to_end([sys.executable, "-m", "bench", *args], cwd=ROOT, timeout=timeout)


def needed(session: pytest.Session, module: object) -> list[str]:
    """The benchmarks the selected tests of this module read: a parametrized test its
    ``name``, the render test ``report``; all of them when the whole module runs."""
    names = set()
    for item in session.items:
        if getattr(item, "module", None) is not module:
            continue
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "name" in callspec.params:
            names.add(callspec.params["name"])
        elif "small_runs" in getattr(item, "fixturenames", ()):
            names.add("report")
    return [n for n in NAMES if n in names]


@pytest.fixture(scope="module")
def small_runs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[int, str, Path]]:
    """The --small run of every benchmark a selected test reads, all at once; name ->
    (exit code, output, out folder). ``-k capture`` starts the capture bench alone."""
    base = tmp_path_factory.mktemp("bench")
    procs = {}
    for name in needed(request.session, request.module):
        out = base / name
        log = open(base / f"{name}.log", "w")  # noqa: SIM115 - closed below
        procs[name] = (
            subprocess.Popen(
                [sys.executable, "-m", "bench", name, "--small", "--out", str(out)],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=locust_env(),
                start_new_session=True,
            ),
            log,
            out,
        )
    results = {}
    deadline = time.monotonic() + 150
    for name, (proc, log, out) in procs.items():
        try:
            code = proc.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait(10)
        log.close()
        results[name] = (code, (base / f"{name}.log").read_text(), out)
    return results


def check_entry(name: str, b: dict[str, Any]) -> None:
    assert b["name"] == name
    assert b["mode"] == "small"
    for key, typ in (
        ("title", str),
        ("what", str),
        ("started", str),
        ("wall_s", NUMBER),
        ("setup", dict),
        ("raw", dict),
        ("ratios", dict),
        ("goals", list),
        ("tables", list),
        ("reading", list),
        ("notes", list),
        ("host", dict),
        ("command", str),
        ("git_commit", str),
        ("tree_clean", bool),
    ):
        assert isinstance(b[key], typ), f"{name}.{key}: {type(b[key]).__name__}"
    assert b["what"] and b["what"] != "(did not run)", b["notes"]
    assert b["raw"], f"{name}: no raw figures"
    assert b["goals"] or name == "leak", f"{name}: no goals"  # leak's are full-mode only
    for g in b["goals"]:
        assert g["id"] in GOALS and GOALS[g["id"]].bench == name, g["id"]
        assert isinstance(g["name"], str) and g["op"] in (">=", ">", "<=", "<", "==")
        assert isinstance(g["target"], NUMBER)
        assert g["value"] is None or isinstance(g["value"], NUMBER)
        assert g["passed"] in (True, False, None)
        # a goal left unjudged (not measured, or its setup did not hold) says why
        assert g["passed"] is not None or g["reason"], f"{name}: {g['id']} unjudged, no reason"
        # A small run measures every figure it reports, or says why it could not (its
        # windows are a few seconds: on a busy machine the CPU watcher can miss one).
        assert g["value"] is not None or g["reason"], g
    for value in b["ratios"].values():
        assert value is None or isinstance(value, (*NUMBER, list))
    for t in b["tables"]:
        assert isinstance(t["title"], str) and t["columns"]
        assert all(len(row) == len(t["columns"]) for row in t["rows"]), t["title"]
    assert all(isinstance(line, str) for line in b["reading"]) and b["reading"]
    assert isinstance(b["host"]["busy_pct"], NUMBER)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_small_mode_writes_well_formed_results(
    name: str, small_runs: dict[str, tuple[int, str, Path]]
) -> None:
    code, output, out = small_runs[name]
    assert code == 0, output[-4000:]
    assert_no_traceback(output)
    doc = json.loads((out / "results.json").read_text())
    assert doc["schema"] == 2
    m = doc["machine"]
    assert isinstance(m["cores"], int) and m["cores"] >= 1
    assert isinstance(m["cpu_model"], str) and m["cpu_model"]
    assert isinstance(m["python"], str) and isinstance(m["date"], str)
    assert isinstance(m["packages"], dict) and m["packages"]["locust"]
    assert list(doc["benchmarks"]) == [name]
    b = doc["benchmarks"][name]
    check_entry(name, b)
    if name == "capture":  # the memray-run reference ran beside the attach windows
        for key in ("tracking_rps_ratio", "memray_run_rps_ratio", "tracking_over_memray_run"):
            assert isinstance(b["ratios"][key], NUMBER) and b["ratios"][key] > 0, b["ratios"]
        assert b["raw"]["memray_run"]["exit_code"] == 0, b["raw"]["memray_run"]
        assert b["raw"]["memray_run"]["file_bytes"] > 0, b["raw"]["memray_run"]
    if name == "leak":  # the smoke run's leak is found, and its leak-free run calls none
        cases = {c["case"]: c for c in b["raw"]["per_case"]}
        assert cases["steady-60mb"]["found_in_goal"] == 1, b["raw"]["runs"]
        assert cases["free-sawtooth"]["final_leak_verdicts"] == 0, b["raw"]["runs"]
    if name == "selfrss":  # each process's slope whole, in its second half, and by kind
        slopes = b["raw"]["slopes_by_kind_mb_per_h"]
        assert set(slopes) == {"memstress master", "memstress worker", "plain master"}
        assert all(set(s) == {"rss", "anon", "file", "rss_2nd"} for s in slopes.values())
        assert "second half" in b["goals"][0]["reason"], b["goals"][0]["reason"]
        (csv,) = (out / "_runs").glob("*/selfrss/rss.csv")
        assert len(csv.read_text().splitlines()) > 3 * 10  # every second's sample, 3 processes
    for row in doc["summary"]:
        assert row["benchmark"] == name and row["passed"] in (True, False, None)
    # every goal id is in the file: this benchmark's measured, the others' not, with why
    assert set(doc["goals"]) == set(GOALS)
    for gid, g in doc["goals"].items():
        assert g["goal"].split()[0] in (">=", ">", "<=", "<", "==")
        if GOALS[gid].bench != name:
            assert g["value"] is None and g["passed"] is None
            assert g["reason"].startswith(f"the {GOALS[gid].bench} benchmark has not run")
        else:
            assert g["mode"] == "small" and g["git_commit"] == b["git_commit"]
    md = (out / "RESULTS.md").read_text()
    assert md.startswith("# memstress benchmarks")
    assert f"(`python -m bench {name}`)" in md
    assert "a smoke run: not a measurement" in md


@pytest.mark.slow
def test_render_rebuilds_the_markdown_from_the_json(
    small_runs: dict[str, tuple[int, str, Path]],
) -> None:
    _, _, out = small_runs["report"]
    before = (out / "RESULTS.md").read_text()
    (out / "RESULTS.md").unlink()
    r = bench("render", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert (out / "RESULTS.md").read_text() == before


def test_an_unknown_benchmark_is_one_line_and_exit_2() -> None:
    r = bench("loadd")
    assert r.returncode == 2
    assert "unknown benchmark 'loadd' (valid: load, monitor, report, leak, service" in r.stderr
    assert_no_traceback(r.stderr)


def test_a_bad_selfrss_length_is_one_line_and_exit_2() -> None:
    r = bench("selfrss", "--seconds", "5")
    assert r.returncode == 2
    assert "not a run length: '5' (valid: seconds from 60 to 86400" in r.stderr
    r = bench("load", "--seconds", "900")
    assert r.returncode == 2
    assert "--seconds applies to selfrss only" in r.stderr


def test_a_goal_says_why_it_is_not_met_or_not_judged() -> None:
    missed = Goal.of("worker_rss_ratio", 1.4).as_dict()
    assert missed["passed"] is False and "1.4" in missed["reason"] and missed["goal"] == "<= 1.25"
    met = Goal.of("worker_rss_ratio", 1.1).as_dict()
    assert met["passed"] is True and met["reason"] == ""
    gate = Goal.of("loadgen_cpu_per_request_ratio", 1.0, reason="wrk served 2x", valid=False)
    assert gate.passed is None  # a figure whose setup did not hold is neither met nor missed
    assert Goal.of("leak_false_final_verdicts", None, reason="did not run").passed is None


def test_selfrss_tells_growth_that_stops_from_growth_that_goes_on() -> None:
    """A master that grows 3 MB of file-backed pages over its first 25 minutes and then holds
    has a whole-run slope but a flat second half; one whose heap grows all hour has both.
    (Growth over the first 10 minutes alone would not move the hour's Theil-Sen slope at
    all: fewer than half its pairs of points would see it.)"""
    from bench.self_rss import KINDS, Sample, _kind, _over, envelope_slope_mb_h, why

    hour, mb = 3600.0, float(2**20)
    ts = [float(t) for t in range(0, int(hour), 5)]
    grow = [3 * mb * min(t, 1500.0) / 1500 for t in ts]  # file-backed pages, first 25 min
    early: list[Sample] = [(t, 100 * mb + g, 20 * mb + g) for t, g in zip(ts, grow, strict=True)]
    steady: list[Sample] = [(t, 100 * mb + 2 * mb * t / hour, 20 * mb) for t in ts]
    flat: list[Sample] = [(t, 50 * mb, 10 * mb) for t in ts]
    slopes: dict[str, dict[str, float | None]] = {}
    for name, samples in (
        ("memstress master", early),
        ("memstress worker", flat),
        ("plain master", flat),
    ):
        slopes[name] = {k: envelope_slope_mb_h(_kind(samples, k), 5.0, 80.0) for k in KINDS}
        slopes[name]["rss_2nd"] = envelope_slope_mb_h(_kind(samples, "rss"), 5.0, hour / 2)
    master = slopes["memstress master"]
    assert master["rss"] is not None and master["rss"] > 0.5  # the whole hour feels the start
    assert master["rss_2nd"] == pytest.approx(0.0, abs=1e-9)
    assert master["anon"] == pytest.approx(0.0, abs=1e-9) and master["file"] == pytest.approx(
        master["rss"]
    )
    assert _over(slopes, "rss_2nd") == pytest.approx(0.0, abs=1e-9)
    assert "second half +0.00" in why(slopes)
    s = envelope_slope_mb_h(_kind(steady, "rss"), 5.0, hour / 2)
    assert s == pytest.approx(2.0, rel=1e-6)  # growth that goes on is in the second half too


def test_the_issue_goals_have_stable_ids() -> None:
    for gid in (
        "loadgen_cpu_per_request_ratio",
        "loadgen_saturated_rps_ratio",
        "worker_rss_ratio",
        "sampler_cpu_pct_of_core",
        "monitor_on_off_rps_ratio",
        "leak_recall_2mb_90s",
        "leak_recall_1mb_180s",
        "leak_recall_05mb_420s",
        "leak_false_final_verdicts",
        "self_rss_slope_mb_per_hour",
        "leak_slope_error_pct",
    ):
        assert gid in GOALS
    assert (
        GOALS["loadgen_cpu_per_request_ratio"].op,
        GOALS["loadgen_cpu_per_request_ratio"].target,
    ) == ("<=", 1.10)
    assert (GOALS["sampler_cpu_pct_of_core"].op, GOALS["sampler_cpu_pct_of_core"].target) == (
        "<=",
        0.5,
    )


def _load_run(side: str, i: int, sat_rps: float | None, sat_cpu: float | None) -> dict[str, Any]:
    return {
        "side": side,
        "run": f"{side}-{i}",
        "rps": 5000.0,
        "requests": 40000,
        "window_s": 8.0,
        "failures": 0,
        "generator_cpu_s": 5.0,
        "generator_cpu_util": 0.7,
        "generator_cpu_ms_per_request": 0.125,
        "saturated_s": 0 if sat_rps is None else 6,
        "saturated_rps": sat_rps,
        "saturated_cpu_ms_per_request": sat_cpu,
        "exit_code": 0,
    }


def test_load_counts_only_seconds_and_pairs_where_the_generator_had_its_core() -> None:
    """Seconds under 90 % of a core are left out; the goals take the median of the pairs
    whose both runs had enough saturated seconds, and are not judged unless most did."""
    from bench.loadgen import _aggregate, saturated_seconds
    from bench.results import BenchResult

    per_sec = {10: 9000, 11: 6000, 12: 9100, 13: 100}
    cpu = [(10, 0.99), (11, 0.66), (12, 0.95), (13, None)]
    assert saturated_seconds(per_sec, cpu) == (2, 18100, pytest.approx(1.94))

    wrk = [{"rps": 90000.0}]
    ok = [("scenario", 9000.0, 0.110), ("plain", 9900.0, 0.100)] * 3  # three pairs at 1.1x
    runs = [_load_run(s, i // 2, r, c) for i, (s, r, c) in enumerate(ok)]
    runs += [_load_run("scenario", 3, None, None), _load_run("plain", 3, 9000.0, 0.1)]
    result = BenchResult(name="load", title="t", mode="full", what="w")
    _aggregate(result, runs, wrk, [])
    goals = {g.id: g for g in result.goals}
    assert goals["loadgen_cpu_per_request_ratio"].value == pytest.approx(1.1)
    assert goals["loadgen_saturated_rps_ratio"].value == pytest.approx(9000 / 9900)
    assert goals["loadgen_cpu_per_request_ratio"].passed is True

    few = runs[:2] + [_load_run(s, 1, None, None) for s in ("scenario", "plain")] * 2
    result = BenchResult(name="load", title="t", mode="full", what="w")
    _aggregate(result, few, wrk, [])
    goal = next(g for g in result.goals if g.id == "loadgen_cpu_per_request_ratio")
    assert goal.passed is None and "only 1 of 3 pairs" in goal.reason, goal.reason


def test_side_by_side_ratio_takes_the_seconds_both_ran_and_needs_an_even_share() -> None:
    """The monitor goal's runs: on / off over the whole seconds both generators ran (the
    first and last common second cut), counted only when each had its share of the core."""
    from bench.monitor_cost import TOGETHER_SHARE, together_ratio

    on = {t: 3000 for t in range(100, 112)}  # started a second later, ended a second later
    off = {t: 3100 for t in range(99, 111)}
    off[105] = 9000  # a second the on side's neighbour ran alone counts for both
    on[105] = 8700
    r = together_ratio(on, off, cpu_on=4.5, cpu_off=4.5)  # common 100..110, cut to 101..109
    assert r["common_s"] == 9 and r["start"] == 101
    assert r["ratio"] == pytest.approx((8 * 3000 + 8700) / (8 * 3100 + 9000))
    assert r["share_on"] == pytest.approx(0.5) and r["per_cpu_ratio"] == pytest.approx(r["ratio"])
    lopsided = together_ratio(on, off, cpu_on=9 * (TOGETHER_SHARE - 0.01), cpu_off=4.5)
    assert lopsided["ratio"] is None and lopsided["per_cpu_ratio"] is not None
    short = together_ratio({1: 1, 2: 1, 3: 1, 4: 1}, {1: 1, 2: 1, 3: 1, 4: 1}, 1.0, 1.0)
    assert short["common_s"] == 2 and short["ratio"] is None
    assert together_ratio(on, off, None, 4.5)["ratio"] is None
