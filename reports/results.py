"""The results document: everything aggregated about a run, as versioned JSON.

``stress_test_results.json`` is written first; the Markdown report is built
from it alone, so a report can be rebuilt without a new run. Its layout is
:data:`SCHEMA_PATH` (JSON Schema 2020-12). ``schema_version`` changes only when
a reader would misread an older document.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from memstress.common.config import GRADES, Config
from memstress.reports.business import BusinessValue, business_value
from memstress.reports.checks import run_checks
from memstress.reports.collect import ReportInputError, RunData
from memstress.reports.degraded import as_json, degraded_sources
from memstress.reports.findings import Limit, limits, recommendations, stage_grades
from memstress.reports.grading import (
    CheckResult,
    Grade,
    Verdict,
    grade_all,
    leak_grade,
    run_exit_code,
    verdict,
)
from memstress.reports.leak_sites import where_memory_went
from memstress.reports.metrics import DEFINITIONS, RunMetrics, compute, health_failures
from memstress.reports.metrics.base import event_field
from memstress.reports.scores import Score, health, stability

SCHEMA_VERSION = 2
"""2: one leak verdict from the online detector (``metrics.leak``), a graded ``leak``
metric, ``checks``, ``metrics.latency`` (what response time is graded on) and
``metrics.latency_by_name``; the whole-run Kendall trend is gone."""
RESULTS_NAME = "stress_test_results.json"
REPORT_NAME = "stress_test_report.md"
CHARTS_DIR = "stress_test_charts"
SCHEMA_PATH = Path(__file__).with_name("results.schema.json")


class ResultsError(ReportInputError):
    """A results file that cannot be used, as one line naming the file and what is valid."""


@dataclass
class Analysis:
    """One run, aggregated: what the results document is made of."""

    data: RunData
    metrics: RunMetrics
    latency_basis: str
    stability: Score
    health: Score
    grades: list[Grade]
    checks: list[CheckResult]
    stage_grades: list[list[Grade]]
    verdict: Verdict
    business: BusinessValue
    limits: list[Limit]
    recommendations: list[str]
    partial: bool
    interrupted: bool
    missing: list[str]
    unavailable: list[str]
    exit_code: int


def aggregate(data: RunData, cfg: Config, fail_on: str | None = None) -> Analysis:
    """Aggregate a run: metrics, scores, grades, checks, verdict, business value, findings."""
    fail = fail_on or cfg.fail_on
    m = compute(data, cfg)
    labels = {"response_time": f"mean response time ({m.latency_basis})"}
    missing_why = {
        "response_time": "no requests",
        "stability_score": "no error or memory data",
        "memory_growth": "no memory samples",
        "error_rate": "no requests",
        "leak": m.leak.graded_note or "not judged",
    }
    unavailable: list[str] = []
    if data.kind == "locust":
        unavailable.append(
            "memory samples, stages, events and run_meta.json: a Locust CSV export has none, "
            "so the memory, leak, pressure and recovery figures are unavailable"
        )
        missing_why["memory_growth"] = "no memory data in a Locust CSV export"
        missing_why["leak"] = "no memory data in a Locust CSV export"
    st = stability(m, cfg)
    he = health(m, cfg, health_failures(data))
    grades = grade_all(
        cfg,
        {
            "response_time": m.latency.mean_s,
            "stability_score": st.value,
            "memory_growth": m.memory.growth_mb,
            "error_rate": m.requests.error_rate_pct,
            "leak": m.leak.graded_slope_mb_min,
        },
        labels=labels,
        missing=missing_why,
    )
    headline = m.leak.headline() if data.kind == "run" else ""
    grades = [leak_grade(g, headline, fail) if g.metric == "leak" else g for g in grades]
    checks = run_checks(m, data, cfg, scenario_of(data), st.value)
    v = verdict(grades, fail, checks, headline)
    per_stage = [stage_grades(s, cfg) for s in m.stages]
    missing = data.missing
    meta = data.meta or {}
    interrupted = bool(meta.get("interrupted")) or m.stop.kind == "interrupted"
    cut_short = m.stop.kind in ("unknown", "crashed")
    partial = bool(missing) or interrupted or (data.kind == "run" and cut_short)
    return Analysis(
        data=data,
        metrics=m,
        latency_basis=m.latency_basis,
        stability=st,
        health=he,
        grades=grades,
        checks=checks,
        stage_grades=per_stage,
        verdict=v,
        business=business_value(m, st.value, cfg),
        limits=limits(m, per_stage, fail),
        recommendations=recommendations(m, grades, st, cfg, fail, missing),
        partial=partial,
        interrupted=interrupted,
        missing=missing,
        unavailable=unavailable,
        exit_code=run_exit_code(v.exit_code, m.stop.meta_exit_code),
    )


def scenario_of(data: RunData) -> str | None:
    """The run's scenario: run_meta.json's, else the run_start event's (a plain Locust run)."""
    named = (data.meta or {}).get("scenario")
    if isinstance(named, str) and named:
        return named
    found: str | None = event_field(data, "run_start", "scenario", str)
    return found


