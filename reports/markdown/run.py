"""The Markdown report of one run, section by section, from its results document.

:func:`render_run` reads only ``stress_test_results.json``'s document, so the report
can be rebuilt from the JSON without a new run. The sections, in order: the run,
the executive summary and grades, the scenario's checks, the leak
(:mod:`reports.markdown.leak`), the figures (:mod:`reports.markdown.details`), where
the memory went (:mod:`reports.leak_sites`), limits, recommendations, business
impact, degraded monitor sources and the inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from memstress.reports.fmt import duration, grade_word, money, num, table, utc, with_unit
from memstress.reports.leak_sites import render as render_where_memory_went
from memstress.reports.markdown.details import detailed_results, performance
from memstress.reports.markdown.leak import leak_line, leak_section
from memstress.reports.markdown.vectors import vector_lines


def render_run(
    doc: dict[str, Any], charts: Sequence[str] = (), chart_errors: Sequence[str] = ()
) -> str:
    """The Markdown report of one run's results document; ``charts`` are paths relative to it."""
    out = [*_head(doc), *_summary(doc), *_checks(doc)]
    if doc.get("source_kind") != "locust":
        out += ["\n## Memory leak\n", leak_section(doc["metrics"]["leak"])]
    out += detailed_results(doc, charts)
    out += render_where_memory_went(doc.get("where_memory_went"))
    out += performance(doc, charts)
    out += [*_limits_and_recommendations(doc), *_business(doc), *_degraded(doc)]
    out += [*_inputs(doc, chart_errors), ""]
    return "\n".join(out)


def _verdict_line(doc: dict[str, Any]) -> str:
    """The verdict in one line: passed or failed, the exit code, and why."""
    v = doc["verdict"]
    word = "PASSED" if v["passed"] else "FAILED"
    if doc["exit_code"] != v["exit_code"]:
        # A stop code recorded by the run decides the exit code, not the grades.
        return (
            f"**Exit code {doc['exit_code']}: {doc['stop']['reason']}.** The verdict on "
            f"what was measured: {word.lower()} (fails on grades below "
            f"{grade_word(v['fail_on'])}): {v['reason']}."
        )
    return (
        f"**Verdict: {word}** (exit code {doc['exit_code']}; fails on grades below "
        f"{grade_word(v['fail_on'])}). {v['reason']}."
    )


def _remote_rows(run: dict[str, Any]) -> list[list[str]]:
    """Where the target was, and the opt-in that let a remote one be loaded."""
    if "remote_target" not in run:
        return []
    if not run["remote_target"]:
        return [["remote target", "no (loopback)"]]
    how = (
        "opted in by --allow-remote-target or safety.allow_remote_targets"
        if run.get("allow_remote_target")
        else "opt-in not recorded"
    )
    return [["remote target", f"yes ({how})"]]


def _head(doc: dict[str, Any]) -> list[str]:
    """The title, partial-results warnings and the run table."""
    run = doc["run"]
    m = doc["metrics"]
    out: list[str] = []
    add = out.append
    title = run.get("scenario", "run")
    add(f"# Memory stress test report: {title}\n")
    if doc["partial"]:
        add(
            "> **PARTIAL RESULTS.** "
            + (
                "Missing or unreadable inputs: " + "; ".join(doc["missing_inputs"]) + ". "
                if doc["missing_inputs"]
                else ""
            )
            + ("The run was interrupted. " if doc["interrupted"] else "")
            + "Figures that need the missing data are n/a.\n"
        )
    for u in doc.get("unavailable", []):
        add(f"> Unavailable: {u}.\n")
    if run.get("remote_target"):
        add(
            "> The target is on another machine: host memory, PSI and cgroup figures are "
            "this load generator's, not the target's host.\n"
        )
    add(
        table(
            ["run", "value"],
            [
                ["run id", str(run.get("run_id", "n/a"))],
                ["scenario", str(run.get("scenario", "n/a"))],
                ["host", str(run.get("host") or "n/a")],
                *_remote_rows(run),
                ["stress level", num(run.get("stress_level"))],
                ["started", utc(doc.get("started"))],
                ["ended", utc(doc.get("ended"))],
                ["duration", duration(m.get("duration_s"))],
                ["source", doc["source"]],
                ["config", str(doc["config"].get("source") or "n/a")],
            ],
        )
    )
    return out


