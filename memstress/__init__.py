"""memstress for your own load test.

Importing this package does nothing by itself. The one line that attaches the
memory monitor, the run folder and the verdict to a locustfile is::

    import memstress.plugin  # noqa: F401

(or give the plugin as a second file: ``locust -f mine.py,$(python -m memstress.plugin)``).
From user code:

- :func:`phase` marks a phase of the run (``warmup``, ``stress``, ``recovery`` ...);
- :func:`register_source` adds a memory source by name (part of ``--monitor-sources
  auto``); its ``read()`` raises :class:`SourceFailed` (no answer this time) or
  :class:`SourceMissing` (not there at all).
"""

from __future__ import annotations

from memstress.attach import phase
from monitors.readings import SourceFailed, SourceMissing
from monitors.registry import SourceTarget, register_source

__all__ = ["SourceFailed", "SourceMissing", "SourceTarget", "phase", "register_source"]
