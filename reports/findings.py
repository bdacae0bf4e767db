"""Aggregate: the system limits a run found and recommendations, as rules over the metrics.

Each rule looks at computed figures only and returns plain text; the renderers
print the lists as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

from memstress.common.config import GRADES, Config
from memstress.reports.fmt import duration, num, with_unit
from memstress.reports.grading import Grade, grade_all
from memstress.reports.metrics import RunMetrics, StageMetrics
from memstress.reports.scores import Score


@dataclass
class Limit:
    name: str
    value: str
    detail: str = ""


def stage_grades(st: StageMetrics, cfg: Config) -> list[Grade]:
    """A stage's cycle time and error rate against the run thresholds."""
    grades = grade_all(
        cfg,
        {"response_time": st.cycle.mean_s, "error_rate": st.error_rate_pct},
        missing={"response_time": "no cycle requests in the stage", "error_rate": "no requests"},
    )
    return [g for g in grades if g.metric in ("response_time", "error_rate")]


def _stage_ok(grades: list[Grade], fail_on: str) -> bool | None:
    ranks = [g.rank for g in grades if g.rank is not None]
    if not ranks:
        return None
    return max(ranks) <= GRADES.index(fail_on)


def limits(m: RunMetrics, per_stage: list[list[Grade]], fail_on: str) -> list[Limit]:
    out: list[Limit] = []
    mem = m.memory
    if mem.peak_mb is not None:
        of_budget = (
            f" ({num(mem.peak_pct_of_budget)}% of the {num(mem.budget_mb)} MB budget)"
            if mem.peak_pct_of_budget is not None
            else ""
        )
        out.append(
            Limit("peak memory", f"{num(mem.peak_mb)} MB", f"highest RSS sampled{of_budget}")
        )
    p = m.pressure
    if p.peak is not None:
        strat = f"; strongest strategy: {p.max_strategy}" if p.max_strategy else ""
        out.append(Limit("peak pressure", f"{num(p.peak)}%", f"source: {p.source}{strat}"))
    if m.requests.shed:
        first = m.requests.first_shed_s
        when = f"first shed at {duration(first)} into the run" if first is not None else ""
        out.append(Limit("load shedding", f"{m.requests.shed} shed", when))
    # Recovery and cleanup stages are not load steps: they do not set limits.
    loaded = [(st, g) for st, g in zip(m.stages, per_stage, strict=True) if st.phase != "recovery"]
    ok_stages = [
        (st, g) for st, g in zip(m.stages, per_stage, strict=True) if _stage_ok(g, fail_on)
    ]
    bad_stages = [
        (st, g) for st, g in zip(m.stages, per_stage, strict=True) if _stage_ok(g, fail_on) is False
    ]
    if ok_stages:
        best = max(ok_stages, key=lambda x: (x[0].users or 0, x[0].rps or 0, x[0].index))[0]
        out.append(
            Limit(
                "highest stage within thresholds",
                f"{best.name} ({num(best.users)} users)",
                f"{num(best.rps)} requests/s; cycle and error grades {fail_on} or better",
            )
        )
    if bad_stages:
        st, g = bad_stages[0]
        worst = [x.message for x in g if x.rank is not None and x.rank > GRADES.index(fail_on)]
        out.append(
            Limit(
                "first stage beyond thresholds",
                f"{st.name} ({num(st.users)} users)",
                "; ".join(worst),
            )
        )
    rps = [(st.rps, st) for st, _ in loaded if st.rps is not None]
    if rps:
        top, st = max(rps, key=lambda x: x[0])
        out.append(
            Limit(
                "highest throughput",
                f"{num(top)} requests/s",
                f"in stage {st.name} ({num(st.users)} users)",
            )
        )
    elif m.requests.rps is not None:
        out.append(Limit("throughput", f"{num(m.requests.rps)} requests/s", "over the whole run"))
    if m.stop.kind in ("safety", "target_lost"):
        out.append(Limit("run stopped", m.stop.kind.replace("_", " "), m.stop.reason))
    if p.cgroup_events:
        out.append(Limit("cgroup memory events", p.cgroup_events, "last value sampled"))
    cpu = m.workers.get("cpu_percent_max")
    if cpu is not None:
        out.append(
            Limit(
                "load generator CPU",
                f"{num(cpu)}%",
                f"highest of {m.workers.get('workers')} worker(s)",
            )
        )
    return out


