"""Each scenario's expectations as checks: a predicate over the run's figures.

A scenario declares what it expects (``scenarios.spec.Expect``: an id and a
text); this module holds what each id measures (:data:`CATALOGUE`). The config's
``checks`` section gives each scenario's bounds and says which checks are
required. A check gives ``pass``, ``fail`` or ``not judged`` (the run lacks the
figures it needs), always with a message naming its numbers. A failed required
check fails the verdict (``reports.grading.verdict``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from memstress.common.config import Config
from memstress.reports.collect import RunData
from memstress.reports.grading import CheckResult
from memstress.reports.metrics import MB, RunMetrics
from memstress.reports.metrics.base import adapter_name, adapter_requests, col
from memstress.reports.metrics.latency import entries
from memstress.reports.metrics.pressure import pressure_series

PASS, FAIL, NOT_JUDGED = "pass", "fail", "not judged"

Outcome = tuple[str, str]


@dataclass(frozen=True)
class Inputs:
    """What a check reads: the run's metrics, its raw data, and its stability score."""

    m: RunMetrics
    data: RunData
    stability: float | None


Evaluator = Callable[[Inputs, "float | None"], Outcome]


def _bounded(
    value: float | None,
    bound: float | None,
    what: str,
    unit: str,
    *,
    below: bool,
    inclusive: bool = False,
) -> Outcome:
    """pass when ``value`` is below (or above) ``bound``; the message names both."""
    if bound is None:
        return NOT_JUDGED, f"{what}: no bound configured"
    if value is None:
        return NOT_JUDGED, f"{what}: n/a in this run"
    if below:
        ok = value <= bound if inclusive else value < bound
        rel = ("<=" if inclusive else "<") if ok else (">" if inclusive else ">=")
    else:
        ok = value >= bound if inclusive else value > bound
        rel = (">=" if inclusive else ">") if ok else ("<" if inclusive else "<=")
    return (PASS if ok else FAIL), f"{what} {value:.3g}{unit} {rel} {bound:g}{unit}"


def _memory_growth(x: Inputs, b: float | None) -> Outcome:
    m = x.m
    return _bounded(m.memory.growth_mb, b, "memory growth", " MB", below=True)


def _cycle_time(x: Inputs, b: float | None) -> Outcome:
    m = x.m
    if not m.cycle.count:
        return NOT_JUDGED, "no management cycles were sent"
    return _bounded(m.cycle.mean_s, b, "mean cycle time", " s", below=True)


def _cycle_p95(x: Inputs, b: float | None) -> Outcome:
    m = x.m
    if not m.cycle.count:
        return NOT_JUDGED, "no management cycles were sent"
    return _bounded(m.cycle.p95_s, b, "cycle p95", " s", below=True)


def _stability(x: Inputs, b: float | None) -> Outcome:
    return _bounded(x.stability, b, "stability score", "", below=False)


def _error_rate(x: Inputs, b: float | None) -> Outcome:
    m = x.m
    return _bounded(m.requests.error_rate_pct, b, "error rate", " %", below=True)


def _cycles_every_stage(x: Inputs, _b: float | None) -> Outcome:
    m = x.m
    loaded = [s for s in m.stages if s.phase != "recovery"]
    if not loaded or all(s.requests is None for s in loaded):
        return NOT_JUDGED, "no per-stage request counts (locust_stats_history.csv)"
    without = [s.name for s in loaded if not s.cycle.count]
    if len(without) == len(loaded) and _skipped(x, "cycle"):
        return NOT_JUDGED, "the target's adapter has no management cycle (capability_skipped)"
    if without:
        return FAIL, "no management cycle in stage(s) " + ", ".join(without)
    counts = ", ".join(f"{s.name} {s.cycle.count}" for s in loaded)
    return PASS, f"cycles in every loaded stage ({counts})"


def _skipped(x: Inputs, capability: str) -> bool:
    """Whether the run's events say the adapter lacked ``capability`` and skipped it."""
    ev = x.data.events
    if ev.empty or "kind" not in ev:
        return False
    detail = ev.loc[ev["kind"] == "capability_skipped", "detail"].astype(str)
    return bool(detail.str.startswith(f"{capability}:").any())


