"""Aggregation on constructed run folders: every figure checked against a hand-worked value."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from memstress.common.config import Config, load_config
from memstress.common.runfiles import EVENT_COLUMNS, SAMPLE_COLUMNS
from memstress.common.units import MB
from memstress.reports.collect import read_run
from memstress.reports.metrics import RunMetrics, compute, locust_percentile
from memstress.reports.metrics.base import stage_injects, stage_phase
from memstress.reports.metrics.leak import judged_series, lower_envelope, stage_slope
from memstress.reports.synthetic import SMALL_START as T0
from memstress.reports.synthetic import (
    Stage,
    empty_samples,
    locust_entry,
    small_run,
    write_csv,
    write_meta,
    write_stages,
)


@pytest.fixture(scope="module")
def cfg() -> Config:
    return load_config()


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory, cfg: Config) -> RunMetrics:
    return compute(read_run(small_run(tmp_path_factory.mktemp("small") / "run")), cfg)


def test_memory_growth_peak_and_budget(small: RunMetrics) -> None:
    m = small.memory
    assert m.samples == 100
    assert m.start_mb == 100.0  # median of the first 5 samples
    assert m.end_mb == 105.0  # median of the last 5
    assert m.growth_mb == 5.0
    assert m.peak_mb == 198.0
    assert m.budget_mb == 400.0
    assert m.peak_pct_of_budget == pytest.approx(49.5)
    assert m.returned_to_start is True  # 105 <= 100 * 1.10
    assert m.end_vs_start_pct == pytest.approx(5.0)
    assert small.duration_s == 100.0


def test_optimization_counters_are_deltas(small: RunMetrics) -> None:
    o = small.optimization
    assert (o.count, o.failed) == (20, 2)
    assert o.success_rate_pct == pytest.approx(90.0)
    assert o.freed_mb == pytest.approx(50.0)


def test_cycle_times_from_locust_json_with_locust_percentiles(small: RunMetrics) -> None:
    c = small.cycle
    assert c.source == "locust.json"  # exact totals, not the stats CSV's 97
    assert c.count == 100
    assert c.mean_s == pytest.approx(0.196)
    assert (c.p50_s, c.p95_s, c.p99_s, c.max_s) == (0.2, 0.9, 2.0, 2.0)


def test_locust_percentile_matches_locust() -> None:
    hist = {100.0: 50, 200.0: 45, 900.0: 4, 2000.0: 1}
    assert [locust_percentile(hist, 100, p) for p in (0.5, 0.95, 0.99, 1.0)] == [
        200,
        900,
        2000,
        2000,
    ]


def test_errors_and_shed_are_counted_apart(small: RunMetrics) -> None:
    r = small.requests
    assert (r.requests, r.failures, r.shed) == (400, 10, 40)
    assert r.error_rate_pct == pytest.approx(2.5)
    assert r.shed_pct == pytest.approx(10.0)
    assert r.exceptions == 0
    assert r.peak_users == 10
    assert r.top_failures[0]["occurrences"] == 8
    assert r.first_shed_s == 2.0  # history: the SHED counter is 1 at the 2nd second


def test_stats_csv_is_the_fallback_without_locust_json(tmp_path: Path, cfg: Config) -> None:
    run = small_run(tmp_path / "run")
    (run / "locust.json").unlink()
    m = compute(read_run(run), cfg)
    assert m.cycle.source == "locust_stats.csv"
    assert (m.cycle.count, m.cycle.mean_s, m.cycle.p95_s) == (97, 0.19, 0.9)
    assert m.requests.shed == 39  # the SHED row; Aggregated excluded


def test_recovery_time_from_end_of_stress(small: RunMetrics) -> None:
    r = small.recovery
    assert r.measured
    assert r.stress_end_s == 70.0  # the 'idle' stage (traffic: false) begins
    assert r.pre_stress_mb == 100.0  # median before the first stress stage
    assert r.recovered is True
    assert r.recovery_time_s == 5.0  # 150 MB until 75 s, then 105 MB <= 110 MB


def test_not_recovered_when_memory_stays_high(tmp_path: Path, cfg: Config) -> None:
    run = small_run(tmp_path / "run")
    s = pd.read_csv(run / "memory_samples.csv")
    s.loc[s["elapsed_s"] >= 70, "rss_bytes"] = 150 * MB
    s.to_csv(run / "memory_samples.csv", index=False)
    r = compute(read_run(run), cfg).recovery
    assert r.recovered is False
    assert r.recovery_time_s is None
    assert r.note == "memory watched for 29 s after the stress"


def test_memory_the_cleanup_gives_back_is_not_the_targets_recovery(
    tmp_path: Path, cfg: Config
) -> None:
    # Memory stays high through the idle stage and drops only once the cleanup stage
    # deletes the run's data (from 90 s): the target did not recover by itself.
    run = small_run(tmp_path / "run")
    write_stages(
        run,
        T0,
        [
            Stage("warmup", 0, 20, 2, {"phase": "warmup"}),
            Stage("load", 20, 50, 10, {"leak_mb_per_min": 0, "agents": 4, "phase": "stress"}),
            Stage("idle", 70, 20, 1, {"traffic": False, "phase": "recovery"}),
            Stage("cleanup", 90, 10, 1, {"cleanup": True, "phase": "recovery"}),
        ],
    )
    s = pd.read_csv(run / "memory_samples.csv")
    s.loc[s["elapsed_s"] >= 70, "rss_bytes"] = 150 * MB
    s.loc[s["elapsed_s"] >= 92, "rss_bytes"] = 100 * MB
    s.to_csv(run / "memory_samples.csv", index=False)
    r = compute(read_run(run), cfg).recovery
    assert r.measured and r.stress_end_s == 70.0
    assert r.recovered is False and r.recovery_time_s is None
    assert r.observed_s == 19.0  # the samples at 70..89 s; the cleanup's are not watched
    # Without its cleanup flag the same stage would have counted as recovery at 22 s.
    write_stages(
        run,
        T0,
        [
            Stage("warmup", 0, 20, 2, {"phase": "warmup"}),
            Stage("load", 20, 50, 10, {"leak_mb_per_min": 0, "agents": 4, "phase": "stress"}),
            Stage("idle", 70, 30, 1, {"traffic": False, "phase": "recovery"}),
        ],
    )
    r = compute(read_run(run), cfg).recovery
    assert r.recovered is True and r.recovery_time_s == 22.0


def test_per_stage_cut_by_stage_times(small: RunMetrics) -> None:
    warm, load, idle = small.stages
    assert [s.phase for s in small.stages] == ["warmup", "stress", "recovery"]
    assert (load.start_s, load.end_s, load.duration_s) == (20.0, 70.0, 50.0)
    assert load.peak_mb == 198.0
    assert load.memory_start_mb == 104.0  # median of 100, 102, 104, 106, 108
    assert load.optimizations == 9
    # history: cycles 2/s, stats 3/s (one failure per 10 s), shed 0.5/s
    assert load.cycle.count == 100
    assert load.cycle.mean_s == pytest.approx(0.15)
    assert load.cycle.p95_s == pytest.approx(0.3)
    assert (load.requests, load.failures, load.shed) == (250, 5, 25)
    assert load.error_rate_pct == pytest.approx(2.0)
    assert load.rps == pytest.approx(5.0)
    assert warm.pressure_peak == pytest.approx(25.0)  # 100 MB of 400 MB
    assert idle.users == 1


def test_stage_slope_on_linear_plus_sawtooth() -> None:
    # 3 MB/min of leak under a 15 MB GC sawtooth of period 5 s.
    t = np.arange(0.0, 600.0, 1.0)
    y = 300.0 + 3.0 * t / 60.0 + 15.0 * ((t % 5.0) / 5.0)
    tw, _ = lower_envelope(t, y, 5.0)
    assert len(tw) == 120
    assert np.allclose(tw % 5.0, 0.0)  # the minimum of each window is its sawtooth floor
    assert stage_slope(t, y, 5.0, 6) == pytest.approx(3.0)
    # The same sawtooth without the leak has no slope at all.
    assert stage_slope(t, 300.0 + 15.0 * ((t % 5.0) / 5.0), 5.0, 6) == 0.0
    # Too few windows for a slope.
    assert stage_slope(t[:20], y[:20], 5.0, 6) is None


def _verdict(run: Path, verdict: str, episodes: list[dict], **extra: object) -> None:
    """A leak_verdict.json as the monitor writes it (monitors.leak.FinalVerdict.as_dict)."""
    doc = {"verdict": verdict, "reason": extra.pop("reason", verdict), "episodes": episodes}
    (run / "leak_verdict.json").write_text(json.dumps({**doc, **extra}))


def _trend(t: float, slope: float, cleared: float | None = None) -> dict:
    return {
        "kind": "trend",
        "series": "memory",
        "called_at": T0 + t,
        "cleared_at": None if cleared is None else T0 + cleared,
        "slope_mb_min": slope,
        "ci_low_mb_min": slope - 0.5,
        "ci_high_mb_min": slope + 0.5,
        "scale_s": 30.0,
        "step_mb": None,
        "ended": None if cleared is None else "released",
        "text": f"rising {slope} MB/min",
    }


def test_leak_detection_delay_and_false_alarms(tmp_path: Path, cfg: Config) -> None:
    run = small_run(tmp_path / "run")
    stages = pd.read_csv(run / "stages.csv")
    stages.loc[1, "params"] = json.dumps({"leak_mb_per_min": 120, "injects": "leak"})
    stages.to_csv(run / "stages.csv", index=False)
    _verdict(run, "no leak", [_trend(10, 5.0, cleared=15), _trend(50, 120.0, cleared=80)])
    m = compute(read_run(run), cfg)
    assert m.stages[1].leak
    assert m.leak.injected_start_s == 20.0
    assert [e.called_at_s for e in m.leak.episodes] == [10.0, 50.0]
    assert [e.before_injection for e in m.leak.episodes] == [True, False]
    assert m.leak.detection_delay_s == 30.0
    assert m.leak.false_alarms == 1
    # The detector holds no leak at the end (the reset gave it back), but it found the
    # leak the scenario injected: that is the headline.
    assert m.leak.verdict == "leak" and not m.leak.held_at_end
    assert m.leak.slope_mb_min == 120.0 and m.leak.called_at_s == 50.0
    assert m.leak.graded_slope_mb_min is None  # the scenario's own leak: its checks judge it
    # the stage's own slope: +2 MB per 1 s sample = 120 MB/min
    assert m.stages[1].leak_slope_mb_min == pytest.approx(120.0)


def test_a_leak_held_at_the_end_is_the_verdict_and_the_graded_slope(
    tmp_path: Path, cfg: Config
) -> None:
    run = small_run(tmp_path / "run")
    ep = _trend(40, 2.6)
    _verdict(
        run,
        "leak",
        [ep],
        series="memory",
        **{k: ep[k] for k in ("slope_mb_min", "ci_low_mb_min", "ci_high_mb_min", "scale_s")},
        called_at=ep["called_at"],
    )
    m = compute(read_run(run), cfg)
    assert m.leak.verdict == "leak" and m.leak.held_at_end
    assert m.leak.basis.endswith("(leak_verdict.json)")
    assert m.leak.slope_mb_min == 2.6
    assert m.leak.graded_slope_mb_min == 2.6  # no stage injects a leak: it is a finding
    assert m.leak.false_alarms == 0
    assert m.leak.headline() == "leak 2.60 MB/min (CI 2.10–3.10) detected at 40 s"


def test_a_tier_past_its_limit_names_the_tier(tmp_path: Path, cfg: Config) -> None:
    run = small_run(tmp_path / "run")
    ep = {**_trend(60, 3.0), "series": "conversations"}
    text = "conversations: +3.0 MB/min past its 8 MB limit"
    _verdict(
        run,
        "leak",
        [ep],
        series="conversations",
        slope_mb_min=3.0,
        ci_low_mb_min=2.5,
        ci_high_mb_min=3.5,
        called_at=ep["called_at"],
        tiers=[{"tier": "conversations", "text": text}],
        tiers_note="tiers judged against their limits: conversations (8 MB)",
    )
    m = compute(read_run(run), cfg)
    assert m.leak.verdict == "leak" and m.leak.series == "conversations"
    assert m.leak.tiers == [text]
    assert m.leak.headline().startswith("leak in tier conversations 3.00 MB/min")


def test_without_leak_verdict_json_the_detector_is_replayed(tmp_path: Path, cfg: Config) -> None:
    run = small_run(tmp_path / "run")
    # 100 s of samples; these settings need a 60 s warm-up and 6 windows of 10 s
    settings = {"warmup_s": 60, "window_s": 10, "lookback_s": 480, "interval_s": 1.0}
    write_csv(
        run / "events.csv",
        [{"time": T0, "kind": "leak_settings", "detail": json.dumps(settings)}],
        EVENT_COLUMNS,
    )
    m = compute(read_run(run), cfg)
    assert m.leak.basis.startswith("the detector replayed")
    assert m.leak.verdict == "not judged"
    assert "not enough memory samples" in m.leak.reason, m.leak.reason
    assert m.leak.graded_slope_mb_min is None


def test_stage_phase_and_injects_are_declared_never_guessed() -> None:
    assert stage_phase({"phase": "warmup"}) == "warmup"
    assert stage_phase({"phase": "recovery", "leak_mb_per_min": 0}) == "recovery"
    assert stage_phase({"cleanup": True, "reset_faults": False}) == "recovery"
    assert stage_phase({"traffic": False}) == "stress"  # nothing declared: stress
    assert stage_injects({"injects": "leak"}) == "leak"
    assert stage_injects({"leak_mb_per_min": 30}) is None  # a parameter name is no declaration


def test_pressure_prefers_the_targets_own_score(tmp_path: Path, cfg: Config) -> None:
    run = small_run(tmp_path / "run")
    s = pd.read_csv(run / "memory_samples.csv")
    s["pressure"] = np.linspace(10, 96, len(s))
    s["psi_some_avg10"] = 1.5
    s["strategy"] = np.where(s["pressure"] >= 95, "emergency", "normal")
    s.to_csv(run / "memory_samples.csv", index=False)
    p = compute(read_run(run), cfg).pressure
    assert p.source == "target"
    assert p.peak == pytest.approx(96.0)
    assert p.psi_some_avg10_max == 1.5
    assert p.max_strategy == "emergency"


def test_cost_per_request_and_per_agent(small: RunMetrics) -> None:
    assert small.cost.per_request_kb == pytest.approx(5 * 1024 / 400)
    assert small.cost.per_agent_kb == pytest.approx(2 * 1024 / 4)  # 2 MB over 4 agents


def test_stop_reason_and_recorded_exit_code(tmp_path: Path, cfg: Config) -> None:
    run = small_run(tmp_path / "run", exit_code=4, stop_reason="")
    with open(run / "events.csv", "a") as f:
        f.write(f"{T0 + 90},emergency_stop,host memory 99.2% >= 99%\n")
    stop = compute(read_run(run), cfg).stop
    assert stop.kind == "safety"
    assert stop.reason == "emergency_stop: host memory 99.2% >= 99%"
    assert stop.meta_exit_code == 4


def test_samples_columns_are_the_runfiles_contract() -> None:
    # The reader relies on these names; a rename in common/runfiles.py must show up here.
    for col in ("time", "rss_bytes", "pressure", "optimizations_total", "bytes_freed_total"):
        assert col in SAMPLE_COLUMNS


def test_leak_trend_is_judged_net_of_the_targets_accounted_tiers() -> None:
    """A cache that fills is memory the target accounts for: no trend once it is taken off."""
    mb = 1024 * 1024
    t = np.arange(0.0, 600.0, 1.0)
    cache = np.minimum(t, 300.0) * 0.2 * mb  # 60 MB of cache filling for 5 min, then flat
    leak = t * (2.0 / 60.0) * mb  # 2 MB/min the target does not know about
    samples = pd.DataFrame(
        {"time": t, "rss_bytes": 100 * mb + cache + leak, "vectors_bytes": cache}
    )
    tj, net = judged_series(samples)
    net = net / mb
    assert len(tj) == len(t)
    slope = np.polyfit(tj / 60.0, net, 1)[0]
    assert slope == pytest.approx(2.0, rel=1e-6)  # only the leak is left
    plain = samples.drop(columns=["vectors_bytes"])
    _, rss = judged_series(plain)
    rss = rss / mb  # a target with no tiers: plain RSS
    assert rss[-1] - rss[0] == pytest.approx((cache[-1] + leak[-1]) / mb)


def vector_run(run: Path, *, after_drop_mb: float) -> Path:
    """70 samples 1 s apart: no vectors for 5 s at 100 MB; then 10 more vectors a second up to
    400, RSS 105 MB (a one-off 5 MB on the first requests) + 0.05 MB per vector, the vector
    tier 0.01 MB per vector; the cleanup stage at 60 s drops them all (count 0 from 61 s),
    after which RSS is ``after_drop_mb``."""
    run.mkdir(parents=True)
    write_meta(run, scenario="vector_store", duration_s=70.0, started=T0, ended=T0 + 70)
    ns = {"namespaces": 4}
    write_stages(
        run,
        T0,
        [
            Stage("load", 0, 60, 5, {**ns, "phase": "stress"}),
            Stage("cleanup", 60, 10, 1, {**ns, "cleanup": True, "phase": "recovery"}),
        ],
    )
    i = np.arange(70)
    count = np.where(i < 5, 0, np.minimum(10 * (i - 4), 400))
    count = np.where(i > 60, 0, count)
    rss = np.where(count > 0, 105.0 + 0.05 * count, 100.0)
    rss = np.where(i > 60, after_drop_mb, rss)
    samples = empty_samples(70)
    samples["time"] = T0 + i
    samples["elapsed_s"] = i
    samples["rss_bytes"] = rss * MB
    samples["rss_source"] = "psutil"
    samples["stored_vectors"] = count
    samples["vectors_bytes"] = 0.01 * count * MB
    samples.to_csv(run / "memory_samples.csv", index=False)
    names = {"search": "POST collections/[ns]/query", "drop_namespace": "DELETE collections/[ns]"}
    write_csv(
        run / "events.csv",
        [{"time": T0, "kind": "adapter", "detail": json.dumps({"name": "t", "requests": names})}],
        EVENT_COLUMNS,
    )
    # searches: p95 0.9 s; drops: 5 sent, 1 failed
    search = locust_entry(
        "POST", names["search"], {100: 50, 200: 45, 900: 4, 2000: 1}, start=T0, end=T0 + 60
    )
    drop = locust_entry("DELETE", names["drop_namespace"], {100: 5}, start=T0, end=T0 + 61)
    drop["num_failures"] = 1
    (run / "locust.json").write_text(json.dumps([search, drop]))
    return run


def test_memory_per_stored_vector_and_a_drop_that_gives_nothing_back(
    tmp_path: Path, cfg: Config
) -> None:
    m = compute(read_run(vector_run(tmp_path / "run", after_drop_mb=125.0)), cfg)
    v = m.vectors
    assert v.measured and v.most_stored == 400
    assert (v.rss_empty_mb, v.rss_at_most_mb) == (100.0, 125.0)
    assert v.rss_per_vector_kb == pytest.approx(25 * 1024 / 400)  # the one-off 5 MB included
    assert v.rss_slope_kb_per_vector == pytest.approx(0.05 * 1024)  # ... and left out
    assert v.accounted_per_vector_kb == pytest.approx(0.01 * 1024)
    assert m.cost.per_vector_kb == pytest.approx(0.01 * 1024)  # tier bytes / stored vectors
    d = v.drop
    assert (d.vectors_before, d.vectors_after, d.dropped, d.drop_requests) == (400, 0, 400, 4)
    assert (d.rss_before_mb, d.rss_after_mb, d.returned_mb) == (125.0, 125.0, 0.0)
    assert d.returned_pct_of_growth == 0.0 and d.observed_s == 9.0
    assert d.came_back is False
    assert "did NOT come back within 9 s" in d.finding and "125.0 MB" in d.finding


def test_a_drop_that_gives_memory_back_and_the_adapters_search_name(
    tmp_path: Path, cfg: Config
) -> None:
    from memstress.reports.results import aggregate

    a = aggregate(read_run(vector_run(tmp_path / "run", after_drop_mb=102.0)), cfg)
    d = a.metrics.vectors.drop
    assert d.came_back is True  # 102 MB <= 100 MB * 1.10
    assert d.returned_mb == 23.0 and d.returned_pct_of_growth == pytest.approx(92.0)
    assert d.finding.startswith("memory came back within 9 s")
    checks = {c.id: c for c in a.checks}
    assert checks["search_p95_max_s"].status == "fail"  # p95 0.9 s of the adapter's query
    assert "POST collections/[ns]/query p95 0.9 s" in checks["search_p95_max_s"].message


def test_no_stored_vector_counts_no_vector_figures(small: RunMetrics) -> None:
    assert small.vectors.measured is False and small.vectors.most_stored is None
    assert "no stored_vectors samples" in small.vectors.note
