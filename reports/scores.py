"""Aggregate: the stability score and system health, each a sum of shown penalty terms.

Both scores start at 100 and lose a penalty per term; each penalty is clipped
to its own maximum and the score to 0..100. Every penalty grows with its input
(never shrinks), so each score is monotone: worse inputs never raise it. A
term whose input is missing costs nothing and is shown as "n/a"; a score with
no input at all is ``None``.

The weights and caps below are fixed, not tunable: a score is a scale that
runs are compared on (``reports compare``, session tables, the stability
threshold in ``performance_thresholds``), and a weight changed in one config
would make two runs' scores mean different things. What a team tunes is the
gate: the stability bounds, ``fail_on`` and the scenario checks. The inputs'
own references (the minimum slope, the reference cycle time, the memory
growth's poor bound) come from the config.

Stability (does the service behave consistently under the load)::

    stability = 100 - errors - latency_spread - leak - pressure - stop
      errors         = min(40, 4 * error rate %)
      latency_spread = min(20, 20 * (p95 - p50 response time) / reference_cycle_time_s)
      leak           = min(20, 2 * slope of the leak the detector holds at the end, MB/min)
      pressure       = min(10, 0.5 * max(0, peak pressure - 80))
      stop           = 25 if a safety stop or a lost target ended the run, else 0

System health (the state the target's memory was left in)::

    health = 100 - pressure - growth - leak - optimizations - health_checks - recovery - stop
      pressure      = min(30, max(0, peak pressure - 70))
      growth        = min(20, 20 * max(0, memory growth MB) / memory_growth.poor bound)
      leak          = min(20, 4 * slope of the leak the detector holds at the end, MB/min)
      optimizations = min(10, 0.1 * (100 - optimization success rate %))
      health_checks = min(10, 5 * health_failed events)
      recovery      = 10 if memory did not recover after the stress, else 0
      stop          = 15 if the target was lost, 10 if a safety stop ended the run, else 0
"""

from __future__ import annotations

from dataclasses import dataclass, field

from memstress.common.config import Config
from memstress.reports.metrics import RunMetrics

STABILITY_FORMULA = (
    "stability = 100 - errors - latency_spread - leak - pressure - stop (clipped 0..100)"
)
HEALTH_FORMULA = (
    "health = 100 - pressure - growth - leak - optimizations - health_checks - recovery - stop"
    " (clipped 0..100)"
)


@dataclass
class ScoreTerm:
    name: str
    rule: str  # how the penalty follows from the input
    input: float | None  # None: the input was not available
    unit: str
    penalty: float
    max_penalty: float


@dataclass
class Score:
    name: str
    formula: str
    value: float | None
    terms: list[ScoreTerm] = field(default_factory=list)


def _clip(x: float, hi: float) -> float:
    return max(0.0, min(hi, x))


def _term(
    name: str, rule: str, value: float | None, unit: str, hi: float, penalty: float
) -> ScoreTerm:
    return ScoreTerm(name, rule, value, unit, 0.0 if value is None else _clip(penalty, hi), hi)


def _total(name: str, formula: str, terms: list[ScoreTerm]) -> Score:
    if all(t.input is None for t in terms):
        return Score(name, formula, None, terms)
    value = max(0.0, min(100.0, 100.0 - sum(t.penalty for t in terms)))
    return Score(name, formula, value, terms)


def _spread(m: RunMetrics) -> float | None:
    c = m.latency
    if c.p95_s is None or c.p50_s is None:
        return None
    return max(0.0, c.p95_s - c.p50_s)


def stability(m: RunMetrics, cfg: Config) -> Score:
    ref = cfg.business_value.reference_cycle_time_s
    err = m.requests.error_rate_pct
    spread = _spread(m)
    slope = m.leak.graded_slope_mb_min
    peak = m.pressure.peak
    stopped = m.stop.kind in ("safety", "target_lost")
    terms = [
        _term("errors", "min(40, 4 * error rate %)", err, "%", 40, 4 * (err or 0)),
        _term(
            "latency_spread",
            f"min(20, 20 * (p95 - p50 response time) / {ref:g} s)",
            spread,
            "s",
            20,
            20 * (spread or 0) / ref,
        ),
        _term(
            "leak",
            "min(20, 2 * slope of the leak held at the end)",
            slope,
            "MB/min",
            20,
            2 * (slope or 0),
        ),
        _term(
            "pressure",
            "min(10, 0.5 * max(0, peak pressure - 80))",
            peak,
            "%",
            10,
            0.5 * ((peak or 0) - 80),
        ),
        _term(
            "stop",
            "25 if a safety stop or a lost target ended the run",
            1.0 if stopped else 0.0,
            "",
            25,
            25.0 if stopped else 0.0,
        ),
    ]
    # The stop term always has an input; it alone does not make a score.
    if all(t.input is None for t in terms[:-1]):
        return Score("stability", STABILITY_FORMULA, None, terms)
    return _total("stability", STABILITY_FORMULA, terms)


def health(m: RunMetrics, cfg: Config, health_failures: int | None) -> Score:
    poor_growth = cfg.performance_thresholds.memory_growth.poor
    peak = m.pressure.peak
    growth = m.memory.growth_mb
    slope = m.leak.graded_slope_mb_min
    success = m.optimization.success_rate_pct
    rec = m.recovery.recovered
    stop_pen = 15.0 if m.stop.kind == "target_lost" else 10.0 if m.stop.kind == "safety" else 0.0
    terms = [
        _term("pressure", "min(30, max(0, peak pressure - 70))", peak, "%", 30, (peak or 0) - 70),
        _term(
            "growth",
            f"min(20, 20 * max(0, memory growth) / {poor_growth:g} MB)",
            growth,
            "MB",
            20,
            20 * max(0.0, growth or 0) / poor_growth,
        ),
        _term(
            "leak",
            "min(20, 4 * slope of the leak held at the end)",
            slope,
            "MB/min",
            20,
            4 * (slope or 0),
        ),
        _term(
            "optimizations",
            "min(10, 0.1 * (100 - optimization success rate %))",
            success,
            "%",
            10,
            0.1 * (100 - (success if success is not None else 100)),
        ),
        _term(
            "health_checks",
            "min(10, 5 * health_failed events)",
            None if health_failures is None else float(health_failures),
            "",
            10,
            5.0 * (health_failures or 0),
        ),
        _term(
            "recovery",
            "10 if memory did not recover after the stress",
            None if rec is None else (0.0 if rec else 1.0),
            "",
            10,
            10.0 if rec is False else 0.0,
        ),
        _term(
            "stop",
            "15 if the target was lost, 10 if a safety stop ended the run",
            stop_pen,
            "",
            15,
            stop_pen,
        ),
    ]
    if all(t.input is None for t in terms[:-1]):
        return Score("health", HEALTH_FORMULA, None, terms)
    return _total("health", HEALTH_FORMULA, terms)