def recommendations(
    m: RunMetrics,
    grades: list[Grade],
    stability: Score,
    cfg: Config,
    fail_on: str,
    missing: list[str],
) -> list[str]:
    out: list[str] = []
    limit = GRADES.index(fail_on)
    by = {g.metric: g for g in grades}
    if missing:
        out.append(
            "The run is partial (" + "; ".join(missing) + "): rerun it to a normal end before "
            "trusting the figures that depend on these files."
        )
    err = by.get("error_rate")
    if err and err.rank is not None and err.rank > GRADES.index("good"):
        top = m.requests.top_failures[0] if m.requests.top_failures else None
        hint = (
            f" The most frequent: {top['name']}: {top['error']} ({top['occurrences']}x)."
            if top
            else ""
        )
        out.append(f"Reduce errors: {err.message}.{hint}")
    rt = by.get("response_time")
    if rt and rt.rank is not None and rt.rank > GRADES.index("good"):
        if m.cycle.count:
            out.append(
                f"Speed up the memory-management cycle: {rt.message}; profile the optimize path "
                "(gc.collect, malloc_trim) and the tiers it walks."
            )
        else:
            out.append(f"Response times are slow: {rt.message}.")
    c = m.latency
    what = "Cycle" if m.cycle.count else "Response"
    if c.p50_s and c.p99_s and c.p99_s > 5 * c.p50_s and c.p99_s > 0.1:
        out.append(
            f"{what} latency has a long tail (p99 {with_unit(c.p99_s, 's')} vs p50 "
            f"{with_unit(c.p50_s, 's')}): look for stop-the-world work in the slow requests."
        )
    lk = m.leak
    injected = lk.injected_start_s is not None
    if lk.verdict == "leak" and not injected:
        out.append(
            f"The target leaks: {lk.headline()}, and the detector still held it at the end of "
            "the run: look for unbounded caches or retained references."
        )
    if injected and lk.detection_delay_s is None and lk.verdict != "not judged":
        out.append(
            "A leak was injected but the online detector never flagged it: lower "
            "monitor.leak_detection.min_rise_mb, creep_mb_per_min or min_slope_mb_per_min."
        )
    if injected and lk.target_flagged is False:
        out.append(
            "The target never set leak_suspected while a leak was injected: check its accounting."
        )
    if lk.false_alarms and injected:
        out.append(
            f"{lk.false_alarms} leak alarm(s) before the scenario injected its leak: "
            "raise warmup_s, min_rise_mb or creep_mb_per_min to cut false alarms."
        )
    if m.recovery.recovered is False:
        out.append(
            f"Memory did not come back within {num(m.recovery.tolerance_pct)}% of the pre-stress "
            f"level ({num(m.recovery.pre_stress_mb)} MB) after the stress: check that released "
            "objects are freed and returned to the OS (malloc_trim)."
        )
    if m.memory.returned_to_start is False and m.recovery.recovered is not False:
        out.append(
            f"End memory is {num(m.memory.end_vs_start_pct)}% above start memory: the run's data "
            "may not have been cleaned up, or the target keeps it."
        )
    if m.pressure.peak is not None and m.pressure.peak >= 95:
        out.append(
            f"Pressure reached {num(m.pressure.peak)}% "
            f"(strategy {m.pressure.max_strategy or 'n/a'}): "
            "raise the memory budget or lower the cache soft limits."
        )
    o = m.optimization
    if o.success_rate_pct is not None and o.success_rate_pct < 95:
        out.append(f"{o.failed} of {o.count} optimizations failed: read the target's log for why.")
    if o.count == 0 and m.memory.samples:
        if m.cycle.count:
            out.append(
                f"No optimization ran in {m.cycle.count} management cycles: pressure never "
                "called for one, so this run says nothing about how well the target frees memory."
            )
        else:
            out.append(
                "No optimization ran and no cycle was requested: check that the cycle and "
                "optimize endpoints are exercised."
            )
    if m.requests.shed:
        out.append(
            f"{m.requests.shed} requests were shed ({num(m.requests.shed_pct)}% of requests): "
            "expected under overload; if not, raise service.optimization_queue_size or the budget."
        )
    cpu = m.workers.get("cpu_percent_max")
    if cpu is not None and cpu >= 90:
        out.append(
            f"A load generator reached {num(cpu)}% CPU: the load may be capped by Locust itself; "
            "use more --processes."
        )
    if m.stop.kind in ("safety", "target_lost"):
        out.append(
            f"The run was cut short ({m.stop.reason}): its figures describe the run up to the stop."
        )
    sg = by.get("stability_score")
    if stability.value is not None and sg and sg.rank is not None and sg.rank > limit:
        worst = max(stability.terms, key=lambda t: t.penalty)
        out.append(
            f"Stability {num(stability.value)}: its largest penalty is {worst.name} "
            f"({num(worst.penalty)} points)."
        )
    if not out:
        out.append("No action needed: every metric is within its thresholds.")
    return out
