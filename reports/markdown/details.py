"""The figures in the Markdown report: "Detailed results" (every figure with its
definition, the memory sources' own figures, per stage) and "Performance analysis"
(latency by request, requests and failures, the scores term by term).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from memstress.reports.fmt import duration, grade_word, num, table, with_unit

MEMORY_SECTIONS = ("memory", "optimization", "leak", "pressure", "recovery", "cost")
"""Metric sections a Locust CSV export has no figures for."""


def _get(doc: dict[str, Any], dotted: str) -> Any:
    cur: Any = doc
    for part in dotted.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


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
        if key.startswith("vectors.") and not (doc["metrics"].get("vectors") or {}).get("measured"):
            continue  # no stored-vector counts: not a vector run on a counting adapter
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
            f"{g['label']}: {grade_word(g['grade'])}"
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


def detailed_results(doc: dict[str, Any], charts: Sequence[str]) -> list[str]:
    """The "Detailed results" section: every figure with its definition, per stage,
    the memory charts."""
    m = doc["metrics"]
    out: list[str] = []
    add = out.append
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
    return out


def performance(doc: dict[str, Any], charts: Sequence[str]) -> list[str]:
    """The "Performance analysis" section: latency, requests and failures, the scores,
    their charts."""
    m = doc["metrics"]
    out: list[str] = []
    add = out.append
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
    return out
