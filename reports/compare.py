"""Compare two runs (or sessions): metric deltas and regressions beyond ``config.compare``.

Either side may be a results JSON file, a run folder or a session folder. A
folder with a ``stress_test_results.json`` is read from it; a run folder
without one is aggregated in memory (nothing is written). Scenarios are matched
by name; two single runs are compared whatever their names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memstress.common.config import GRADES, Config
from memstress.common.exitcodes import ExitCode
from memstress.reports.collect import ReportInputError, is_run_folder, read_run
from memstress.reports.fmt import num, table
from memstress.reports.results import RESULTS_NAME, aggregate, load_results, summary, to_results

Summary = dict[str, Any]

LABELS = {
    "cycle_mean_s": ("mean cycle time", "s"),
    "cycle_p95_s": ("p95 cycle time", "s"),
    "cycle_p99_s": ("p99 cycle time", "s"),
    "memory_growth_mb": ("memory growth", "MB"),
    "peak_mb": ("peak memory", "MB"),
    "error_rate_pct": ("error rate", "%"),
    "shed": ("shed", ""),
    "rps": ("requests/s", ""),
    "leak_slope_mb_min": ("leak slope", "MB/min"),
    "pressure_peak": ("peak pressure", "%"),
    "recovery_time_s": ("recovery time", "s"),
    "stability": ("stability score", ""),
    "health": ("system health", ""),
    "business_value_usd": ("business value", "$"),
}


@dataclass
class Delta:
    scenario: str
    metric: str
    old: float | None
    new: float | None
    regression: bool = False
    rule: str = ""  # the config.compare rule this metric is held to, if any
    message: str = ""

    @property
    def change(self) -> float | None:
        return None if self.old is None or self.new is None else self.new - self.old


@dataclass
class Comparison:
    deltas: list[Delta] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[Delta]:
        return [d for d in self.deltas if d.regression]

    @property
    def exit_code(self) -> int:
        return ExitCode.FAILED if self.regressions else ExitCode.OK


def _side_of_folder(folder: Path, cfg: Config) -> dict[str, Summary]:
    results = folder / RESULTS_NAME
    if results.is_file():
        return _side_of_doc(load_results(results))
    if is_run_folder(folder):
        doc = to_results(aggregate(read_run(folder), cfg), cfg)
        return _side_of_doc(doc)
    runs = sorted(p for p in folder.iterdir() if is_run_folder(p))
    if not runs:
        raise ReportInputError(
            f"{folder}: not a run folder, a session folder or a results file "
            f"(valid: a folder with run_meta.json or {RESULTS_NAME}, or a {RESULTS_NAME} file)"
        )
    out: dict[str, Summary] = {}
    for r in runs:
        out.update(_side_of_folder(r, cfg))
    return out


def _side_of_doc(doc: dict[str, Any]) -> dict[str, Summary]:
    if doc["kind"] == "session":
        out: dict[str, Summary] = {}
        for r in doc.get("runs", []):
            name, n = str(r["scenario"]), 2
            while name in out:  # the same scenario twice in a session: the second is name#2
                name, n = f"{r['scenario']}#{n}", n + 1
            out[name] = dict(r["summary"])
        return out
    return {str(doc["run"].get("scenario", "run")): summary(doc)}


def load_side(path: Path, cfg: Config) -> dict[str, Summary]:
    """Scenario name -> flat figures, from a results file, run folder or session folder."""
    if path.is_dir():
        return _side_of_folder(path, cfg)
    if path.is_file():
        return _side_of_doc(load_results(path))
    raise ReportInputError(
        f"{path}: no such file or folder "
        f"(valid: a run folder, a session folder or a {RESULTS_NAME})"
    )


def _check(scenario: str, metric: str, old: float | None, new: float | None, cfg: Config) -> Delta:
    c = cfg.compare
    d = Delta(scenario, metric, old, new)
    label = LABELS.get(metric, (metric, ""))[0]
    if old is None or new is None:
        return d
    if metric in ("cycle_mean_s", "cycle_p95_s"):
        d.rule = f"+{num(c.response_time_pct)}% at most"
        if old > 0 and new > old * (1 + c.response_time_pct / 100.0):
            d.regression = True
            d.message = (
                f"{scenario}: {label} {num(old)} s -> {num(new)} s "
                f"(+{num(100 * (new - old) / old)}%) > +{num(c.response_time_pct)}% allowed"
            )
    elif metric == "memory_growth_mb":
        d.rule = f"+{num(c.memory_growth_mb)} MB at most"
        if new - old > c.memory_growth_mb:
            d.regression = True
            d.message = (
                f"{scenario}: {label} {num(old)} MB -> {num(new)} MB "
                f"(+{num(new - old)} MB) > +{num(c.memory_growth_mb)} MB allowed"
            )
    elif metric == "error_rate_pct":
        d.rule = f"+{num(c.error_rate_points)} points at most"
        if new - old > c.error_rate_points:
            d.regression = True
            d.message = (
                f"{scenario}: {label} {num(old)}% -> {num(new)}% "
                f"(+{num(new - old)} points) > +{num(c.error_rate_points)} points allowed"
            )
    elif metric == "stability":
        d.rule = f"-{num(c.stability_points)} points at most"
        if old - new > c.stability_points:
            d.regression = True
            d.message = (
                f"{scenario}: {label} {num(old)} -> {num(new)} "
                f"(-{num(old - new)} points) > -{num(c.stability_points)} points allowed"
            )
    return d


def _verdict_regressions(scenario: str, o: Summary, n: Summary) -> list[Delta]:
    """A verdict that got worse: a new leak, a check that now fails, a grade below the gate."""
    out = []
    if o.get("leak_detected") == 0.0 and n.get("leak_detected") == 1.0:
        out.append(
            Delta(
                scenario,
                "leak_detected",
                0.0,
                1.0,
                True,
                "no leak",
                f"{scenario}: NEW LEAK: {n.get('leak_headline') or 'leak detected'} "
                "(the old run had none)",
            )
        )
    for key in sorted(k for k in n if k.startswith("check:")):
        if o.get(key) == 1.0 and n.get(key) == 0.0:
            out.append(
                Delta(
                    scenario,
                    key,
                    1.0,
                    0.0,
                    True,
                    "passes",
                    f"{scenario}: check {key.removeprefix('check:')} passed before and fails now",
                )
            )
    gate = n.get("fail_on") or o.get("fail_on")
    old_rank, new_rank = o.get("overall_rank"), n.get("overall_rank")
    if gate in GRADES and old_rank is not None and new_rank is not None:
        limit = GRADES.index(gate)
        if old_rank <= limit < new_rank:
            out.append(
                Delta(
                    scenario,
                    "overall_grade",
                    old_rank,
                    new_rank,
                    True,
                    f"{gate} or better",
                    f"{scenario}: overall grade {GRADES[int(old_rank)]} -> "
                    f"{GRADES[int(new_rank)]}, below the gate ({gate})",
                )
            )
    return out


def compare(old: dict[str, Summary], new: dict[str, Summary], cfg: Config) -> Comparison:
    out = Comparison()
    pairs: list[tuple[str, Summary, Summary]]
    if len(old) == 1 and len(new) == 1:
        (on, os_), (nn, ns) = next(iter(old.items())), next(iter(new.items()))
        if on != nn:
            out.notes.append(f"comparing scenario {on!r} with {nn!r}")
        pairs = [(nn if on == nn else f"{on} -> {nn}", os_, ns)]
    else:
        pairs = [(k, old[k], new[k]) for k in old if k in new]
        out.unmatched = sorted(set(old) ^ set(new))
    for scenario, o, n in pairs:
        out.deltas.extend(_verdict_regressions(scenario, o, n))
        for metric in LABELS:
            out.deltas.append(_check(scenario, metric, o.get(metric), n.get(metric), cfg))
    return out


def render(c: Comparison, old: Path, new: Path) -> str:
    lines = [f"# Comparison\n\nold: {old}\nnew: {new}\n"]
    if c.regressions:
        # Verdict regressions (new leak, failed check, grade below the gate) come first.
        lines.append(f"{len(c.regressions)} regression(s):")
        lines += [f"- {d.message}" for d in c.regressions]
        lines.append("")
    for n in c.notes:
        lines.append(f"Note: {n}.")
    if c.unmatched:
        lines.append("Only on one side (not compared): " + ", ".join(c.unmatched) + ".")
    rows = []
    for d in c.deltas:
        if d.metric not in LABELS:
            continue  # a verdict regression: listed above
        label, unit = LABELS.get(d.metric, (d.metric, ""))
        ch = d.change
        pct = f"{num(100 * ch / d.old)}%" if ch is not None and d.old not in (None, 0) else "n/a"
        rows.append(
            [
                d.scenario,
                f"{label} ({unit})" if unit else label,
                d.old,
                d.new,
                "n/a" if ch is None else ("+" if ch > 0 else "") + num(ch),
                pct,
                d.rule or "-",
                "REGRESSION" if d.regression else "",
            ]
        )
    lines.append("")
    lines.append(
        table(["scenario", "metric", "old", "new", "change", "change %", "limit", ""], rows)
    )
    lines.append("")
    if not c.regressions:
        lines.append(
            "No regression: no new leak, no check newly failed, no grade fell below the gate, "
            "and no figure beyond the config.compare tolerances."
        )
    return "\n".join(lines) + "\n"