def _summary(doc: dict[str, Any]) -> list[str]:
    """The "Executive summary" section: the verdict, the headline figures, the grades."""
    run = doc["run"]
    m = doc["metrics"]
    out: list[str] = []
    add = out.append
    add("\n## Executive summary\n")
    add(_verdict_line(doc) + "\n")
    add(f"- **Overall grade:** {grade_word(doc['overall_grade'])} (the worst of the grades below)")
    add(f"- **Why the run ended:** {doc['stop']['reason']}")
    st = doc["scores"]["stability"]["value"]
    he = doc["scores"]["health"]["value"]
    add(f"- **Stability score:** {num(st)} / 100; **system health:** {num(he)} / 100")
    add(f"- **Business value:** {money(doc['business_value']['total_usd'])}")
    ret = m["memory"]["returned_to_start"]
    if ret is not None:
        add(
            f"- **Target memory at the end:** {num(m['memory']['end_mb'])} MB vs "
            f"{num(m['memory']['start_mb'])} MB at the start: "
            + (
                "back within tolerance"
                if ret
                else f"NOT back within {num(m['memory']['tolerance_pct'])}%"
            )
        )
    if doc.get("source_kind") != "locust":
        add(f"- **Leak:** {leak_line(m['leak'])}")
    out += vector_lines(m)
    if run.get("purpose"):
        add(f"- **Purpose:** {run['purpose']}")
    add("")
    add(
        table(
            ["metric", "value", "grade", "why"],
            [
                [g["label"], with_unit(g["value"], g["unit"]), grade_word(g["grade"]), g["message"]]
                for g in doc["grades"]
            ],
        )
    )
    return out


def _checks(doc: dict[str, Any]) -> list[str]:
    """The "Checks" section: what the scenario expects, each judged."""
    out: list[str] = []
    add = out.append
    if doc.get("checks"):
        add("\n### Checks: what this scenario expects\n")
        add(
            "Each expectation judged from the run's figures (bounds and `required` from the "
            "config's `checks`). A failed required check fails the verdict.\n"
        )
        add(
            table(
                ["expectation", "required", "result", "figures"],
                [
                    [c["text"], "yes" if c["required"] else "no", c["status"].upper(), c["message"]]
                    for c in doc["checks"]
                ],
            )
        )
    return out


def _limits_and_recommendations(doc: dict[str, Any]) -> list[str]:
    """The "System limits found" and "Recommendations" sections."""
    out: list[str] = []
    add = out.append
    add("\n## System limits found\n")
    if doc["limits"]:
        add(
            table(
                ["limit", "value", "detail"],
                [[x["name"], x["value"], x["detail"]] for x in doc["limits"]],
            )
        )
    else:
        add("None could be established from the inputs.")

    # --- recommendations
    add("\n## Recommendations\n")
    add("\n".join(f"- {x}" for x in doc["recommendations"]))
    return out


def _business(doc: dict[str, Any]) -> list[str]:
    """The "Business impact" section, term by term."""
    out: list[str] = []
    add = out.append
    bv = doc["business_value"]
    add("\n## Business impact\n")
    add(f"Total: **{money(bv['total_usd'])}** (terms with missing inputs count 0).\n")
    add(
        table(
            ["term", "formula", "rate", "inputs", "value"],
            [
                [
                    t["name"],
                    t["formula"],
                    f"{num(t['rate'])} {t['rate_unit']}",
                    ", ".join(f"{k} = {num(v)}" for k, v in t["inputs"].items()),
                    money(t["value_usd"])
                    + (f" ({t['why_na']})" if t.get("why_na") and t["value_usd"] is None else ""),
                ]
                for t in bv["terms"]
            ],
        )
    )
    return out


def _degraded(doc: dict[str, Any]) -> list[str]:
    """The "Degraded monitor sources" section, when any source answered badly."""
    out: list[str] = []
    add = out.append
    if degraded := doc.get("degraded_sources"):
        add("\n## Degraded monitor sources\n")
        add("Their columns are empty while degraded; the other sources' figures stand.\n")
        add(
            table(
                [
                    "source",
                    "degraded for",
                    "spells",
                    "at the end",
                    "first reason",
                    "what came back",
                ],
                [
                    [
                        d["source"],
                        duration(d["degraded_s"]),
                        d["spells"],
                        "disabled"
                        if d["disabled"]
                        else "recovered"
                        if d["recovered"]
                        else "degraded",
                        d["reason"],
                        d["example"] or "nothing",
                    ]
                    for d in degraded
                ],
            )
        )
    return out


def _inputs(doc: dict[str, Any], chart_errors: Sequence[str]) -> list[str]:
    """The "Inputs" section: what was missing or repaired, the stop events, charts not drawn."""
    out: list[str] = []
    add = out.append
    add("\n## Inputs\n")
    if doc["missing_inputs"]:
        add("Missing or unreadable: " + "; ".join(doc["missing_inputs"]) + ".")
    else:
        add("Every required input was read.")
    if doc["notes"]:
        add("\nRepairs while reading: " + "; ".join(doc["notes"]) + ".")
    if doc["stop"]["events"]:
        add("\nStop events: " + "; ".join(doc["stop"]["events"]) + ".")
    if chart_errors:
        add("\nCharts that could not be drawn: " + "; ".join(chart_errors) + ".")
    return out
