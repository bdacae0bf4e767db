"""A benchmark's result, ``bench/results.json`` and ``bench/RESULTS.md`` built from it.

Collect, aggregate, render (as reports/ does): each benchmark module measures and
returns a :class:`BenchResult` (raw figures, ratios, goals, tables, a short
reading); :func:`write_results` merges it into ``results.json``, and
:func:`render_markdown` builds ``RESULTS.md`` from that JSON alone, so the
Markdown can be rebuilt without a new run (``python -m bench render``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = 2
RESULTS_JSON = "results.json"
RESULTS_MD = "RESULTS.md"
ORDER = ("load", "monitor", "report", "leak", "service", "selfrss", "capture")

OPS = {
    ">=": lambda v, t: v >= t,
    ">": lambda v, t: v > t,
    "<=": lambda v, t: v <= t,
    "<": lambda v, t: v < t,
    "==": lambda v, t: v == t,
}


@dataclass(frozen=True)
class GoalSpec:
    """A goal's fixed part: its stable id, what is measured, and the bar it must clear."""

    id: str
    bench: str
    figure: str
    op: str
    target: float
    unit: str = ""
    cost: str = ""  # what measuring it takes, said when it was not measured


GOALS: dict[str, GoalSpec] = {
    g.id: g
    for g in (
        GoalSpec(
            "loadgen_cpu_per_request_ratio",
            "load",
            "generator CPU per request, scenario user path / plain FastHttpUser, same requests, "
            "generator-bound (target served by wrk at >= 3x one generator core's rate)",
            "<=",
            1.10,
            "x",
        ),
        GoalSpec(
            "loadgen_saturated_rps_ratio",
            "load",
            "requests/s of one saturated generator core, scenario path / plain",
            ">=",
            0.90,
            "x",
        ),
        GoalSpec(
            "worker_rss_ratio",
            "load",
            "RSS of a memstress Locust worker / a plain Locust worker, same users, after 30 s",
            "<=",
            1.25,
            "x",
        ),
        GoalSpec(
            "sampler_cpu_pct_of_core",
            "monitor",
            "the monitor's process CPU (its CPU clock), every source on, 1 s interval, "
            "on minus off in one process, repeated",
            "<=",
            0.5,
            "% of a core",
        ),
        GoalSpec(
            "monitor_on_off_rps_ratio",
            "monitor",
            "requests/s with the monitor on / not attached, at generator saturation",
            ">=",
            0.98,
            "x",
        ),
        GoalSpec(
            "leak_recall_2mb_90s", "leak", "share of 2 MB/min leaks found within 90 s", ">=", 1.0
        ),
        GoalSpec(
            "leak_recall_1mb_180s", "leak", "share of 1 MB/min leaks found within 180 s", ">=", 1.0
        ),
        GoalSpec(
            "leak_recall_05mb_420s",
            "leak",
            "share of 0.5 MB/min leaks found within 420 s",
            ">=",
            1.0,
        ),
        GoalSpec(
            "leak_false_final_verdicts",
            "leak",
            "leak-free runs whose final verdict is 'leak'",
            "==",
            0.0,
            "runs",
        ),
        GoalSpec(
            "self_rss_slope_mb_per_hour",
            "selfrss",
            "RSS slope of the memstress master and one worker over a 60-min endurance run, "
            "minus plain Locust's master under the same load",
            "<=",
            1.0,
            "MB/h over plain Locust",
            "an hour of two distributed runs: `python -m bench selfrss`",
        ),
        GoalSpec(
            "leak_slope_error_pct",
            "leak",
            "worst slope error against the measured true rate, over detected leaks",
            "<=",
            20.0,
            "%",
        ),
        GoalSpec(
            "report_build_60min_s", "report", "build time of the 60-minute folder", "<", 10.0, "s"
        ),
        GoalSpec(
            "report_build_scaling", "report", "build time 60 min / 6 min (10x data)", "<=", 12.0
        ),
        GoalSpec(
            "capture_tracking_rps_ratio",
            "capture",
            "target requests/s while memray tracks it / without",
            ">=",
            0.9,
        ),
        GoalSpec(
            "service_bytes_per_vector",
            "service",
            "RSS per stored vector, embedding cache at its limit",
            "<",
            2000.0,
            "B",
        ),
    )
}
"""Every goal by its stable id; results.json lists each one, measured or not."""


