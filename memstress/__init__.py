"""memstress: one installed package, ``memstress``.

Its parts are the repository's folders (``common``, ``scenarios``, ``shapes``,
``monitors``, ``reports``, ``runner``, ``service``), imported as
``memstress.<folder>``; in a checkout, ``memstress/<folder>`` is a link to the
folder. Installing memstress puts only the name ``memstress`` on a project's path,
so a user's own ``common`` or ``service`` package stays theirs.

Importing this package loads nothing else (the reference service imports
``memstress.service`` and must not pay for Locust). The one line that attaches the
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

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from memstress.attach import phase
    from memstress.monitors.readings import SourceFailed, SourceMissing
    from memstress.monitors.registry import SourceTarget, register_source

_LAZY = {
    "phase": "memstress.attach",
    "SourceTarget": "memstress.monitors.registry",
    "register_source": "memstress.monitors.registry",
    "SourceFailed": "memstress.monitors.readings",
    "SourceMissing": "memstress.monitors.readings",
}

__all__ = ["SourceFailed", "SourceMissing", "SourceTarget", "phase", "register_source"]


def __getattr__(name: str) -> Any:
    """The user-facing names, imported on first use (they need Locust)."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'memstress' has no attribute {name!r}")
