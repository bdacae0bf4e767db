"""The Markdown report of a session: its scenarios side by side, then each one's grades."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from memstress.reports.fmt import grade_word, table

SESSION_COLUMNS = (
    ("cycle_mean_s", "cycle mean s"),
    ("cycle_p95_s", "cycle p95 s"),
    ("memory_growth_mb", "growth MB"),
    ("peak_mb", "peak MB"),
    ("error_rate_pct", "error %"),
    ("shed", "shed"),
    ("leak_slope_mb_min", "leak MB/min"),
    ("pressure_peak", "peak pressure %"),
    ("recovery_time_s", "recovery s"),
    ("stability", "stability"),
    ("health", "health"),
    ("business_value_usd", "value $"),
)


def render_session(doc: dict[str, Any]) -> str:
    """The Markdown report of a session: its scenarios side by side."""
    out: list[str] = []
    add = out.append
    add(f"# Memory stress test session: {Path(doc['source']).name}\n")
    if doc["partial"]:
        add(
            "> **PARTIAL RESULTS.** "
            + "; ".join(doc["missing_inputs"] or ["a run is partial"])
            + "\n"
        )
    word = "PASSED" if doc["verdict"]["passed"] else "FAILED"
    add(
        f"**Verdict: {word}** (exit code {doc['exit_code']}; the worst of the runs). "
        f"{doc['verdict']['reason']}.\n"
    )
    add(f"- **Overall grade:** {grade_word(doc['overall_grade'])}")
    add(f"- **Runs:** {len(doc['runs'])}\n")
    add("## Scenarios compared\n")
    add(
        table(
            ["scenario", "grade", "exit", "ended because", *[c[1] for c in SESSION_COLUMNS]],
            [
                [
                    f"[{r['scenario']}]({r['report']})" if r.get("report") else r["scenario"],
                    grade_word(r["overall_grade"]) + (" (partial)" if r["partial"] else ""),
                    r["exit_code"],
                    r["stop_reason"],
                    *[r["summary"].get(k) for k, _ in SESSION_COLUMNS],
                ]
                for r in doc["runs"]
            ],
        )
    )
    add("\n## Grades per scenario\n")
    for r in doc["runs"]:
        add(f"### {r['scenario']}\n")
        add(
            table(
                ["metric", "grade", "why"],
                [[g["label"], grade_word(g["grade"]), g["message"]] for g in r["grades"]],
            )
        )
        if r["recommendations"]:
            add("\n" + "\n".join(f"- {x}" for x in r["recommendations"]))
        add("")
    return "\n".join(out)
