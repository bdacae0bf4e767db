"""Grades and their messages, the verdict and exit codes, the scores and business value."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from memstress.common.config import Config, load_config
from memstress.common.exitcodes import worst
from memstress.reports.business import business_value
from memstress.reports.grading import (
    Grade,
    grade_all,
    overall,
    parse_grade,
    run_exit_code,
    thresholds,
    verdict,
)
from memstress.reports.metrics import (
    CostMetrics,
    Latency,
    LeakMetrics,
    MemoryMetrics,
    OptimizationMetrics,
    PressureMetrics,
    RecoveryMetrics,
    RequestMetrics,
    RunMetrics,
    StopInfo,
)
from memstress.reports.scores import health, stability


@pytest.fixture(scope="module")
def cfg() -> Config:
    return load_config()


@pytest.mark.parametrize(
    ("value", "grade", "message"),
    [
        (0.3, "excellent", "mean response time 0.3 s <= 0.5 s (Excellent bound) -> Excellent"),
        (0.5, "excellent", "mean response time 0.5 s <= 0.5 s (Excellent bound) -> Excellent"),
        (0.8, "good", "mean response time 0.8 s > 0.5 s (Excellent bound) -> Good"),
        (1.8, "acceptable", "mean response time 1.8 s > 1.0 s (Good bound) -> Acceptable"),
        (3.0, "marginal", "mean response time 3.0 s > 2.0 s (Acceptable bound) -> Marginal"),
        (5.0, "marginal", "mean response time 5.0 s > 2.0 s (Acceptable bound) -> Marginal"),
        (5.5, "poor", "mean response time 5.5 s > 5.0 s (Poor bound) -> Poor"),
    ],
)
def test_lower_is_better_bands(cfg: Config, value: float, grade: str, message: str) -> None:
    g = thresholds(cfg)["response_time"].grade(value)
    assert (g.grade, g.message) == (grade, message)


@pytest.mark.parametrize(
    ("value", "grade", "message"),
    [
        (97.0, "excellent", "stability score 97 >= 95 (Excellent bound) -> Excellent"),
        (90.0, "good", "stability score 90 < 95 (Excellent bound) -> Good"),
        (85.0, "good", "stability score 85 < 95 (Excellent bound) -> Good"),
        (75.0, "acceptable", "stability score 75 < 85 (Good bound) -> Acceptable"),
        (60.0, "marginal", "stability score 60 < 70 (Acceptable bound) -> Marginal"),
        (40.0, "poor", "stability score 40 < 50 (Poor bound) -> Poor"),
    ],
)
def test_stability_is_higher_is_better(cfg: Config, value: float, grade: str, message: str) -> None:
    g = thresholds(cfg)["stability_score"].grade(value)
    assert (g.grade, g.message) == (grade, message)


def test_error_rate_and_growth_units_in_messages(cfg: Config) -> None:
    th = thresholds(cfg)
    assert (
        th["error_rate"].grade(7.0).message
        == "error rate 7.0% > 5.0% (Acceptable bound) -> Marginal"
    )
    assert th["memory_growth"].grade(-3.0).grade == "excellent"
    assert th["memory_growth"].grade(600.0).message == (
        "memory growth 600 MB > 500 MB (Poor bound) -> Poor"
    )


def test_missing_metric_is_na_and_never_fails(cfg: Config) -> None:
    grades = grade_all(cfg, {"response_time": 0.2}, missing={"error_rate": "no requests"})
    by = {g.metric: g for g in grades}
    assert by["error_rate"].grade == "n/a"
    assert by["error_rate"].message == "error rate: n/a (no requests) -> not graded"
    v = verdict(grades, "excellent")
    assert v.passed and v.exit_code == 0 and v.overall == "excellent"
    nothing = verdict(grade_all(cfg, {}), "acceptable")
    # a run that measured nothing fails: a gate must not pass what it never saw
    assert not nothing.passed and nothing.exit_code == 1 and nothing.overall == "n/a"
    assert "nothing could be graded" in nothing.reason


def _g(grade: str) -> Grade:
    return Grade("m", "m", 1.0, "", grade, f"m -> {grade}")


def test_overall_is_the_worst_and_the_verdict_follows_fail_on() -> None:
    grades = [_g("excellent"), _g("marginal"), _g("good"), _g("n/a")]
    assert overall(grades) == "marginal"
    failed = verdict(grades, "acceptable")
    assert not failed.passed and failed.exit_code == 1
    assert failed.failed == ("m -> marginal",)
    assert failed.reason == "1 grade below acceptable: m -> marginal"
    assert verdict(grades, "marginal").passed
    assert verdict([_g("poor")], "marginal").exit_code == 1
    assert verdict([_g("poor")], "poor").passed


def test_parse_grade_lists_the_valid_ones() -> None:
    assert parse_grade(" Marginal ") == "marginal"
    with pytest.raises(ValueError, match=r"'great' is not a grade \(valid: excellent, good, "):
        parse_grade("great")


def test_stop_codes_take_precedence_over_the_verdict() -> None:
    assert run_exit_code(0, 4) == 4
    assert run_exit_code(1, 3) == 3
    assert run_exit_code(0, 130) == 130
    assert run_exit_code(0, 1) == 0  # Locust's own 1 is not a verdict
    assert run_exit_code(1, None) == 1
    assert run_exit_code(0, -9) == 1  # Locust killed: the figures cannot pass
    assert worst([0, 1, 3, 4]) == 4
    assert worst([0, 130, 4]) == 130
    assert worst([0, -9]) == 1  # an unknown code counts as a failure
    assert worst([]) == 0


def metrics(**over: object) -> RunMetrics:
    m = RunMetrics(
        t0=0.0,
        t_end=100.0,
        duration_s=100.0,
        memory=MemoryMetrics(samples=100, growth_mb=125.0),
        optimization=OptimizationMetrics(count=20, failed=2, success_rate_pct=90.0, freed_mb=50.0),
        cycle=Latency(count=100, mean_s=0.196, p50_s=0.2, p95_s=0.9),
        latency=Latency(count=100, mean_s=0.196, p50_s=0.2, p95_s=0.9),
        latency_basis="POST /memory/cycle",
        latency_by_name=[],
        requests=RequestMetrics(requests=400, failures=10, error_rate_pct=2.5),
        leak=LeakMetrics(verdict="leak", slope_mb_min=5.0, graded_slope_mb_min=5.0),
        pressure=PressureMetrics(peak=90.0),
        recovery=RecoveryMetrics(recovered=False),
        cost=CostMetrics(),
        stop=StopInfo("completed", "completed its stage plan"),
        stages=[],
    )
    return dataclasses.replace(m, **over)  # type: ignore[arg-type]


def test_stability_terms(cfg: Config) -> None:
    s = stability(metrics(), cfg)
    pen = {t.name: t.penalty for t in s.terms}
    # errors 4 * 2.5; spread 20 * 0.7 / 1.0; leak 2 * 5.0 (held at the end); pressure 0.5 * 10
    assert pen == pytest.approx(
        {"errors": 10, "latency_spread": 14, "leak": 10, "pressure": 5, "stop": 0}
    )
    assert s.value == pytest.approx(61.0)
    stopped = stability(metrics(stop=StopInfo("safety", "emergency stop")), cfg)
    assert stopped.value == pytest.approx(36.0)


def test_health_terms(cfg: Config) -> None:
    h = health(metrics(), cfg, health_failures=1)
    pen = {t.name: t.penalty for t in h.terms}
    # pressure 90 - 70; growth 20 * 125 / 500; leak 4 * 5.0; 0.1 * 10; 5 * 1; not recovered
    assert pen == pytest.approx(
        {
            "pressure": 20,
            "growth": 5,
            "leak": 20,
            "optimizations": 1,
            "health_checks": 5,
            "recovery": 10,
            "stop": 0,
        }
    )
    assert h.value == pytest.approx(39.0)


def test_scores_are_monotone_and_clipped(cfg: Config) -> None:
    values = [
        stability(metrics(requests=RequestMetrics(requests=100, failures=e, error_rate_pct=e)), cfg)
        for e in (0, 1, 5, 20, 80)
    ]
    got = [v.value for v in values]
    assert all(a is not None and b is not None and a >= b for a, b in itertools.pairwise(got))
    assert values[-1].terms[0].penalty == 40  # the errors term is clipped at its maximum
    worst = metrics(
        requests=RequestMetrics(requests=1, failures=1, error_rate_pct=100.0),
        latency=Latency(count=1, p50_s=0.1, p95_s=9.0),
        leak=LeakMetrics(verdict="leak", slope_mb_min=100.0, graded_slope_mb_min=100.0),
        pressure=PressureMetrics(peak=100.0),
        stop=StopInfo("target_lost", "gone"),
    )
    assert stability(worst, cfg).value == 0.0


def test_a_score_without_inputs_is_none(cfg: Config) -> None:
    empty = metrics(
        memory=MemoryMetrics(),
        optimization=OptimizationMetrics(),
        cycle=Latency(),
        latency=Latency(),
        requests=RequestMetrics(),
        leak=LeakMetrics(),
        pressure=PressureMetrics(),
        recovery=RecoveryMetrics(),
    )
    assert stability(empty, cfg).value is None
    assert health(empty, cfg, None).value is None


def test_business_value_terms(cfg: Config) -> None:
    bv = business_value(metrics(), 61.0, cfg)
    by = {t.name: t for t in bv.terms}
    assert by["memory_optimization"].value_usd == pytest.approx(0.10 * 50)
    assert by["performance"].quantity == pytest.approx((1.0 - 0.196) * 100)
    assert by["performance"].value_usd == pytest.approx(80.4)
    assert by["stability"].value_usd == pytest.approx(0.5 * (61 - 70))  # under the floor: a cost
    assert by["error_reduction"].value_usd == pytest.approx(2.0 * (0.05 * 400 - 10))
    assert by["error_reduction"].inputs == {
        "acceptable_error_rate_pct": 5.0,
        "requests": 400,
        "errors": 10,
    }
    assert bv.total_usd == pytest.approx(5 + 80.4 - 4.5 + 20)


def test_business_value_skips_missing_inputs(cfg: Config) -> None:
    bv = business_value(metrics(cycle=Latency(), optimization=OptimizationMetrics()), None, cfg)
    by = {t.name: t.value_usd for t in bv.terms}
    assert by["memory_optimization"] is None and by["performance"] is None
    assert by["stability"] is None
    assert bv.total_usd == pytest.approx(20.0)
    why = {t.name: t.why_na for t in bv.terms}
    assert why["performance"] == "no management cycles were sent"  # never built from other requests
