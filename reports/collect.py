"""Collect: read a run folder (or a bare Locust CSV export) into a :class:`RunData`.

Nothing here computes a metric. Every reader is tolerant: a missing, empty,
unreadable or half-written file becomes an empty frame with the expected
columns plus an :class:`InputStatus` saying what was wrong, so a killed run
still yields a (partial) report. A last CSV line without its newline is the
mark of a writer killed mid-row; it is dropped, never parsed as a short row.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from memstress.common.runfiles import EVENT_COLUMNS, SAMPLE_COLUMNS, STAGE_COLUMNS, WORKER_COLUMNS

PERCENTILE_COLUMNS = (
    "50%",
    "66%",
    "75%",
    "80%",
    "90%",
    "95%",
    "98%",
    "99%",
    "99.9%",
    "99.99%",
    "100%",
)
"""Locust's response-time percentile columns, in both its stats and history CSVs."""

LOCUST_STATS_COLUMNS = (
    "Type",
    "Name",
    "Request Count",
    "Failure Count",
    "Median Response Time",
    "Average Response Time",
    "Min Response Time",
    "Max Response Time",
    "Average Content Size",
    "Requests/s",
    "Failures/s",
    *PERCENTILE_COLUMNS,
)
LOCUST_HISTORY_COLUMNS = (
    "Timestamp",
    "User Count",
    "Type",
    "Name",
    "Requests/s",
    "Failures/s",
    *PERCENTILE_COLUMNS,
    "Total Request Count",
    "Total Failure Count",
    "Total Median Response Time",
    "Total Average Response Time",
    "Total Min Response Time",
    "Total Max Response Time",
    "Total Average Content Size",
)
LOCUST_FAILURES_COLUMNS = ("Method", "Name", "Error", "Occurrences", "First Seen", "Last Seen")
LOCUST_EXCEPTIONS_COLUMNS = ("Count", "Message", "Traceback", "Nodes")

SHED_TYPE = "SHED"
"""Locust request type the scenarios use for shed answers (429/503 with Retry-After)."""

CYCLE_REQUEST = "POST /memory/cycle"
"""Locust request name of the memory-management cycle."""

_TEXT_COLUMNS = frozenset(
    {
        "name",
        "params",
        "kind",
        "detail",
        "stage",
        "rss_source",
        "strategy",
        "leak_state",
        "worker_id",
        "Type",
        "Name",
        "Method",
        "Error",
        "First Seen",
        "Last Seen",
        "Message",
        "Traceback",
        "Nodes",
        "cgroup_events",
    }
)

RUN_MARKERS = (
    "run_meta.json",
    "stages.csv",
    "events.csv",
    "memory_samples.csv",
    "locust.json",
    "locust_stats.csv",
)
"""Files whose presence makes a folder a run folder."""


class ReportInputError(ValueError):
    """Bad input to the reports (no such folder, not a run folder, bad file), as one line
    naming what is wrong and what is valid."""


@dataclass(frozen=True)
class InputStatus:
    """What became of one input file."""

    name: str
    state: str  # ok | missing | empty | unreadable
    detail: str = ""
    required: bool = True
    rows: int = 0

    @property
    def problem(self) -> bool:
        return self.required and self.state != "ok"

    def describe(self) -> str:
        if self.state == "ok":
            return f"{self.name}: {self.detail}" if self.detail else self.name
        text = f"{self.name}: {self.state}"
        return f"{text} ({self.detail})" if self.detail else text


@dataclass
class RunData:
    """Everything read from one run folder; frames always have their expected columns."""

    source: Path
    kind: str  # "run" (a suite run folder) or "locust" (a bare Locust CSV export)
    meta: dict[str, Any] | None
    stages: pd.DataFrame
    events: pd.DataFrame
    samples: pd.DataFrame
    workers: pd.DataFrame
    stats: pd.DataFrame
    history: pd.DataFrame
    failures: pd.DataFrame
    exceptions: pd.DataFrame
    locust_json: list[dict[str, Any]] | None
    inputs: list[InputStatus] = field(default_factory=list)

    @property
    def missing(self) -> list[str]:
        """Descriptions of required inputs that were missing, empty or unreadable."""
        return [s.describe() for s in self.inputs if s.problem]

    @property
    def notes(self) -> list[str]:
        """Repairs made while reading (dropped truncated lines, skipped bad rows)."""
        return [s.describe() for s in self.inputs if s.state == "ok" and s.detail]


