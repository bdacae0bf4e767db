"""The verdict of a plain ``locust -f locustfile.py --headless`` run, set at quit.

``run_stress_test.py`` grades a run from its folder afterwards (``reports.results``).
A Locust run started directly has no such step, so this listener grades what the
Locust process knows when it quits, with the same thresholds and the same
:func:`reports.grading.verdict`:

- the error rate (shed answers apart) and the mean response time (management
  cycles where the run sent any, else all requests), from Locust's stats;
- the leak, from the monitor's own detector: the leak it holds at quit is the
  leak the report will show (a scenario that injects its leak on purpose is
  judged by its checks instead);
- memory growth, from the monitor's first and last samples.

It sets exit code 1 when the verdict fails. A stop code already set (3 target lost,
4 safety stop) stands. The stability score and the scenario's checks need the
whole run folder: ``python -m memstress.reports build RUN_DIR`` gives the full report.
Nothing here imports pandas or matplotlib: a Locust process stays lean.
"""

from __future__ import annotations

import logging
from typing import Any

from memstress.common.config import Config
from memstress.reports.grading import Grade, Verdict, grade_all, leak_grade, verdict

log = logging.getLogger("memstress")

CYCLE = ("POST /memory/cycle", "POST")
SHED = "SHED"


def quit_grades(stats: Any, cfg: Config, monitor: Any | None = None) -> tuple[list[Grade], str]:
    """Grades from a Locust ``RequestStats`` and the monitor; and the leak headline."""
    entries = [e for (_, method), e in stats.entries.items() if method != SHED]
    requests = sum(e.num_requests for e in entries)
    failures = sum(e.num_failures for e in entries)
    cycle = stats.entries.get(CYCLE)
    if cycle is not None and cycle.num_requests:
        latency = cycle.avg_response_time / 1000.0
        basis = CYCLE[0]
    elif requests:
        latency = sum(e.total_response_time for e in entries) / requests / 1000.0
        basis = "all requests"
    else:
        latency, basis = None, "all requests"
    values: dict[str, float | None] = {
        "error_rate": 100.0 * failures / requests if requests else None,
        "response_time": latency,
    }
    missing = {
        "stability_score": "graded from the run folder (python -m memstress.reports build)",
    }
    headline = ""
    snap = monitor.verdict_inputs() if monitor is not None else None
    if snap is not None:
        values["memory_growth"] = snap["growth_mb"]
        values["leak"] = snap["leak_slope_mb_min"]
        missing["leak"] = snap["leak_note"]
        headline = snap["leak_headline"]
    keep = set(values)
    grades = grade_all(
        cfg, values, labels={"response_time": f"mean response time ({basis})"}, missing=missing
    )
    grades = [leak_grade(g, headline, cfg.fail_on) if g.metric == "leak" else g for g in grades]
    return [g for g in grades if g.metric in keep], headline


class QuitVerdict:
    """A listener object: subscribes its ``quitting`` handler on construction."""

    def __init__(
        self,
        environment: Any,
        config: Config,
        fail_on: str | None = None,
        monitor: Any | None = None,
    ) -> None:
        self.environment = environment
        self.config = config
        self.fail_on = fail_on or config.fail_on
        self.monitor = monitor
        self.verdict: Verdict | None = None
        environment.events.quitting.add_listener(self.on_quitting)

    def on_quitting(self, environment: Any, **_: Any) -> None:
        opts = environment.parsed_options
        if getattr(opts, "worker", False) or environment.process_exit_code is not None:
            return  # workers hold no totals; a stop code (3, 4) already says why it ended
        grades, headline = quit_grades(environment.stats, self.config, self.monitor)
        v = self.verdict = verdict(grades, self.fail_on, (), headline)
        for g in grades:
            log.info("memstress grade: %s", g.message)
        if not v.passed:
            log.error("memstress verdict: FAILED (%s)", v.reason)
            environment.process_exit_code = v.exit_code
        else:
            log.info("memstress verdict: passed (%s)", v.reason)
