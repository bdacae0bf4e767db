"""Build the reports of a run folder or a session folder: collect, aggregate, render.

The order is fixed: the results JSON first, then the charts, then the
Markdown report built from that JSON.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memstress.common.config import Config
from memstress.common.exitcodes import ExitCode, worst
from memstress.reports.charts import render_charts
from memstress.reports.collect import ReportInputError, is_run_folder, read_run
from memstress.reports.grading import NA, overall, parse_grade, rank
from memstress.reports.markdown import render_run, render_session
from memstress.reports.results import (
    CHARTS_DIR,
    REPORT_NAME,
    RESULTS_NAME,
    SCHEMA_VERSION,
    aggregate,
    summary,
    to_results,
    write_json,
)


@dataclass
class RunReport:
    """What a build produced, and the exit code it stands for."""

    exit_code: int
    results_path: Path
    report_path: Path
    overall_grade: str
    partial: bool = False
    charts: list[Path] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)


@dataclass
class SessionReport:
    exit_code: int
    results_path: Path
    report_path: Path
    overall_grade: str
    partial: bool = False
    runs: list[RunReport] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)


def _check_fail_on(fail_on: str | None) -> str | None:
    if fail_on is None:
        return None
    try:
        return parse_grade(fail_on)
    except ValueError as exc:
        raise ReportInputError(f"--fail-on: {exc}") from None


def build_run_report(run_dir: Path, config: Config, fail_on: str | None = None) -> RunReport:
    """Read ``run_dir``, write its results JSON, charts and Markdown report.

    ``fail_on`` overrides ``config.fail_on``. The exit code is the verdict's
    (0 passed, 1 failed) unless run_meta.json records a stop code (2, 3, 4, 130).
    Raises :class:`ReportInputError` for a folder that is not a run folder.
    """
    run_dir = Path(run_dir)
    fail = _check_fail_on(fail_on)
    if not run_dir.is_dir():
        raise ReportInputError(
            f"{run_dir}: no such folder (valid: a run folder or a session folder)"
        )
    if not is_run_folder(run_dir):
        raise ReportInputError(
            f"{run_dir}: not a run folder (valid: a folder with run_meta.json, stages.csv, "
            "memory_samples.csv or locust_stats.csv)"
        )
    data = read_run(run_dir)
    analysis = aggregate(data, config, fail)
    doc = to_results(analysis, config)
    results_path = write_json(doc, run_dir / RESULTS_NAME)
    charts, chart_errors = render_charts(
        data, run_dir / CHARTS_DIR, analysis.metrics.t0, analysis.metrics.t_end
    )
    rel = [p.relative_to(run_dir).as_posix() for p in charts]
    report_path = run_dir / REPORT_NAME
    report_path.write_text(render_run(doc, rel, chart_errors), encoding="utf-8")
    return RunReport(
        exit_code=analysis.exit_code,
        results_path=results_path,
        report_path=report_path,
        overall_grade=analysis.verdict.overall,
        partial=analysis.partial,
        charts=charts,
        results=doc,
    )


def _rel(p: Path, base: Path) -> str:
    try:
        return p.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return str(p)


def _rank_or_minus_one(grade: str) -> int:
    r = rank(grade)
    return -1 if r is None else r


def _run_entry(rep: RunReport, session_dir: Path) -> dict[str, Any]:
    doc = rep.results
    return {
        "scenario": str(doc["run"].get("scenario", "unknown")),
        "run_dir": _rel(rep.results_path.parent, session_dir),
        "results": _rel(rep.results_path, session_dir),
        "report": _rel(rep.report_path, session_dir),
        "overall_grade": rep.overall_grade,
        "exit_code": rep.exit_code,
        "verdict_passed": bool(doc["verdict"]["passed"]),
        "partial": rep.partial,
        "interrupted": bool(doc["interrupted"]),
        "stop_reason": doc["stop"]["reason"],
        "missing_inputs": list(doc["missing_inputs"]),
        "summary": summary(doc),
        "grades": doc["grades"],
        "recommendations": doc["recommendations"],
    }


def _failed_entry(run_dir: Path, session_dir: Path, error: str) -> dict[str, Any]:
    return {
        "scenario": run_dir.name.split("_", 1)[-1],
        "run_dir": _rel(run_dir, session_dir),
        "results": None,
        "report": None,
        "overall_grade": NA,
        "exit_code": ExitCode.FAILED,
        "verdict_passed": False,
        "partial": True,
        "interrupted": False,
        "stop_reason": f"no report: {error}",
        "missing_inputs": [error],
        "summary": {},
        "grades": [],
        "recommendations": [],
    }


def build_session_report(
    session_dir: Path, run_dirs: list[Path], config: Config, fail_on: str | None = None
) -> SessionReport:
    """Build every run's report, then one session JSON and report comparing the scenarios.

    The exit code is the worst of the runs' (0 < 1 < 2 < 3 < 4 < 130). A run whose
    report cannot be built is recorded as failed (exit 1) with the reason.
    """
    session_dir = Path(session_dir)
    fail = _check_fail_on(fail_on) or config.fail_on
    if not session_dir.is_dir():
        raise ReportInputError(f"{session_dir}: no such folder (valid: a session folder)")
    reports: list[RunReport] = []
    entries: list[dict[str, Any]] = []
    for rd in run_dirs:
        try:
            rep = build_run_report(Path(rd), config, fail)
        except (ReportInputError, OSError) as exc:
            entries.append(_failed_entry(Path(rd), session_dir, str(exc)))
            continue
        reports.append(rep)
        entries.append(_run_entry(rep, session_dir))
    codes = [e["exit_code"] for e in entries]
    grades = [e["overall_grade"] for e in entries]
    worst_grade = max(grades, key=_rank_or_minus_one) if grades else NA
    code = worst(codes)
    failed = [e["scenario"] for e in entries if not e["verdict_passed"]]
    reason = (
        f"{len(failed)} of {len(entries)} runs failed: {', '.join(failed)}"
        if failed
        else f"all {len(entries)} runs passed"
        if entries
        else "no runs"
    )
    missing = [f"{e['scenario']}: {m}" for e in entries for m in e["missing_inputs"]]
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": "session",
        "generated": time.time(),
        "source": str(session_dir),
        "partial": any(e["partial"] for e in entries) or not entries,
        "interrupted": any(e["interrupted"] for e in entries),
        "missing_inputs": missing,
        "runs": entries,
        "overall_grade": worst_grade if rank(worst_grade) is not None else overall([]),
        "verdict": {
            "passed": not failed and bool(entries),
            "fail_on": fail,
            "failed_runs": failed,
            "reason": reason,
        },
        "exit_code": code,
    }
    results_path = write_json(doc, session_dir / RESULTS_NAME)
    report_path = session_dir / REPORT_NAME
    report_path.write_text(render_session(doc), encoding="utf-8")
    return SessionReport(
        exit_code=code,
        results_path=results_path,
        report_path=report_path,
        overall_grade=doc["overall_grade"],
        partial=doc["partial"],
        runs=reports,
        results=doc,
    )


def session_runs(folder: Path) -> list[Path]:
    """The run folders directly inside a session folder, in name (= time) order."""
    return sorted(p for p in folder.iterdir() if is_run_folder(p))