def empty_frame(columns: tuple[str, ...]) -> pd.DataFrame:
    return pd.DataFrame(
        {c: pd.Series(dtype="str" if c in _TEXT_COLUMNS else "float64") for c in columns}
    )


def _typed(df: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    """Add missing expected columns; numbers to float (bad cells NaN), text to str ('' for none)."""
    out = {}
    for col in dict.fromkeys((*columns, *df.columns)):
        s = df[col] if col in df.columns else pd.Series("", index=df.index, dtype="str")
        if col in _TEXT_COLUMNS or (col not in columns and not _looks_numeric(s)):
            out[col] = s.fillna("").astype("str")
        else:
            blank = s.isin(["", "N/A"])
            out[col] = pd.to_numeric(s.where(~blank), errors="coerce").astype("float64")
    return pd.DataFrame(out, index=df.index)


def _looks_numeric(s: pd.Series) -> bool:
    filled = s[s.astype("str").str.len() > 0]
    if filled.empty:
        return True
    return bool(pd.to_numeric(filled, errors="coerce").notna().all())


def read_csv(
    path: Path, columns: tuple[str, ...], *, required: bool = True, name: str | None = None
) -> tuple[pd.DataFrame, InputStatus]:
    """Read one CSV tolerantly; never raises on bad content."""
    label = name or path.name
    if not path.is_file():
        return empty_frame(columns), InputStatus(label, "missing", required=required)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return empty_frame(columns), InputStatus(
            label, "unreadable", exc.strerror or str(exc), required
        )
    text = raw.decode("utf-8", errors="replace")
    repairs = []
    if text and not text.endswith("\n"):
        cut = text.rfind("\n")
        text = text[: cut + 1] if cut >= 0 else ""
        repairs.append("dropped a truncated last line")
    if not text.strip():
        what = "0 bytes" if not raw else "no complete line"
        return empty_frame(columns), InputStatus(label, "empty", what, required)
    bad_lines = 0

    def skip(_line: list[str]) -> None:
        nonlocal bad_lines
        bad_lines += 1

    try:
        try:  # the fast C parser for well-formed files ...
            df = pd.read_csv(io.StringIO(text), dtype="str", keep_default_na=False)
        except pd.errors.ParserError:  # ... the python one to skip and count bad lines
            df = pd.read_csv(
                io.StringIO(text),
                dtype="str",
                keep_default_na=False,
                on_bad_lines=skip,
                engine="python",
            )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, csv.Error) as exc:
        return empty_frame(columns), InputStatus(
            label, "unreadable", f"not CSV: {exc}".splitlines()[0], required
        )
    if bad_lines:
        repairs.append(f"skipped {bad_lines} malformed line{'s' if bad_lines > 1 else ''}")
    absent = [c for c in columns if c not in df.columns]
    if len(absent) == len(columns):
        return empty_frame(columns), InputStatus(
            label, "unreadable", "none of the expected columns in its header", required
        )
    if absent:
        repairs.append(f"columns missing from its header: {', '.join(absent)}")
    df = _typed(df, columns)
    if df.empty:
        return df, InputStatus(label, "empty", "header only", required)
    return df, InputStatus(label, "ok", "; ".join(repairs), required, rows=len(df))


def read_json(path: Path, *, required: bool = True) -> tuple[Any, InputStatus]:
    if not path.is_file():
        return None, InputStatus(path.name, "missing", required=required)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return None, InputStatus(path.name, "unreadable", exc.strerror or str(exc), required)
    if not text.strip():
        return None, InputStatus(path.name, "empty", "0 bytes", required)
    try:
        return json.loads(text), InputStatus(path.name, "ok", required=required)
    except json.JSONDecodeError as exc:
        return None, InputStatus(
            path.name, "unreadable", f"not valid JSON ({exc.msg} at line {exc.lineno})", required
        )


def _sorted(df: pd.DataFrame, by: str) -> pd.DataFrame:
    df = df[df[by].notna()]
    return df.sort_values(by, kind="stable").reset_index(drop=True)