def plain(x: Any) -> Any:
    """JSON-ready: dataclasses to dicts, numpy to Python, NaN/inf to None, paths to str."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: plain(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if isinstance(x, dict):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [plain(v) for v in x]
    if isinstance(x, bool | np.bool_):
        return bool(x)
    if isinstance(x, int | np.integer):
        return int(x)
    if isinstance(x, float | np.floating):
        f = float(x)
        return f if math.isfinite(f) else None
    if isinstance(x, Path):
        return str(x)
    return x


def _config_summary(cfg: Config, fail_on: str) -> dict[str, Any]:
    th = {}
    for name, t in cfg.performance_thresholds.items():
        th[name] = {
            **plain(t),
            "higher_is_better": name in cfg.performance_thresholds.HIGHER_IS_BETTER,
        }
    return {
        "source": cfg.source,
        "fail_on": fail_on,
        "config_fail_on": cfg.fail_on,
        "performance_thresholds": th,
        "business_value": plain(cfg.business_value),
        "recovery_tolerance_pct": cfg.scenarios.recovery_tolerance_pct,
        "leak_detection": plain(cfg.monitor.leak_detection),
        "compare": plain(cfg.compare),
    }


def _run_section(data: RunData) -> dict[str, Any]:
    meta = dict(data.meta or {})
    if data.kind == "locust":
        meta.setdefault("scenario", "locust export")
    else:
        # run folders are named <UTC timestamp>_<scenario>[-n]
        stamp, _, rest = data.source.name.partition("_")
        named = rest.rsplit("-", 1)[0] if rest[-1:].isdigit() and "-" in rest else rest
        meta.setdefault("scenario", named if stamp.endswith("Z") and named else "unknown")
    meta.setdefault("run_id", data.source.name)
    return plain(meta)


def to_results(a: Analysis, cfg: Config) -> dict[str, Any]:
    """The results document of one run."""
    m = a.metrics
    metrics = plain(m)
    stages = metrics.pop("stages")
    for st, g in zip(stages, a.stage_grades, strict=True):
        st["grades"] = plain(g)
    stop = metrics.pop("stop")
    for k in ("t0", "t_end"):
        metrics.pop(k)
    metrics["latency_basis"] = a.latency_basis
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": "run",
        "generated": time.time(),
        "source": str(a.data.source),
        "source_kind": a.data.kind,
        "run": _run_section(a.data),
        "started": m.t0 or None,
        "ended": m.t_end or None,
        "partial": a.partial,
        "interrupted": a.interrupted,
        "missing_inputs": a.missing,
        "unavailable": a.unavailable,
        "notes": a.data.notes,
        "stop": plain(stop),
        "degraded_sources": as_json(degraded_sources(a.data.events, m.t_end)),
        "config": _config_summary(cfg, a.verdict.fail_on),
        "metrics": metrics,
        "stages": stages,
        "scores": {"stability": plain(a.stability), "health": plain(a.health)},
        "grades": plain(a.grades),
        "checks": plain(a.checks),
        "overall_grade": a.verdict.overall,
        "business_value": plain(a.business),
        "limits": plain(a.limits),
        "recommendations": list(a.recommendations),
        "verdict": plain(a.verdict),
        "exit_code": a.exit_code,
        "definitions": {
            k: {"label": lab, "unit": unit, "definition": d}
            for k, (lab, unit, d) in DEFINITIONS.items()
        },
    }
    if (went := where_memory_went(a.data.source, a.data.samples)) is not None:
        doc["where_memory_went"] = plain(went)
    return doc


def write_json(doc: dict[str, Any], path: Path) -> Path:
    """Write through a temp file, so a reader never sees half a document."""
    text = json.dumps(doc, indent=2, allow_nan=False, ensure_ascii=False) + "\n"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def load_results(path: Path) -> dict[str, Any]:
    """Read a results document; ResultsError names the file and what is wrong."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResultsError(
            f"{path}: no such file (valid: a {RESULTS_NAME} or a run folder)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path}: cannot read it ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(doc, dict) or "schema_version" not in doc:
        raise ResultsError(f"{path}: not a memstress results file (no schema_version)")
    if doc["schema_version"] != SCHEMA_VERSION:
        raise ResultsError(
            f"{path}: schema_version {doc['schema_version']!r} is not supported "
            f"(valid: {SCHEMA_VERSION})"
        )
    if doc.get("kind") not in ("run", "session"):
        raise ResultsError(f"{path}: kind {doc.get('kind')!r} is unknown (valid: run, session)")
    return doc