@dataclass
class Goal:
    """One goal: ``value op target``; ``passed`` is None when not measured (``reason`` says
    why), and a measured goal whose setup did not hold (``reason`` set, ``valid`` False) is
    not counted as met or missed either."""

    name: str
    value: float | None
    op: str
    target: float
    unit: str = ""
    note: str = ""
    id: str = ""
    reason: str = ""
    valid: bool = True

    @classmethod
    def of(
        cls,
        goal_id: str,
        value: float | None,
        *,
        reason: str = "",
        note: str = "",
        valid: bool = True,
    ) -> Goal:
        spec = GOALS[goal_id]
        return cls(
            spec.figure, value, spec.op, spec.target, spec.unit, note, goal_id, reason, valid
        )

    @property
    def passed(self) -> bool | None:
        if self.value is None or (isinstance(self.value, float) and math.isnan(self.value)):
            return None
        if not self.valid:
            return None
        return bool(OPS[self.op](self.value, self.target))

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["goal"] = f"{self.op} {self.target:g}"
        d["passed"] = self.passed
        if self.passed is False and not self.reason:
            d["reason"] = f"measured {self.value:g}, the goal is {self.op} {self.target:g}"
        if self.passed is None and not d["reason"]:
            # e.g. a short (--small) run in which one side produced no figure
            d["reason"] = "not measured: this run of the benchmark gave no value for it"
        return d


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BenchResult:
    name: str  # load | monitor | report | leak | service | capture
    title: str
    mode: str  # full | small | short (selfrss --seconds under an hour)
    what: str  # what exactly is measured, in words
    started: str = ""
    wall_s: float = 0.0
    setup: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)
    ratios: dict[str, float | None] = field(default_factory=dict)
    goals: list[Goal] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    reading: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    profile: dict[str, Any] | None = None
    host: dict[str, Any] = field(default_factory=dict)  # what else the machine was doing
    git_commit: str | None = None  # the commit this benchmark ran at
    tree_clean: bool | None = None  # whether the work tree had no uncommitted change

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "git_commit": self.git_commit,
            "tree_clean": self.tree_clean,
            "title": self.title,
            "mode": self.mode,
            "what": self.what,
            "started": self.started,
            "wall_s": round(self.wall_s, 1),
            "setup": self.setup,
            "raw": self.raw,
            "ratios": self.ratios,
            "goals": [g.as_dict() for g in self.goals],
            "all_goals_met": all_met(self.goals),
            "tables": [t.as_dict() for t in self.tables],
            "reading": self.reading,
            "notes": self.notes,
            "profile": self.profile,
            "host": self.host,
        }


def all_met(goals: list[Goal]) -> bool | None:
    states = [g.passed for g in goals]
    if not states or any(s is None for s in states):
        return None if not any(s is False for s in states) else False
    return all(states)