def _read_locust_json(path: Path) -> tuple[list[dict[str, Any]] | None, InputStatus]:
    data, status = read_json(path)
    if data is None:
        return None, status
    entries = data if isinstance(data, list) else None
    if entries is None or not all(
        isinstance(e, dict) and "name" in e and "num_requests" in e for e in entries
    ):
        return None, InputStatus(
            path.name, "unreadable", "not Locust's --json-file format (a list of stats entries)"
        )
    if not entries:
        return [], InputStatus(path.name, "empty", "no requests")
    return entries, status


@dataclass
class LocustExport:
    stats: pd.DataFrame
    history: pd.DataFrame
    failures: pd.DataFrame
    exceptions: pd.DataFrame
    json: list[dict[str, Any]] | None
    inputs: list[InputStatus]


def read_locust(prefix: Path) -> LocustExport:
    """Read PREFIX_stats.csv, PREFIX_stats_history.csv, _failures, _exceptions, PREFIX.json."""
    base = prefix.name
    folder = prefix.parent
    stats, s1 = read_csv(folder / f"{base}_stats.csv", LOCUST_STATS_COLUMNS)
    history, s2 = read_csv(folder / f"{base}_stats_history.csv", LOCUST_HISTORY_COLUMNS)
    failures, s3 = read_csv(folder / f"{base}_failures.csv", LOCUST_FAILURES_COLUMNS)
    exceptions, s4 = read_csv(folder / f"{base}_exceptions.csv", LOCUST_EXCEPTIONS_COLUMNS)
    entries, s5 = _read_locust_json(folder / f"{base}.json")
    # A header-only failures/exceptions file is the normal "none happened".
    s3 = _empty_is_fine(s3)
    s4 = _empty_is_fine(s4)
    history = _sorted(history, "Timestamp")
    return LocustExport(stats, history, failures, exceptions, entries, [s1, s2, s3, s4, s5])


def _empty_is_fine(s: InputStatus) -> InputStatus:
    if s.state == "empty" and s.detail == "header only":
        return InputStatus(s.name, "ok", required=s.required)
    return s


def is_run_folder(path: Path) -> bool:
    return path.is_dir() and any((path / m).exists() for m in RUN_MARKERS)


def read_run(run_dir: Path) -> RunData:
    """Read a suite run folder."""
    meta, meta_status = read_json(run_dir / "run_meta.json")
    if meta is not None and not isinstance(meta, dict):
        meta, meta_status = None, InputStatus("run_meta.json", "unreadable", "not a JSON object")
    stages, st_stages = read_csv(run_dir / "stages.csv", STAGE_COLUMNS)
    events, st_events = read_csv(run_dir / "events.csv", EVENT_COLUMNS)
    samples, st_samples = read_csv(run_dir / "memory_samples.csv", SAMPLE_COLUMNS)
    workers, st_workers = read_csv(run_dir / "worker_samples.csv", WORKER_COLUMNS, required=False)
    loc = read_locust(run_dir / "locust")
    inputs = [
        meta_status,
        st_stages,
        _empty_is_fine(st_events),  # no events is a normal run
        st_samples,
        st_workers,
        *loc.inputs,
    ]
    return RunData(
        source=run_dir,
        kind="run",
        meta=meta,
        stages=_sorted(stages, "time"),
        events=_sorted(events, "time"),
        samples=_sorted(samples, "time"),
        workers=_sorted(workers, "time"),
        stats=loc.stats,
        history=loc.history,
        failures=loc.failures,
        exceptions=loc.exceptions,
        locust_json=loc.json,
        inputs=inputs,
    )


def read_locust_export(prefix: Path) -> RunData:
    """A bare Locust CSV export as a :class:`RunData` with no memory data."""
    loc = read_locust(prefix)
    return RunData(
        source=prefix,
        kind="locust",
        meta=None,
        stages=empty_frame(STAGE_COLUMNS),
        events=empty_frame(EVENT_COLUMNS),
        samples=empty_frame(SAMPLE_COLUMNS),
        workers=empty_frame(WORKER_COLUMNS),
        stats=loc.stats,
        history=loc.history,
        failures=loc.failures,
        exceptions=loc.exceptions,
        locust_json=loc.json,
        inputs=[dataclasses.replace(s, required=s.name.endswith(".csv")) for s in loc.inputs],
    )