def summary(doc: dict[str, Any]) -> dict[str, Any]:
    """The flat figures of a run document that ``compare`` and the session table use.

    Besides figures: ``leak_detected`` (1/0, None when not judged) with ``leak_headline``,
    ``overall_rank`` (0 excellent .. 4 poor) with ``fail_on``, and ``check:<id>`` (1 pass,
    0 fail, None not judged) for each check, so ``compare`` can judge verdicts too.
    """
    m = doc.get("metrics", {})

    def g(section: str, key: str) -> float | None:
        v = (m.get(section) or {}).get(key)
        return None if v is None or isinstance(v, bool) else float(v)

    scores = doc.get("scores", {})
    return {
        "cycle_mean_s": g("cycle", "mean_s"),
        "cycle_p95_s": g("cycle", "p95_s"),
        "cycle_p99_s": g("cycle", "p99_s"),
        "latency_mean_s": g("latency", "mean_s"),
        "memory_growth_mb": g("memory", "growth_mb"),
        "peak_mb": g("memory", "peak_mb"),
        "error_rate_pct": g("requests", "error_rate_pct"),
        "shed": g("requests", "shed"),
        "rps": g("requests", "rps"),
        "leak_slope_mb_min": g("leak", "slope_mb_min"),
        "leak_detected": (
            None
            if (m.get("leak") or {}).get("verdict") in (None, "not judged")
            else float(m["leak"]["verdict"] == "leak")
        ),
        "pressure_peak": g("pressure", "peak"),
        "recovery_time_s": g("recovery", "recovery_time_s"),
        "stability": (scores.get("stability") or {}).get("value"),
        "health": (scores.get("health") or {}).get("value"),
        "business_value_usd": (doc.get("business_value") or {}).get("total_usd"),
        "leak_headline": (doc.get("verdict") or {}).get("leak", ""),
        "overall_rank": (
            float(GRADES.index(doc["overall_grade"]))
            if doc.get("overall_grade") in GRADES
            else None
        ),
        "fail_on": (doc.get("verdict") or {}).get("fail_on"),
        **{
            f"check:{c['id']}": {"pass": 1.0, "fail": 0.0}.get(c["status"])
            for c in doc.get("checks", [])
        },
    }
