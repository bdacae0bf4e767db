"""The verdict of a plain ``locust -f locustfile.py --headless`` run, set at quit.

``run_stress_test.py`` grades a run from its folder afterwards (reports/build.py).
A Locust run started directly has no such step, so this listener grades what the
Locust process itself knows when it quits — the error rate (shed answers apart)
and the mean management-cycle time — with the same thresholds, and sets exit
code 1 when a grade is below ``fail_on``. A stop code already set (3 target
lost, 4 safety stop) stands. Memory growth and stability need the whole run
folder: ``python -m reports build RUN_DIR`` grades those.
"""

from __future__ import annotations

import logging
from typing import Any

from common.config import Config
from reports.grading import Grade, grade_all, verdict

log = logging.getLogger("memstress")

CYCLE = ("POST /memory/cycle", "POST")
SHED = "SHED"


def live_grades(stats: Any, cfg: Config) -> list[Grade]:
    """Grades from a Locust ``RequestStats``: error rate and mean cycle time."""
    entries = [e for (_, method), e in stats.entries.items() if method != SHED]
    requests = sum(e.num_requests for e in entries)
    failures = sum(e.num_failures for e in entries)
    cycle = stats.entries.get(CYCLE)
    values: dict[str, float | None] = {
        "error_rate": 100.0 * failures / requests if requests else None,
        "response_time": (
            cycle.avg_response_time / 1000.0 if cycle is not None and cycle.num_requests else None
        ),
    }
    missing = {
        "memory_growth": "graded from the run folder (python -m reports build)",
        "stability_score": "graded from the run folder (python -m reports build)",
    }
    return [g for g in grade_all(cfg, values, missing=missing) if g.metric in values]


class LiveVerdict:
    """A listener object: subscribes its ``quitting`` handler on construction."""

    def __init__(self, environment: Any, config: Config, fail_on: str | None = None) -> None:
        self.environment = environment
        self.config = config
        self.fail_on = fail_on or config.fail_on
        environment.events.quitting.add_listener(self.on_quitting)

    def on_quitting(self, environment: Any, **_: Any) -> None:
        opts = environment.parsed_options
        if getattr(opts, "worker", False) or environment.process_exit_code is not None:
            return  # workers hold no totals; a stop code (3, 4) already says why it ended
        grades = live_grades(environment.stats, self.config)
        v = verdict(grades, self.fail_on)
        for g in grades:
            log.info("memstress grade: %s", g.message)
        if not v.passed:
            log.error("memstress verdict: FAILED (%s)", v.reason)
            environment.process_exit_code = v.exit_code
        else:
            log.info("memstress verdict: passed (%s)", v.reason)
