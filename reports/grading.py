"""Grade metrics against ``config.performance_thresholds``; a threshold explains its grade.

Bands, lower-is-better (every metric but ``stability_score``)::

    value <= excellent         -> Excellent
    value <= good              -> Good
    value <= acceptable        -> Acceptable
    value <= poor              -> Marginal   (between the Acceptable and Poor bounds)
    value >  poor              -> Poor

Higher-is-better mirrors it with ``>=``. Each :class:`Grade` carries the
message a person needs, e.g. ``mean cycle time 1.8 s > 1.0 s (Good bound) ->
Acceptable``. The overall grade is the worst one; the verdict fails when a
grade is worse than ``fail_on`` (exit code 1). A missing metric is "n/a" and
never fails the verdict.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from memstress.common.config import GRADES, Config, PerformanceThresholds, Threshold
from memstress.common.exitcodes import STOP_CODES, ExitCode, worst
from memstress.reports.fmt import with_unit

NA = "n/a"

LABELS = {
    "response_time": ("mean response time", "s"),
    "leak": ("leak at the end of the run", "MB/min"),
    "stability_score": ("stability score", ""),
    "memory_growth": ("memory growth", "MB"),
    "error_rate": ("error rate", "%"),
}


def parse_grade(name: str) -> str:
    """A grade name, case-insensitive; ValueError lists the valid ones."""
    g = name.strip().lower()
    if g not in GRADES:
        raise ValueError(f"{name!r} is not a grade (valid: {', '.join(GRADES)})")
    return g


def rank(grade: str) -> int | None:
    """0 for excellent ... 4 for poor; None for n/a."""
    return GRADES.index(grade) if grade in GRADES else None


@dataclass(frozen=True)
class Grade:
    metric: str
    label: str
    value: float | None
    unit: str
    grade: str  # a GRADES name or "n/a"
    message: str

    @property
    def rank(self) -> int | None:
        return rank(self.grade)


@dataclass(frozen=True)
class GradeThreshold:
    """One metric's bounds; :meth:`grade` returns the grade and why."""

    metric: str
    label: str
    unit: str
    bounds: Threshold
    higher_is_better: bool = False

    def _bounds(self) -> list[tuple[str, float]]:
        b = self.bounds
        return [
            ("excellent", b.excellent),
            ("good", b.good),
            ("acceptable", b.acceptable),
            ("poor", b.poor),
        ]

    def grade(self, value: float | None, missing: str = "no data") -> Grade:
        if value is None:
            return Grade(
                self.metric,
                self.label,
                None,
                self.unit,
                NA,
                f"{self.label}: n/a ({missing}) -> not graded",
            )
        better = (lambda v, b: v >= b) if self.higher_is_better else (lambda v, b: v <= b)
        ok, worse = (">=", "<") if self.higher_is_better else ("<=", ">")
        shown = f"{self.label} {with_unit(value, self.unit)}"
        bounds = self._bounds()
        b0 = bounds[0][1]
        if better(value, b0):
            return Grade(
                self.metric,
                self.label,
                value,
                self.unit,
                "excellent",
                f"{shown} {ok} {with_unit(b0, self.unit)} (Excellent bound) -> Excellent",
            )
        # Past bound i, within bound i+1 (or past the last: Poor).
        grades_after = ["good", "acceptable", "marginal", "poor"]
        for i, (bname, b) in enumerate(bounds):
            nxt = bounds[i + 1][1] if i + 1 < len(bounds) else None
            if nxt is None or better(value, nxt):
                g = grades_after[i]
                return Grade(
                    self.metric,
                    self.label,
                    value,
                    self.unit,
                    g,
                    f"{shown} {worse} {with_unit(b, self.unit)} ({bname.capitalize()} bound)"
                    f" -> {g.capitalize()}",
                )
        raise AssertionError("unreachable")  # pragma: no cover


def thresholds(cfg: Config) -> dict[str, GradeThreshold]:
    out = {}
    for name, t in cfg.performance_thresholds.items():
        label, unit = LABELS.get(name, (name.replace("_", " "), ""))
        out[name] = GradeThreshold(
            name, label, unit, t, name in PerformanceThresholds.HIGHER_IS_BETTER
        )
    return out


