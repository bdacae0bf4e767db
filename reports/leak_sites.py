"""Where the memory went: the allocation capture and the growth by kind of memory.

Aggregate (:func:`where_memory_went`, from the run folder's ``leak_capture.json``,
``leak_sites.csv`` and the ``smaps_*`` sample columns) into plain dataclasses;
render (:func:`render`) from the results document's ``where_memory_went``
section, so a report rebuilt from the JSON says the same.

The capture is compared with the RSS slope over the same window (Theil-Sen
over the samples taken inside it): the bytes retained per minute and the
RSS slope agree when their ratio lies within :data:`AGREE`. When they do not,
the report says so, with the likely reasons.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from memstress.common.units import MB
from memstress.reports.fmt import num, table, utc, with_unit

AGREE = (0.5, 2.0)
"""Retained MB/min over RSS MB/min within this range: the capture explains the growth."""
FLAT_MB_MIN = 0.5
"""Below this both ways, the window saw no growth to explain."""
KINDS = (
    ("anon", "anonymous memory (heap)"),
    ("file", "file mappings"),
    ("shmem", "shared memory"),
)
DOMINANT_SHARE = 0.6
SHOWN_SITES = 10


@dataclass
class Site:
    rank: int
    kind: str  # heap | mapping
    function: str
    location: str
    frames: str
    retained_mb: float
    retained_mb_per_min: float | None
    allocations: int
    share_pct: float | None


@dataclass
class Capture:
    status: str  # captured | unavailable | failed | not_triggered
    reason: str
    trigger: str
    started: float | None  # Unix seconds, memray's clock
    ended: float | None
    window_s: float | None
    retained_mb: float | None  # heap
    retained_mb_per_min: float | None
    mapped_mb: float | None  # mmap: resident only as far as touched
    rss_slope_mb_min: float | None  # Theil-Sen over the samples inside the window
    agreement: str | None  # agree | disagree | flat; None without a slope
    agreement_note: str
    native: bool
    attach_s: float | None
    detach_s: float | None
    sites: list[Site] = field(default_factory=list)


@dataclass
class Kinds:
    """Growth of the target's resident memory by kind, first to last sample (MB)."""

    anon_mb: float | None
    file_mb: float | None
    shmem_mb: float | None
    swap_mb: float | None
    dominant: str | None  # a label of KINDS, "mixed", or None (no growth / no data)
    note: str


@dataclass
class WhereMemoryWent:
    capture: Capture | None
    kinds: Kinds | None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _f(v: Any) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _sites(path: Path) -> list[Site]:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError:
        return []
    out: list[Site] = []
    for r in rows:
        size = _f(r.get("retained_bytes"))
        if size is None:
            continue
        out.append(
            Site(
                rank=int(_f(r.get("rank")) or len(out) + 1),
                kind=r.get("kind") or "heap",
                function=r.get("function") or "",
                location=r.get("location") or "",
                frames=r.get("frames") or "",
                retained_mb=size / MB,
                retained_mb_per_min=_f(r.get("retained_mb_per_min")),
                allocations=int(_f(r.get("allocations")) or 0),
                share_pct=_f(r.get("share_pct")),
            )
        )
    return out


def _window_slope(samples: pd.DataFrame, start: float, end: float) -> float | None:
    """RSS MB/min over the samples taken inside [start, end] (Theil-Sen; 3 samples or more)."""
    if samples.empty or "rss_bytes" not in samples:
        return None
    inside = samples[(samples["time"] >= start) & (samples["time"] <= end)]
    inside = inside[inside["rss_bytes"].notna()]
    if len(inside) < 3:
        return None
    minutes = (inside["time"].to_numpy(float) - start) / 60
    mb = inside["rss_bytes"].to_numpy(float) / MB
    if np.ptp(minutes) <= 0:
        return None
    return float(stats.theilslopes(mb, minutes).slope)


