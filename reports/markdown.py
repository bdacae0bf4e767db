"""Render: ``stress_test_report.md`` from a results document (never from the raw run data).

Because the report reads only the JSON, ``python -m memstress.reports build`` or any
later tool can rebuild it without a new run.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from memstress.reports.fmt import duration, money, num, utc, with_unit
from memstress.reports.leak_sites import render as render_where_memory_went

MEMORY_SECTIONS = ("memory", "optimization", "leak", "pressure", "recovery", "cost")


def _cell(v: Any) -> str:
    text = v if isinstance(v, str) else num(v)
    return text.replace("|", "\\|").replace("\n", " ")


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _get(doc: dict[str, Any], dotted: str) -> Any:
    cur: Any = doc
    for part in dotted.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def _grade(g: str) -> str:
    return g.capitalize() if g != "n/a" else "n/a"


def _verdict_line(doc: dict[str, Any]) -> str:
    v = doc["verdict"]
    word = "PASSED" if v["passed"] else "FAILED"
    if doc["exit_code"] != v["exit_code"]:
        # A stop code recorded by the run decides the exit code, not the grades.
        return (
            f"**Exit code {doc['exit_code']}: {doc['stop']['reason']}.** The verdict on "
            f"what was measured: {word.lower()} (fails on grades below "
            f"{_grade(v['fail_on'])}): {v['reason']}."
        )
    return (
        f"**Verdict: {word}** (exit code {doc['exit_code']}; fails on grades below "
        f"{_grade(v['fail_on'])}). {v['reason']}."
    )


def _leak_line(lk: dict[str, Any]) -> str:
    """The leak verdict in one line, from the detector the monitor ran."""
    v = lk.get("verdict", "not judged")
    if v == "leak":
        ci = (
            f" (CI {num(lk['ci_low_mb_min'])}–{num(lk['ci_high_mb_min'])})"
            if lk.get("ci_low_mb_min") is not None
            else ""
        )
        where = "" if lk.get("series") in (None, "memory") else f" in tier {lk['series']}"
        own = lk.get("injected_start_s") is not None
        return (
            f"**LEAK**{where} {num(lk['slope_mb_min'])} MB/min{ci}, called at "
            f"{duration(lk['called_at_s'])}"
            + (" and still held at the end of the run" if lk.get("held_at_end") else "")
            + (" (the leak the scenario injected)" if own else "")
        )
    if v == "no leak":
        ended = [e for e in lk.get("episodes", []) if e["kind"] != "step"]
        return "no leak at the end of the run" + (
            f" ({len(ended)} growth episode(s) called and then ended: see below)" if ended else ""
        )
    return f"not judged ({lk.get('reason') or 'no data'})"


def _leak_section(lk: dict[str, Any]) -> str:
    out = [
        f"Verdict: {_leak_line(lk)}. {lk.get('reason') or ''}. Source: "
        f"{lk.get('basis') or 'n/a'}. One detector judges the run, online (the monitor) "
        "or replayed over the samples; nothing else here calls a leak.\n"
    ]
    if lk.get("tiers"):
        out.append("Tiers past their limits: " + "; ".join(lk["tiers"]) + ".\n")
    if lk.get("tiers_note"):
        out.append(f"Accounted tiers: {lk['tiers_note']}.\n")
    if lk.get("injected_start_s") is not None:
        delay = lk.get("detection_delay_s")
        when = "never" if delay is None else f"after {duration(delay)}"
        out.append(
            f"The scenario injects a leak from {duration(lk['injected_start_s'])}: detected "
            f"{when}; false alarms before it: {lk.get('false_alarms', 0)}.\n"
        )
    eps = lk.get("episodes") or []
    if eps:
        out.append(
            "Growth episodes (trend: a leak called; plateau: growth that stopped; step: "
            "a one-time level shift):\n"
        )
        out.append(
            table(
                [
                    "kind",
                    "series",
                    "called at",
                    "ended at",
                    "slope MB/min",
                    "CI",
                    "step MB",
                    "what",
                ],
                [
                    [
                        e["kind"] + (f" ({e['ended']})" if e["ended"] else ""),
                        e["series"],
                        duration(e["called_at_s"]),
                        duration(e["cleared_at_s"]) if e["cleared_at_s"] is not None else "held",
                        e["slope_mb_min"],
                        f"{num(e['ci_low_mb_min'])}–{num(e['ci_high_mb_min'])}"
                        if e["ci_low_mb_min"] is not None
                        else "-",
                        e["step_mb"],
                        e["reason"]
                        + (" (before injection: false alarm)" if e["before_injection"] else ""),
                    ]
                    for e in eps
                ],
            )
        )
    if lk.get("whole_run_slope_mb_min") is not None:
        out.append(
            f"\nWhole-run slope, for context only (no score, grade or verdict uses it): "
            f"{num(lk['whole_run_slope_mb_min'])} MB/min."
        )
    return "\n".join(out)


def _definition_rows(doc: dict[str, Any]) -> list[list[str]]:
    rows = []
    defs: dict[str, dict[str, str]] = doc.get("definitions", {})
    no_memory = doc.get("source_kind") == "locust"
    no_cycles = not (doc["metrics"].get("cycle") or {}).get("count")
    for key, d in defs.items():
        if no_memory and key.split(".")[0] in MEMORY_SECTIONS:
            continue
        if no_cycles and key.startswith("cycle."):
            continue  # the run sent no management cycles: no cycle figures at all
        value = _get(doc["metrics"], key)
        if isinstance(value, dict | list):
            continue
        shown = with_unit(value, d["unit"])
        if key == "recovery.recovery_time_s" and value is None:
            rec = doc["metrics"]["recovery"]
            if rec["recovered"] is False:
                shown = "not recovered" + (f" ({rec['note']})" if rec.get("note") else "")
            elif rec.get("note", "").startswith("not judged"):
                shown = rec["note"]
            else:
                shown = "n/a" + (f" ({rec['note']})" if rec.get("note") else "")
        rows.append([d["label"], shown, d["definition"]])
    return rows


def _score_rows(score: dict[str, Any]) -> list[list[str]]:
    return [
        [
            t["name"],
            t["rule"],
            with_unit(t["input"], t["unit"]) if t["input"] is not None else "n/a (no data)",
            f"-{num(t['penalty'])}" if t["penalty"] else "0",
            num(t["max_penalty"]),
        ]
        for t in score["terms"]
    ]


def _stage_rows(doc: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for s in doc["stages"]:
        grades = ", ".join(
            f"{g['label']}: {_grade(g['grade'])}"
            for g in s.get("grades", [])
            if g["grade"] != "n/a"
        )
        rows.append(
            [
                f"{s['index']} {s['name']}" + (" (leak)" if s["leak"] else ""),
                s["phase"],
                duration(s["start_s"]),
                duration(s["duration_s"]),
                s["users"],
                s["growth_mb"],
                s["peak_mb"],
                s["pressure_peak"],
                s["leak_slope_mb_min"],
                s["requests"],
                s["error_rate_pct"],
                s["shed"],
                s["rps"],
                s["cycle"]["mean_s"],
                s["cycle"]["p95_s"],
                grades or "n/a",
            ]
        )
    return rows


def _charts(charts: Sequence[str], names: Sequence[str]) -> list[str]:
    out = []
    for c in charts:
        if Path(c).name in names:
            out.append(f"![{Path(c).stem}]({c})")
    return out


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


def render_run(
    doc: dict[str, Any], charts: Sequence[str] = (), chart_errors: Sequence[str] = ()
) -> str:
    """The Markdown report of one run's results document; ``charts`` are paths relative to it."""
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

    # --- executive summary
    add("\n## Executive summary\n")
    add(_verdict_line(doc) + "\n")
    add(f"- **Overall grade:** {_grade(doc['overall_grade'])} (the worst of the grades below)")
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
        add(f"- **Leak:** {_leak_line(m['leak'])}")
    if run.get("purpose"):
        add(f"- **Purpose:** {run['purpose']}")
    add("")
    add(
        table(
            ["metric", "value", "grade", "why"],
            [
                [g["label"], with_unit(g["value"], g["unit"]), _grade(g["grade"]), g["message"]]
                for g in doc["grades"]
            ],
        )
    )

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
    if doc.get("source_kind") != "locust":
        add("\n## Memory leak\n")
        add(_leak_section(m["leak"]))

    # --- detailed results
    add("\n## Detailed results\n")
    add(
        "Every figure with its definition. MB = 2^20 bytes; n/a = not computable from the "
        "inputs. The response-time grade is on "
        f"`{m.get('latency_basis', 'all requests')}`.\n"
    )
    add(table(["metric", "value", "definition"], _definition_rows(doc)))
    cost = m.get("cost", {})
    bases = [
        f"{label}: {cost[key]}"
        for key, label in (("vector_basis", "per stored vector"), ("agent_basis", "per agent"))
        if cost.get(key)
    ]
    if bases:
        add("\nMemory cost bases: " + "; ".join(bases) + ".")
    if figures := m.get("source_figures"):
        add("\n### Memory source figures\n")
        add("Each registered source's own figures, as memory_samples.csv has them.\n")
        add(
            table(
                ["figure", "first", "last", "min", "max"],
                [
                    [f"`{f['column']}`", *(num(f[k]) for k in ("first", "last", "min", "max"))]
                    for f in figures
                ],
            )
        )
    if doc.get("source_kind") == "locust":
        add(
            "\nMemory, optimization, leak, pressure, recovery and cost figures: unavailable "
            "(a Locust CSV export has no memory samples)."
        )
    if doc["stages"]:
        cycles = bool((m.get("cycle") or {}).get("count"))
        add("\n### Per stage\n")
        add(
            "Cut by the stage times in stages.csv. Counts and means are exact"
            + (
                "; stage cycle percentiles are the median of Locust's rolling-window "
                "percentiles in the stage (approximate).\n"
                if cycles
                else ".\n"
            )
        )
        headers = [
            "stage",
            "phase",
            "start",
            "length",
            "users",
            "growth MB",
            "peak MB",
            "peak pressure %",
            "slope MB/min",
            "requests",
            "error %",
            "shed",
            "req/s",
            "cycle mean s",
            "cycle p95 s",
            "grades",
        ]
        rows = _stage_rows(doc)
        if not cycles:  # no management cycles: no cycle columns
            headers = headers[:13] + headers[15:]
            rows = [r[:13] + r[15:] for r in rows]
        add(table(headers, rows))
    if figures := _charts(charts, ["memory.png", "pressure.png"]):
        add("\n" + "\n".join(figures))
    out.extend(render_where_memory_went(doc.get("where_memory_went")))

    # --- performance analysis
    add("\n## Performance analysis\n")
    c = m.get("latency") or m["cycle"]
    by_name = m.get("latency_by_name") or []
    add(
        table(
            ["requests", "count", "mean", "p50", "p95", "p99", "max", "source"],
            [
                [
                    f"{m.get('latency_basis', 'all requests')} (graded)",
                    c["count"],
                    with_unit(c["mean_s"], "s"),
                    with_unit(c["p50_s"], "s"),
                    with_unit(c["p95_s"], "s"),
                    with_unit(c["p99_s"], "s"),
                    with_unit(c["max_s"], "s"),
                    c["source"],
                ],
                *[
                    [
                        n["name"]
                        if n["name"].startswith(f"{n['method']} ")
                        else f"{n['method']} {n['name']}",
                        n["latency"]["count"],
                        with_unit(n["latency"]["mean_s"], "s"),
                        with_unit(n["latency"]["p50_s"], "s"),
                        with_unit(n["latency"]["p95_s"], "s"),
                        with_unit(n["latency"]["p99_s"], "s"),
                        with_unit(n["latency"]["max_s"], "s"),
                        n["latency"]["source"],
                    ]
                    for n in by_name
                ],
            ],
        )
    )
    r = m["requests"]
    add(
        f"\n{num(r['requests'])} requests, {num(r['failures'])} errors "
        f"({with_unit(r['error_rate_pct'], '%')}), {num(r['shed'])} shed "
        f"({with_unit(r['shed_pct'], '%')}; not errors), {num(r['exceptions'])} user exceptions, "
        f"{num(r['rps'])} requests/s, peak {num(r['peak_users'])} users (source: {r['source']}).\n"
    )
    if r["top_failures"]:
        add("Most frequent failures:\n")
        add(
            table(
                ["method", "name", "error", "count"],
                [[f["method"], f["name"], f["error"], f["occurrences"]] for f in r["top_failures"]],
            )
        )
    for key, score in doc["scores"].items():
        add(f"\n### {key.capitalize()} score: {num(score['value'])} / 100\n")
        add(f"`{score['formula']}`; each penalty is clipped to its maximum.\n")
        add(table(["term", "rule", "input", "penalty", "max"], _score_rows(score)))
    if figures := _charts(charts, ["latency.png", "throughput.png", "workers.png"]):
        add("\n" + "\n".join(figures))

    # --- limits
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

    # --- business impact
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

    # --- monitor sources that answered badly
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

    # --- inputs
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
    add("")
    return "\n".join(out)


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
    add(f"- **Overall grade:** {_grade(doc['overall_grade'])}")
    add(f"- **Runs:** {len(doc['runs'])}\n")
    add("## Scenarios compared\n")
    add(
        table(
            ["scenario", "grade", "exit", "ended because", *[c[1] for c in SESSION_COLUMNS]],
            [
                [
                    f"[{r['scenario']}]({r['report']})" if r.get("report") else r["scenario"],
                    _grade(r["overall_grade"]) + (" (partial)" if r["partial"] else ""),
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
                [[g["label"], _grade(g["grade"]), g["message"]] for g in r["grades"]],
            )
        )
        if r["recommendations"]:
            add("\n" + "\n".join(f"- {x}" for x in r["recommendations"]))
        add("")
    return "\n".join(out)