def _leak_within(x: Inputs, b: float | None) -> Outcome:
    m = x.m
    lk = m.leak
    if lk.injected_start_s is None:
        return NOT_JUDGED, "no stage injects a leak"
    if lk.verdict == "not judged" and not lk.episodes:
        return NOT_JUDGED, f"the detector did not judge the run ({lk.reason})"
    if lk.detection_delay_s is None:
        return FAIL, f"the leak injected at {lk.injected_start_s:.0f} s was never detected"
    if b is None:
        return NOT_JUDGED, "no bound configured"
    ok = lk.detection_delay_s <= b
    return (PASS if ok else FAIL), (
        f"detected {lk.detection_delay_s:.0f} s after injection ({'<=' if ok else '>'} {b:g} s)"
    )


def _target_flagged(x: Inputs, _b: float | None) -> Outcome:
    m = x.m
    lk = m.leak
    if lk.target_flagged is None:
        return NOT_JUDGED, "the target reports no leak_suspected"
    un = "n/a" if lk.unaccounted_peak_mb is None else f"{lk.unaccounted_peak_mb:.1f} MB"
    if lk.target_flagged:
        return PASS, f"the target set leak_suspected (unaccounted peak {un})"
    return FAIL, f"the target never set leak_suspected (unaccounted peak {un})"