def _agreement(retained: float | None, rss: float | None) -> tuple[str | None, str]:
    if retained is None or rss is None:
        return None, "no RSS samples inside the window to compare with"
    if abs(rss) < FLAT_MB_MIN and retained < FLAT_MB_MIN:
        return "flat", "RSS was flat in the window and little was retained: no leak to name here"
    ratio = retained / rss if rss > 0 else math.inf
    if AGREE[0] <= ratio <= AGREE[1]:
        return "agree", (
            f"the sites retained {num(retained)} MB/min, RSS rose {num(rss)} MB/min: "
            "the capture accounts for the growth"
        )
    if ratio < AGREE[0]:
        return "disagree", (
            f"the sites retained {num(retained)} MB/min but RSS rose {num(rss)} MB/min: "
            "most of the growth was not allocated through the Python allocator APIs memray "
            "saw in the window (native code without --profile-native, memory mapped directly, "
            "allocator fragmentation, or growth outside the window)"
        )
    return "disagree", (
        f"the sites retained {num(retained)} MB/min but RSS rose only {num(rss)} MB/min: "
        "the retained bytes reused memory the process already had (freed pages, arenas), "
        "or were not yet touched"
    )


def _capture(run_dir: Path, samples: pd.DataFrame) -> Capture | None:
    doc = _read_json(run_dir / "leak_capture.json")
    if doc is None:
        return None
    status = str(doc.get("status") or "unknown")
    window = _f(doc.get("window_s"))
    retained_b = _f(doc.get("retained_bytes"))
    retained = retained_b / MB if retained_b is not None else None
    rate = retained / (window / 60) if retained is not None and window else None
    mapped_b = _f(doc.get("mapped_bytes"))
    slope: float | None = None
    agreement, note = None, ""
    sites: list[Site] = []
    start, end = _f(doc.get("started")), _f(doc.get("ended"))
    if status == "captured":
        if start is not None and end is not None:
            slope = _window_slope(samples, start, end)
        agreement, note = _agreement(rate, slope)
        sites = _sites(run_dir / "leak_sites.csv")
    return Capture(
        status=status,
        reason=str(doc.get("reason") or ""),
        trigger=str(doc.get("trigger") or ""),
        started=start,
        ended=end,
        window_s=window,
        retained_mb=retained,
        retained_mb_per_min=rate,
        mapped_mb=mapped_b / MB if mapped_b is not None else None,
        rss_slope_mb_min=slope,
        agreement=agreement,
        agreement_note=note,
        native=bool(doc.get("native")),
        attach_s=_f(doc.get("attach_s")),
        detach_s=_f(doc.get("detach_s")),
        sites=sites,
    )


def _growth(samples: pd.DataFrame, column: str) -> float | None:
    if column not in samples:
        return None
    s = samples[column].dropna()
    if len(s) < 2:
        return None
    return float(s.iloc[-1] - s.iloc[0]) / MB


def kinds(samples: pd.DataFrame) -> Kinds | None:
    """Growth by kind of memory over the run; None when no sample has the smaps columns."""
    growth = {k: _growth(samples, f"smaps_{k}_bytes") for k, _ in KINDS}
    swap = _growth(samples, "smaps_swap_bytes")
    if all(v is None for v in growth.values()):
        return None
    rising = {k: v for k, v in growth.items() if v is not None and v > 0}
    total = sum(rising.values())
    dominant: str | None = None
    if total < FLAT_MB_MIN:
        note = f"resident memory by kind grew {num(total)} MB in all: no growth to attribute"
    else:
        k, v = max(rising.items(), key=lambda kv: kv[1])
        label = dict(KINDS)[k]
        if v / total >= DOMINANT_SHARE:
            dominant = label
            note = f"the growth is {label}: {num(v)} of {num(total)} MB"
        else:
            dominant = "mixed"
            parts = ", ".join(f"{dict(KINDS)[n]} {num(x)} MB" for n, x in rising.items())
            note = f"the growth is mixed: {parts}"
    return Kinds(growth["anon"], growth["file"], growth["shmem"], swap, dominant, note)


