"""Render: ``stress_test_report.md`` from a results document (never from the raw run data).

Because the report reads only the JSON, ``python -m memstress.reports build`` or any later tool
can rebuild it without a new run.

- :func:`render_run` (:mod:`reports.markdown.run`): one run's report, section by
  section; the leak (:mod:`~reports.markdown.leak`) and the figures
  (:mod:`~reports.markdown.details`) in modules of their own;
- :func:`render_session` (:mod:`reports.markdown.session`): a session's scenarios
  side by side.

Tables and figures are formatted by :mod:`reports.fmt`.
"""

from __future__ import annotations

from memstress.reports.markdown.run import render_run
from memstress.reports.markdown.session import render_session

__all__ = ["render_run", "render_session"]