def _stage_level(d: RunData, start_s: float, end_s: float, t0: float, last: bool) -> float | None:
    t = col(d.samples, "time").to_numpy(dtype=float) - t0
    rss = col(d.samples, "rss_bytes").to_numpy(dtype=float) / MB
    sel = (t >= start_s) & (t < end_s) & np.isfinite(rss)
    v = rss[sel]
    if not len(v):
        return None
    k = max(1, min(5, len(v) // 2))
    return float(np.median(v[-k:] if last else v[:k]))


def _memory_back_after_reset(x: Inputs, b: float | None) -> Outcome:
    m, d = x.m, x.data
    leak = next((s for s in m.stages if s.leak), None)
    if leak is None:
        return NOT_JUDGED, "no stage injects a leak"
    after = [s for s in m.stages if s.start_s >= leak.end_s and s.phase == "recovery"]
    if not after:
        return NOT_JUDGED, "no recovery stage after the leak"
    before = _stage_level(d, leak.start_s, leak.end_s, m.t0, last=False)
    end = _stage_level(d, after[0].start_s, after[-1].end_s, m.t0, last=True)
    if before is None or end is None or b is None:
        return NOT_JUDGED, "no memory samples around the leak"
    limit = before * (1 + b / 100.0)
    ok = end <= limit
    return (PASS if ok else FAIL), (
        f"memory {end:.1f} MB after the reset vs {before:.1f} MB before the leak "
        f"({'<=' if ok else '>'} {limit:.1f} MB, +{b:g} %)"
    )


def _strategy(name: str) -> Evaluator:
    rank = {"normal": 0, "aggressive": 1, "emergency": 2}

    def check(x: Inputs, _b: float | None) -> Outcome:
        m = x.m
        top = m.pressure.max_strategy
        if top is None:
            return NOT_JUDGED, "the target reports no strategy" + _not_ours(x)
        ok = rank.get(top, -1) >= rank[name]
        return (
            PASS if ok else FAIL
        ), f"strongest strategy {top} ({'reached' if ok else 'not'} {name})"

    return check


def _pressure_held(x: Inputs, b: float | None) -> Outcome:
    m, d = x.m, x.data
    holds = [s for s in m.stages if "pressure_target" in s.params and s.phase == "stress"]
    holds = [s for s in holds if s.params.get("hold_after_s", 1) == 0] or holds[-1:]
    if not holds:
        return NOT_JUDGED, "no stage holds a pressure target"
    p, _ = pressure_series(d)
    if not len(p):
        return NOT_JUDGED, "no pressure figures"
    t = col(d.samples, "time").to_numpy(dtype=float) - m.t0
    pv = p.to_numpy(dtype=float)
    inside = total = 0
    for s in holds:
        target = float(s.params["pressure_target"])
        tol = float(s.params.get("tolerance", 3))
        sel = (t >= s.start_s) & (t < s.end_s) & np.isfinite(pv)
        v = pv[sel]
        band = np.abs(v - target) <= tol
        first = int(np.argmax(band)) if band.any() else len(v)  # the ramp into the band
        inside += int(band[first:].sum())
        total += len(v) - first if band.any() else len(v)
    if not total:
        return NOT_JUDGED, "no pressure samples in the hold"
    share = 100.0 * inside / total
    return _bounded(share, b, "share of the hold within the band", " %", below=False)


def _optimization_after_spike(x: Inputs, b: float | None) -> Outcome:
    m, d = x.m, x.data
    t = col(d.samples, "time").to_numpy(dtype=float)
    ballast = col(d.samples, "ballast_bytes").to_numpy(dtype=float)
    opt = col(d.samples, "optimizations_total").to_numpy(dtype=float)
    spikes_stage = [s for s in m.stages if float(s.params.get("spike_bytes", 0) or 0) > 0]
    if not spikes_stage or not np.isfinite(ballast).any() or not np.isfinite(opt).any():
        return NOT_JUDGED, "no spikes or no optimization counter"
    size = float(spikes_stage[0].params["spike_bytes"])
    rises = np.nonzero(np.diff(np.nan_to_num(ballast)) >= size / 2)[0] + 1
    if not len(rises):
        return NOT_JUDGED, "no spike was seen in ballast_bytes"
    late = []
    delays = []
    for i in rises:
        before = opt[i - 1] if np.isfinite(opt[i - 1]) else np.nanmin(opt[:i] if i else opt)
        later = np.nonzero(np.isfinite(opt[i:]) & (opt[i:] > before))[0]
        delay = float(t[i + later[0]] - t[i]) if len(later) else None
        if delay is None or (b is not None and delay > b):
            late.append(f"{t[i] - m.t0:.0f} s")
        if delay is not None:
            delays.append(delay)
    worst = f"{max(delays):.1f} s" if delays else "n/a"
    if late:
        return FAIL, f"{len(late)} of {len(rises)} spikes had no optimization within {b:g} s " + (
            f"(at {', '.join(late[:5])})"
        )
    return PASS, f"each of {len(rises)} spikes was followed by an optimization (worst {worst})"


def _target_stays_up(x: Inputs, _b: float | None) -> Outcome:
    m = x.m
    if m.stop.kind == "target_lost":
        return FAIL, f"the target was lost: {m.stop.reason}"
    if m.stop.kind in ("unknown", "crashed"):
        return NOT_JUDGED, f"the run did not record its end ({m.stop.reason})"
    return PASS, "the target answered until the end of the run"


def _search_p95(x: Inputs, b: float | None) -> Outcome:
    m = x.m
    named = adapter_requests(x.data).get("search")  # the adapter's name for a search
    search = [
        n
        for n in m.latency_by_name
        if (n.name == named if named else "search" in n.name.lower()) and n.latency.count
    ]
    if not search:
        return NOT_JUDGED, "no search requests" + (f" ({named})" if named else "")
    worst = max(search, key=lambda n: n.latency.p95_s or 0.0)
    label = (
        worst.name if worst.name.startswith(f"{worst.method} ") else f"{worst.method} {worst.name}"
    )
    return _bounded(worst.latency.p95_s, b, f"{label} p95", " s", below=True)


def _memory_per_vector(x: Inputs, b: float | None) -> Outcome:
    m = x.m
    v = m.vectors
    if m.cost.per_vector_kb is None and v.rss_per_vector_kb is not None:
        return NOT_JUDGED, (
            "the target reports no vector tier bytes to judge; RSS growth per stored vector "
            f"{v.rss_per_vector_kb:.3g} KB is reported, not judged (it holds the server's "
            "own warm-up too)"
        )
    return _bounded(m.cost.per_vector_kb, b, "memory per stored vector", " KB", below=True)


def _agent_spread(_x: Inputs, _b: float | None) -> Outcome:
    return NOT_JUDGED, "requests are named per operation, not per agent: no per-agent latency"


def _shed_not_errors(x: Inputs, _b: float | None) -> Outcome:
    m = x.m
    r = m.requests
    if r.requests is None:
        return NOT_JUDGED, "no request counts"
    if not r.shed:
        return FAIL, "nothing was shed: the overload never overflowed the queue"
    return PASS, f"{r.shed} answers shed (429/503, counted apart), {r.failures or 0} errors"


def _not_ours(x: Inputs) -> str:
    """Why a figure of the bundled service is missing on another adapter's target ('' on
    the bundled service, where a missing figure is its own fault)."""
    name = adapter_name(x.data)
    if name in (None, "memstress"):
        return ""
    if name == "redis":
        return (
            " (the redis adapter: Redis's maxmemory policy is its memory manager; "
            "strategies are the bundled service's)"
        )
    return f" (the {name} adapter: strategies are the bundled service's)"


def _writes_shed(x: Inputs, b: float | None) -> Outcome:
    """As ``_shed_not_errors`` on the bundled service. On another adapter's target only the
    agents' writes count (its ``remember`` requests: a refused ballast write is the
    controller's own), and none shed is not judged: 503 + Retry-After at emergency is the
    bundled service's answer (Redis sheds a write only with OOM under noeviction, and
    evicts under an LRU policy)."""
    r = x.m.requests
    name = adapter_name(x.data)
    if r.requests is None or name in (None, "memstress"):
        return _shed_not_errors(x, b)
    writes = adapter_requests(x.data).get("remember")
    shed = sum(int(e.get("num_requests") or 0) for e in entries(x.data, writes, shed=True))
    if writes and shed:
        return PASS, f"{shed} agent writes ({writes}) shed, counted apart; {r.failures or 0} errors"
    others = (r.shed or 0) - shed
    evicted = col(x.data.samples, "redis_evicted_keys").dropna()
    seen = f"; {others} other answers shed (the pressure's own writes)" if others else ""
    if len(evicted):
        seen += f"; Redis evicted {int(evicted.max() - evicted.min())} keys (evicted_keys)"
    return NOT_JUDGED, (
        f"no agent write was shed, {r.failures or 0} errors: shedding writes with 503 + "
        f"Retry-After is the bundled service's answer to emergency; the {name} adapter's "
        f"target sheds a write only when it refuses one (Redis: OOM at maxmemory under "
        f"noeviction){seen}"
    )


def _pressure_back(x: Inputs, b: float | None) -> Outcome:
    m, d = x.m, x.data
    held = [s for s in m.stages if "pressure_target" in s.params]
    if not held:
        return NOT_JUDGED, "no stage set a pressure target"
    release = held[-1].end_s
    p, _ = pressure_series(d)
    if not len(p):
        return NOT_JUDGED, "no pressure figures"
    t = col(d.samples, "time").to_numpy(dtype=float) - m.t0
    pv = p.to_numpy(dtype=float)
    sel = (t >= release) & np.isfinite(pv)
    if not sel.any():
        return NOT_JUDGED, "no pressure samples after the release"
    under = np.nonzero(pv[sel] < 90)[0]
    if not len(under):
        watched = t[sel][-1] - release
        return FAIL, f"pressure stayed at or above 90 % for {watched:.0f} s after the release"
    delay = float(t[sel][under[0]] - release)
    return _bounded(delay, b, "pressure back under 90 % after", " s", below=True, inclusive=True)


def _recovery_time(x: Inputs, b: float | None) -> Outcome:
    m = x.m
    r = m.recovery
    if not r.measured:
        return NOT_JUDGED, f"recovery {r.note or 'not measured'}"
    if r.recovered is False:
        return FAIL, f"memory did not come back within {r.tolerance_pct:g} % ({r.note})"
    return _bounded(r.recovery_time_s, b, "recovery time", " s", below=True, inclusive=True)


def _late_slope(x: Inputs, b: float | None) -> Outcome:
    d = x.data
    from memstress.reports.metrics.leak import judged_series, stage_slope

    t, y = judged_series(d.samples)
    if len(t) < 10:
        return NOT_JUDGED, "too few memory samples"
    half = t >= t[0] + (t[-1] - t[0]) / 2
    window = max(1.0, (t[-1] - t[0]) / 60)
    slope = stage_slope(t[half], y[half] / MB, window, 6)
    return _bounded(slope, b, "memory slope over the last half", " MB/min", below=True)


@dataclass(frozen=True)
class CheckKind:
    """What one check id measures."""

    measures: str
    evaluate: Evaluator


CATALOGUE: dict[str, CheckKind] = {
    "memory_growth_max_mb": CheckKind("end minus start memory (MB)", _memory_growth),
    "cycle_time_max_s": CheckKind("mean management-cycle response time (s)", _cycle_time),
    "cycle_p95_max_s": CheckKind("p95 management-cycle response time (s)", _cycle_p95),
    "stability_min": CheckKind("stability score (0-100)", _stability),
    "error_rate_max_pct": CheckKind("errors / requests (%), shed apart", _error_rate),
    "cycles_every_stage": CheckKind("every non-recovery stage sent cycles", _cycles_every_stage),
    "leak_detected_within_s": CheckKind(
        "delay from the first injects: leak stage to the first detection (s)", _leak_within
    ),
    "target_flagged": CheckKind("the target's own leak_suspected was set", _target_flagged),
    "memory_back_after_reset_pct": CheckKind(
        "memory after the reset vs at the start of the leak stage (%)", _memory_back_after_reset
    ),
    "pressure_held_pct": CheckKind(
        "share of hold samples within the stage's pressure target ± tolerance (%)",
        _pressure_held,
    ),
    "aggressive_reached": CheckKind(
        "the target's strategy reached aggressive", _strategy("aggressive")
    ),
    "emergency_reached": CheckKind(
        "the target's strategy reached emergency", _strategy("emergency")
    ),
    "optimization_after_spike_s": CheckKind(
        "delay from each ballast spike to the next optimization (s)", _optimization_after_spike
    ),
    "target_stays_up": CheckKind("no target_lost stop", _target_stays_up),
    "search_p95_max_s": CheckKind("p95 of the slowest search request name (s)", _search_p95),
    "memory_per_vector_max_kb": CheckKind(
        "vector tier bytes per stored item (KB)", _memory_per_vector
    ),
    "agent_latency_spread_max": CheckKind(
        "slowest agent's mean response time / fastest's", _agent_spread
    ),
    "overflow_shed_not_errors": CheckKind(
        "overflow answered 429/503 (shed, counted apart)", _shed_not_errors
    ),
    "writes_shed": CheckKind("writes answered 503 + Retry-After (shed)", _writes_shed),
    "pressure_under_90_within_s": CheckKind(
        "delay from the end of the last pressure stage to pressure < 90 (s)", _pressure_back
    ),
    "recovery_time_max_s": CheckKind("recovery time to the pre-stress level (s)", _recovery_time),
    "late_slope_max_mb_min": CheckKind(
        "Theil-Sen slope of the last half's lower envelope (MB/min)", _late_slope
    ),
}


def run_checks(
    m: RunMetrics, data: RunData, cfg: Config, scenario: str | None, stability: float | None
) -> list[CheckResult]:
    """Judge the scenario's declared expectations; an unknown scenario has none."""
    if not scenario:
        return []
    from memstress.scenarios.registry import get_scenario  # the registry imports every scenario

    try:
        sc = get_scenario(scenario)
    except (KeyError, ValueError):
        return []
    out = []
    for e in sc.expected:
        setting = e.setting(cfg, sc.name)
        kind = CATALOGUE.get(e.id)
        text = e.describe(setting.bound)
        if not e.id:
            status, msg = NOT_JUDGED, "described in words only (give it a check id to judge it)"
        elif kind is None:
            status, msg = NOT_JUDGED, f"no check named {e.id!r} in reports/checks.py"
        else:
            try:
                status, msg = kind.evaluate(Inputs(m, data, stability), setting.bound)
            except (KeyError, ValueError, TypeError, IndexError) as exc:
                status, msg = NOT_JUDGED, f"could not be judged ({type(exc).__name__}: {exc})"
        out.append(CheckResult(e.id, text, setting.required, setting.bound, status, msg))
    return out