def where_memory_went(run_dir: Path, samples: pd.DataFrame) -> WhereMemoryWent | None:
    """The section's data, or None when the run has neither a capture nor smaps samples."""
    run_dir = Path(run_dir)
    capture = _capture(run_dir, samples) if run_dir.is_dir() else None
    by_kind = kinds(samples)
    if capture is None and by_kind is None:
        return None
    return WhereMemoryWent(capture, by_kind)


# --- render -----------------------------------------------------------------------------


def render(section: dict[str, Any] | None) -> list[str]:
    """Markdown lines of "Where the memory went" (nothing when the section is absent)."""
    if not section:
        return []
    out = ["\n## Where the memory went\n"]
    cap = section.get("capture")
    if cap is not None:
        out += _render_capture(cap)
    k = section.get("kinds")
    if k is not None:
        out.append(
            f"\nBy kind of resident memory (/proc/PID/smaps_rollup, first to last sample): "
            f"{k['note']}. Anonymous {with_unit(k['anon_mb'], 'MB')}, file-backed "
            f"{with_unit(k['file_mb'], 'MB')}, shared {with_unit(k['shmem_mb'], 'MB')}, "
            f"swapped {with_unit(k['swap_mb'], 'MB')}."
        )
    return out


def _render_capture(cap: dict[str, Any]) -> list[str]:
    if cap["status"] != "captured":
        why = cap["reason"] or cap["status"]
        return [f"Allocation sites: {why}."]
    out = [
        f"Allocations captured with memray for {with_unit(cap['window_s'], 's')}, "
        f"{utc(cap['started'])} to {utc(cap['ended'])} "
        f"({cap['trigger'] or 'on request'}"
        + ("; native frames" if cap["native"] else "")
        + f"): {with_unit(cap['retained_mb'], 'MB')} allocated in the window were still "
        f"held on the heap at its end ({with_unit(cap['retained_mb_per_min'], 'MB/min')}). "
        f"RSS slope over the same window: {with_unit(cap['rss_slope_mb_min'], 'MB/min')}"
        + (f"; {cap['agreement_note']}." if cap["agreement_note"] else ".")
    ]
    mappings = [s for s in cap["sites"] if s["kind"] == "mapping"]
    if mappings:
        named = "; ".join(
            f"`{s['function']}`{' ' + s['location'] if s['location'] else ''} "
            f"{with_unit(s['retained_mb'], 'MB')} "
            f"({num(s['allocations'])} mappings)"
            for s in mappings[:3]
        )
        out.append(
            f"\nApart from the heap, {with_unit(cap['mapped_mb'], 'MB')} were mapped (mmap) in "
            f"the window and still mapped at its end, which count in RSS only as far as they "
            f"are touched (libraries map buffers once and keep them): {named}."
        )
    if cap["agreement"] == "disagree":
        out[-1] = "**The capture and RSS disagree.** " + out[-1]
    out.append(
        "\nThe target runs slower while tracked, and gdb stops it for part of the attach "
        f"({with_unit(cap['attach_s'], 's')}) and the detach ({with_unit(cap['detach_s'], 's')}): "
        "response times around the window include that."
    )
    if cap["reason"]:
        out.append(f"\nNote: {cap['reason']}.")
    sites = [s for s in cap["sites"] if s["kind"] == "heap"][:SHOWN_SITES]
    if not sites:
        return out
    out.append("")
    out.append(
        table(
            ["#", "site", "retained", "MB/min", "share", "allocations", "first frames"],
            [
                [
                    str(s["rank"]),
                    f"`{s['function']}` {s['location']}".strip(),
                    with_unit(s["retained_mb"], "MB"),
                    num(s["retained_mb_per_min"]),
                    with_unit(s["share_pct"], "%"),
                    num(s["allocations"]),
                    s["frames"],
                ]
                for s in sites
            ],
        )
    )
    top = sites[0]
    out.append(
        f"\nTop site: `{top['function']}` at {top['location'] or 'n/a'}, "
        f"{with_unit(top['share_pct'], '%')} of the heap bytes retained. All sites: "
        "leak_sites.csv; "
        "the capture itself: leak_capture.memray (memray flamegraph --leaks reads it)."
    )
    return out
