"""Monitor sources that answered badly during a run, and for how long, from events.csv.

The monitor writes ``source_degraded`` when a source starts failing,
``source_recovered`` when it answers well again and ``source_disabled`` when a
bug turned it off (see :mod:`monitors.sampler`). A spell still open at the end
of the run lasts until then.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pandas as pd

KINDS = ("source_degraded", "source_recovered", "source_disabled")


@dataclass
class DegradedSource:
    source: str
    degraded_s: float  # summed over its spells
    spells: int
    reason: str  # of the first spell
    example: str  # what came back then
    recovered: bool = False  # answering well at the end of the run
    disabled: bool = False  # a bug turned it off


def degraded_sources(events: pd.DataFrame, t_end: float) -> list[DegradedSource]:
    """One entry per source that was degraded or disabled, in name order."""
    found: dict[str, DegradedSource] = {}
    since: dict[str, float] = {}  # the open spell of each source
    rows = events[events["kind"].isin(KINDS)]
    for when, kind, text in zip(rows["time"], rows["kind"], rows["detail"], strict=True):
        detail = _detail(text)
        name = str(detail.get("source") or "")
        if not name or pd.isna(when):
            continue
        if kind == "source_recovered":
            if name in since:
                found[name].degraded_s += max(0.0, float(when) - since.pop(name))
                found[name].recovered = True
            continue
        entry = found.get(name)
        if entry is None:
            reason = str(detail.get("reason") or detail.get("error") or "")
            entry = found[name] = DegradedSource(
                name, 0.0, 0, reason, str(detail.get("example") or "")
            )
        if name not in since:
            entry.spells += 1
            since[name] = float(when)
        entry.recovered = False
        entry.disabled = entry.disabled or kind == "source_disabled"
    for name, start in since.items():
        found[name].degraded_s += max(0.0, t_end - start)
    return [found[n] for n in sorted(found)]


def as_json(sources: list[DegradedSource]) -> list[dict[str, Any]]:
    return [
        {
            "source": s.source,
            "degraded_s": round(s.degraded_s, 3),
            "spells": s.spells,
            "reason": s.reason,
            "example": s.example,
            "recovered": s.recovered,
            "disabled": s.disabled,
        }
        for s in sources
    ]


def _detail(text: Any) -> dict[str, Any]:
    try:
        detail = json.loads(str(text))
    except ValueError:
        return {}
    return detail if isinstance(detail, dict) else {}
