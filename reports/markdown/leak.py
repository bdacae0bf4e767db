"""The leak in the Markdown report: the one-line verdict and the "Memory leak" section.

Both read the results document's ``metrics.leak`` (from the detector the monitor ran,
or its replay over the samples: :mod:`reports.metrics.leak`).
"""

from __future__ import annotations

from typing import Any

from memstress.reports.fmt import duration, num, table


def leak_line(lk: dict[str, Any]) -> str:
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


def leak_section(lk: dict[str, Any]) -> str:
    """The section's body: the verdict, injected leak, growth episodes, whole-run slope."""
    out = [
        f"Verdict: {leak_line(lk)}. {lk.get('reason') or ''}. Source: "
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
