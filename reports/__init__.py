"""Post-processing of run folders: metrics, grades, business value, JSON, Markdown, charts.

Three steps in three places (docs/design.md, From the CLI to the report):
:mod:`reports.collect` reads a run folder, :mod:`reports.metrics`,
:mod:`reports.scores`, :mod:`reports.grading`,
:mod:`reports.business` and :mod:`reports.findings` aggregate it into plain
dataclasses, and :mod:`reports.results` (JSON, written first),
:mod:`reports.markdown` (from that JSON) and :mod:`reports.charts` render it.

The runner calls :func:`build_run_report` after each scenario and
:func:`build_session_report` after a ``--quick`` or ``--comprehensive`` session.
By hand: ``python -m memstress.reports build|compare|analyze``.
"""

from typing import Any

_LAZY = {
    "RunReport": "memstress.reports.build",
    "SessionReport": "memstress.reports.build",
    "build_run_report": "memstress.reports.build",
    "build_session_report": "memstress.reports.build",
    "ReportInputError": "memstress.reports.collect",
}


def __getattr__(name: str) -> Any:
    """Imported on first use: a Locust process loads ``reports.quit_verdict``, which needs
    neither pandas nor matplotlib, and must not pay for them (lean workers)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'reports' has no attribute {name!r}")


__all__ = [
    "ReportInputError",
    "RunReport",
    "SessionReport",
    "build_run_report",
    "build_session_report",
]
