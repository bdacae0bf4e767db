"""The threshold report of any Locust CSV export (``--csv PREFIX``), memory sections unavailable.

Reads ``PREFIX_stats.csv``, ``PREFIX_stats_history.csv``, ``PREFIX_failures.csv``,
``PREFIX_exceptions.csv`` and, when present, ``PREFIX.json`` (exact totals).
Response time is graded on ``POST /memory/cycle`` when the export has it,
otherwise on all requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memstress.common.config import Config
from memstress.reports.charts import render_charts
from memstress.reports.collect import ReportInputError, read_locust_export
from memstress.reports.markdown import render_run
from memstress.reports.results import (
    CHARTS_DIR,
    REPORT_NAME,
    RESULTS_NAME,
    aggregate,
    to_results,
    write_json,
)

SUFFIXES = ("_stats.csv", "_stats_history.csv", "_failures.csv", "_exceptions.csv", ".json")


@dataclass
class Analyzed:
    exit_code: int
    overall_grade: str
    markdown: str
    results: dict[str, Any]


def normalise_prefix(arg: Path) -> Path:
    """Accept the prefix itself or any of its files (``x_stats.csv`` -> ``x``)."""
    name = arg.name
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return arg.with_name(name[: -len(suffix)])
    return arg


def analyze(
    prefix: Path, cfg: Config, fail_on: str | None = None, out_dir: Path | None = None
) -> Analyzed:
    prefix = normalise_prefix(prefix)
    stats = prefix.with_name(prefix.name + "_stats.csv")
    if not stats.is_file():
        raise ReportInputError(
            f"{stats}: no such file (valid: the --csv PREFIX of a Locust run, "
            "so that PREFIX_stats.csv exists)"
        )
    data = read_locust_export(prefix)
    a = aggregate(data, cfg, fail_on)
    doc = to_results(a, cfg)
    charts: list[str] = []
    errors: list[str] = []
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(doc, out_dir / RESULTS_NAME)
        paths, errors = render_charts(data, out_dir / CHARTS_DIR, a.metrics.t0, a.metrics.t_end)
        charts = [p.relative_to(out_dir).as_posix() for p in paths]
    md = render_run(doc, charts, errors)
    if out_dir is not None:
        (out_dir / REPORT_NAME).write_text(md, encoding="utf-8")
    return Analyzed(a.exit_code, a.verdict.overall, md, doc)
