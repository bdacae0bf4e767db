"""The exit codes of a memstress run, spelled once.

The CLI, a plain ``locust`` run, ``python -m memstress.reports`` and CI all read the same
codes. They are ordered by severity, and the numbers keep that order, so the
worst of several codes is their maximum (an unknown code counts as FAILED).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    """Every graded metric is at ``fail_on`` or better."""
    FAILED = 1
    """A grade below ``fail_on``, or a run whose figures cannot be trusted."""
    USAGE = 2
    """Bad usage or config: a flag, an option, the YAML, a stage plan."""
    TARGET_LOST = 3
    """The target was unreachable at the start or stopped answering."""
    SAFETY = 4
    """A safety limit stopped the run (host memory, target pressure, run time)."""
    INTERRUPTED = 130
    """Ctrl-C or SIGTERM (128 + SIGINT, as shells report it)."""


STOP_CODES = frozenset(
    {ExitCode.USAGE, ExitCode.TARGET_LOST, ExitCode.SAFETY, ExitCode.INTERRUPTED}
)
"""Codes a run records (in run_meta.json) that take precedence over the verdict's 0/1."""


def worst(codes: Iterable[int]) -> ExitCode:
    """The most severe of ``codes``; OK for none, FAILED for one that is not an ExitCode."""
    return max((_known(c) for c in codes), default=ExitCode.OK)


def _known(code: int) -> ExitCode:
    try:
        return ExitCode(code)
    except ValueError:
        return ExitCode.FAILED