def grade_all(
    cfg: Config,
    values: dict[str, float | None],
    *,
    labels: dict[str, str] | None = None,
    missing: dict[str, str] | None = None,
) -> list[Grade]:
    """Grade every configured metric; ``values`` maps a threshold name to its figure."""
    out = []
    for name, th in thresholds(cfg).items():
        if labels and name in labels:
            th = GradeThreshold(name, labels[name], th.unit, th.bounds, th.higher_is_better)
        out.append(th.grade(values.get(name), (missing or {}).get(name, "no data")))
    return out


def overall(grades: Iterable[Grade]) -> str:
    ranks = [g.rank for g in grades if g.rank is not None]
    return GRADES[max(ranks)] if ranks else NA


@dataclass(frozen=True)
class CheckResult:
    """One scenario expectation, judged (``reports.checks``): pass, fail or not judged."""

    id: str
    text: str
    required: bool
    bound: float | None
    status: str  # pass | fail | not judged
    message: str


@dataclass(frozen=True)
class Verdict:
    passed: bool
    fail_on: str
    overall: str
    failed: tuple[str, ...]  # what failed it: grades worse than fail_on, failed required checks
    exit_code: int  # 0 passed, 1 failed
    reason: str
    leak: str = ""  # the leak verdict's headline, whatever the outcome


def leak_grade(g: Grade, headline: str, fail_on: str) -> Grade:
    """The leak grade worded as the detector's finding ("leak 2.6 MB/min (CI ...) detected at
    76 s -> Poor"), so the verdict's reason names the leak itself."""
    if g.rank is None or not headline.startswith("leak "):
        return g
    return Grade(
        g.metric, g.label, g.value, g.unit, g.grade, f"{headline} -> {g.grade.capitalize()}"
    )


def verdict(
    grades: list[Grade],
    fail_on: str,
    checks: Iterable[CheckResult] = (),
    leak: str = "",
) -> Verdict:
    """The one verdict: grades against ``fail_on`` and the required checks.

    Both ``run_stress_test.py`` (through ``reports.results``) and a plain Locust run
    at quit (``reports.quit_verdict``) make it here; ``leak`` is the leak verdict's
    headline, carried into the reason.
    """
    limit = GRADES.index(parse_grade(fail_on))
    failed_grades = [g.message for g in grades if g.rank is not None and g.rank > limit]
    failed_checks = [
        f"check failed: {c.text}: {c.message}" for c in checks if c.required and c.status == "fail"
    ]
    failed = tuple(failed_grades + failed_checks)
    ov = overall(grades)
    if failed:
        parts = []
        if failed_grades:
            n = len(failed_grades)
            parts.append(
                f"{n} grade{'s' if n > 1 else ''} below {fail_on}: " + "; ".join(failed_grades)
            )
        if failed_checks:
            parts.append("; ".join(failed_checks))
        return Verdict(False, fail_on, ov, failed, ExitCode.FAILED, "; ".join(parts), leak)
    graded = sum(g.rank is not None for g in grades)
    if not graded:
        # A run that measured nothing (a load generator that died on start, say) must
        # not pass a CI gate.
        why = "nothing could be graded: the run measured nothing (no requests, no memory)"
        return Verdict(False, fail_on, ov, (why,), ExitCode.FAILED, why, leak)
    reason = f"every graded metric is {fail_on} or better"
    judged = [c for c in checks if c.status != "not judged"]
    if judged:
        reason += f"; {len(judged)} check(s) judged, none required failed"
    if leak:
        reason += f"; {leak}"
    return Verdict(True, fail_on, ov, (), ExitCode.OK, reason, leak)


def run_exit_code(verdict_code: int, recorded: int | None) -> int:
    """A stop code recorded by the run (2, 3, 4, 130) wins over the verdict's 0/1.

    Locust's own 1 (it saw failures) is not a verdict. Any other non-zero code
    (a load generator killed by a signal, or crashed) means the figures cannot
    be trusted: the run fails whatever the grades.
    """
    if recorded in STOP_CODES:
        return recorded
    if recorded and recorded != ExitCode.FAILED:
        return worst([verdict_code, ExitCode.FAILED])
    return verdict_code
