"""Post-processing of run folders: metrics, grades, business value, JSON, Markdown, charts.

Three steps in three places (docs/design.md, From the CLI to the report):
:mod:`reports.collect` reads a run folder, :mod:`reports.metrics`,
:mod:`reports.scores`, :mod:`reports.grading`,
:mod:`reports.business` and :mod:`reports.findings` aggregate it into plain
dataclasses, and :mod:`reports.results` (JSON, written first),
:mod:`reports.markdown` (from that JSON) and :mod:`reports.charts` render it.

The runner calls :func:`build_run_report` after each scenario and
:func:`build_session_report` after a ``--quick`` or ``--comprehensive`` session.
By hand: ``python -m reports build|compare|analyze``.
"""

from reports.build import RunReport, SessionReport, build_run_report, build_session_report
from reports.collect import ReportInputError

__all__ = [
    "ReportInputError",
    "RunReport",
    "SessionReport",
    "build_run_report",
    "build_session_report",
]