def _clean(value: Any) -> Any:
    """JSON without NaN/inf (they become null) and with rounded floats."""
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return round(value, 6)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def load_results(out_dir: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads((out_dir / RESULTS_JSON).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("schema") == SCHEMA else None


def write_results(
    out_dir: Path,
    results: list[BenchResult],
    machine: dict[str, Any],
    command: str,
    *,
    merge: bool = True,
) -> Path:
    """Write (or merge into) ``results.json``; returns its path.

    A benchmark run alone replaces its own entry and keeps the others, when the
    earlier file came from the same machine (same CPU model and core count).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    old = load_results(out_dir) if merge else None
    benches: dict[str, Any] = {}
    if old is not None and _same_machine(old.get("machine", {}), machine):
        benches = dict(old.get("benchmarks", {}))
    for r in results:
        entry = r.as_dict()
        entry["command"] = command
        benches[r.name] = entry
    ordered = {k: benches[k] for k in ORDER if k in benches}
    ordered.update({k: v for k, v in benches.items() if k not in ordered})
    doc = {
        "schema": SCHEMA,
        "generated": machine.get("date"),
        "machine": machine,
        "benchmarks": ordered,
        "summary": summary(ordered),
        "goals": goals_by_id(ordered),
    }
    path = out_dir / RESULTS_JSON
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_clean(doc), indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


def _same_machine(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.get("cpu_model") == b.get("cpu_model") and a.get("cores") == b.get("cores")


def summary(benches: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, entry in benches.items():
        for g in entry.get("goals", []):
            rows.append(
                {
                    "id": g.get("id", ""),
                    "benchmark": name,
                    "mode": entry.get("mode"),
                    "goal": g["name"],
                    "value": g["value"],
                    "op": g["op"],
                    "target": g["target"],
                    "unit": g.get("unit", ""),
                    "passed": g["passed"],
                }
            )
    return rows


def goals_by_id(benches: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every goal of :data:`GOALS` by id: the benchmark's figure, or not measured and why."""
    out: dict[str, dict[str, Any]] = {}
    for gid, spec in GOALS.items():
        entry = benches.get(spec.bench) or {}
        found = next((g for g in entry.get("goals", []) if g.get("id") == gid), None)
        if found is None:
            if not entry:
                why = f"the {spec.bench} benchmark has not run"
                why += f" ({spec.cost})" if spec.cost else ""
            elif entry.get("mode") != "full":
                why = f"the {spec.bench} benchmark ran in {entry.get('mode')} mode only"
            else:
                why = f"the {spec.bench} benchmark did not measure it"
            found = {
                "value": None,
                "passed": None,
                "reason": why,
            }
        out[gid] = {
            "benchmark": spec.bench,
            "figure": spec.figure,
            "value": found.get("value"),
            "goal": f"{spec.op} {spec.target:g}",
            "unit": spec.unit,
            "passed": found.get("passed"),
            "reason": found.get("reason", ""),
            "mode": entry.get("mode"),
            "git_commit": entry.get("git_commit"),
            "tree_clean": entry.get("tree_clean"),
        }
    return out


# --- Markdown ----------------------------------------------------------------------


def fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "n/a"
        a = abs(value)
        if a >= 1000:
            return f"{value:,.0f}"
        if a >= 100:
            return f"{value:.1f}"
        if a >= 1:
            return f"{value:.2f}"
        if a == 0:
            return "0"
        return f"{value:.3g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def verdict(passed: bool | None, value: Any = None) -> str:
    """Met, missed, not judged (measured, but its setup did not hold) or not measured."""
    if passed is None and value is not None:
        return "not judged"
    return {True: "**met**", False: "**MISSED**", None: "not measured"}[passed]


def _table(columns: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return out


def render_markdown(doc: dict[str, Any]) -> str:
    m = doc.get("machine", {})
    pk = m.get("packages", {})
    lines = [
        "# memstress benchmarks",
        "",
        "Generated by `make bench` (`python -m bench`) from `bench/results.json`; "
        "rebuild with `python -m bench render`. Speed and accuracy are ratios taken "
        "side by side in one run on one machine, never absolute timings to compare "
        "across machines.",
        "",
        f"Machine: {m.get('cores')} cores ({m.get('cpu_model')}), "
        f"{(m.get('memory_bytes') or 0) / 2**30:.1f} GiB RAM, {m.get('os')}; "
        f"Python {m.get('python')}, locust {pk.get('locust')}, gevent {pk.get('gevent')}, "
        f"fastapi {pk.get('fastapi')}, uvicorn {pk.get('uvicorn')}, numpy {pk.get('numpy')}, "
        f"scipy {pk.get('scipy')}, pandas {pk.get('pandas')}; wrk: {m.get('wrk') or 'absent'}; "
        f"commit {m.get('git_commit')}; {m.get('date')}.",
        "",
        "## What ran",
        "",
    ]
    lines += _table(
        [
            "benchmark",
            "command",
            "commit (tree)",
            "mode",
            "started (UTC)",
            "wall s",
            "host CPU busy %",
            "of it others' %",
        ],
        [
            [
                name,
                f"`{(b.get('command') or '').strip()}`",
                f"{b.get('git_commit')} ({'clean' if b.get('tree_clean') else 'dirty'})",
                b.get("mode"),
                b.get("started"),
                b.get("wall_s"),
                (b.get("host") or {}).get("busy_pct"),
                (b.get("host") or {}).get("others_pct"),
            ]
            for name, b in doc.get("benchmarks", {}).items()
        ],
    )
    lines += [
        "",
        'The machine is shared: "others\'" is CPU used by processes the benchmark did not '
        "start, over its whole run. Each benchmark compares its two sides back to back so "
        "both see much the same neighbours.",
        "",
        "## Goals",
        "",
    ]
    rows = [
        [
            f"`{gid}`",
            g["benchmark"] + ("" if g["mode"] in ("full", None) else f" ({g['mode']})"),
            g["figure"],
            f"{fmt(g['value'])} {g['unit']}".strip(),
            f"{g['goal']} {g['unit']}".strip(),
            verdict(g["passed"], g["value"]),
            g.get("reason") or "",
            (g.get("git_commit") or "") + (" (dirty)" if g.get("tree_clean") is False else ""),
        ]
        for gid, g in (doc.get("goals") or {}).items()
    ]
    lines += _table(
        [
            "id",
            "benchmark",
            "figure",
            "measured",
            "goal",
            "",
            "why not met / not measured",
            "commit",
        ],
        rows,
    )
    for name, b in doc.get("benchmarks", {}).items():
        lines += ["", f"## {b['title']} (`python -m bench {name}`)", ""]
        mode = b["mode"]
        ran = f"Mode: {mode}" + (" (a smoke run: not a measurement)" if mode == "small" else "")
        lines += [f"{ran}; started {b['started']}, {fmt(b['wall_s'])} s wall.{_host(b)}", ""]
        lines += ["**What it measures.** " + b["what"], ""]
        for t in b.get("tables", []):
            lines += [f"*{t['title']}*", ""]
            lines += _table(t["columns"], t["rows"])
            lines.append("")
        if b.get("goals"):
            lines += ["*Goals*", ""]
            lines += _table(
                ["goal", "measured", "target", ""],
                [
                    [
                        g["name"],
                        f"{fmt(g['value'])} {g.get('unit', '')}".strip(),
                        f"{g['op']} {fmt(g['target'])} {g.get('unit', '')}".strip(),
                        verdict(g["passed"], g["value"]),
                    ]
                    for g in b["goals"]
                ],
            )
            lines.append("")
        if b.get("reading"):
            lines += ["**Reading.** " + " ".join(b["reading"]), ""]
        prof = b.get("profile")
        if prof:
            lines += [f"*Profile ({prof.get('tool')}): {prof.get('of')}*", ""]
            lines += ["```", *prof.get("top", []), "```", ""]
        for n in b.get("notes", []):
            lines.append(f"- {n}")
        if b.get("notes"):
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _host(b: dict[str, Any]) -> str:
    h = b.get("host") or {}
    if h.get("busy_pct") is None:
        return ""
    return (
        f" The host's CPUs were {fmt(h['busy_pct'])}% busy meanwhile, "
        f"{fmt(h.get('others_pct'))}% of it by processes this benchmark did not start "
        f"(load average {fmt(h.get('loadavg_start'))} at the start)."
    )


def write_markdown(out_dir: Path) -> Path:
    doc = load_results(out_dir)
    if doc is None:
        raise FileNotFoundError(f"{out_dir / RESULTS_JSON}: no results to render")
    path = out_dir / RESULTS_MD
    path.write_text(render_markdown(doc), encoding="utf-8")
    return path
