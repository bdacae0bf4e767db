"""Progress of a long run: a rich live panel on a terminal, plain lines otherwise.

The view reads what the Locust process writes into the run folder (stages,
memory samples, Locust's per-second history), so it costs the load nothing.
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console
from rich.live import Live
from rich.table import Table

from memstress.common.units import MB


def last_row(path: Path, tail_bytes: int = 8192) -> dict[str, str] | None:
    """The last complete row of a CSV file that is still being appended to."""
    try:
        with open(path, "rb") as fh:
            header = fh.readline().decode("utf-8", "replace")
            size = fh.seek(0, io.SEEK_END)
            start = max(len(header), size - tail_bytes)
            fh.seek(start)
            tail = fh.read().decode("utf-8", "replace")
    except OSError:
        return None
    lines = [ln for ln in tail.splitlines() if ln.strip()]
    if start > len(header) and lines:
        lines = lines[1:]  # the first line of the tail may be cut
    if not header or not lines:
        return None
    if not tail.endswith("\n"):
        lines = lines[:-1]  # the last line may be half-written
    if not lines:
        return None
    rows = list(csv.DictReader([header, lines[-1]]))
    return rows[0] if rows else None


@dataclass
class Snapshot:
    scenario: str
    index: int  # 1-based
    total: int
    elapsed_s: float
    planned_s: float
    stage: str = ""
    rss_mb: float | None = None
    pressure: float | None = None
    rps: float | None = None
    users: int | None = None

    @property
    def remaining_s(self) -> float:
        return max(0.0, self.planned_s - self.elapsed_s)


def read_snapshot(run_dir: Path, base: Snapshot) -> Snapshot:
    stage = last_row(run_dir / "stages.csv")
    sample = last_row(run_dir / "memory_samples.csv")
    hist = last_row(run_dir / "locust_stats_history.csv")
    snap = Snapshot(**{**base.__dict__})
    if stage:
        snap.stage = stage.get("name", "")
    if sample:
        snap.rss_mb = _num(sample.get("rss_bytes"), 1 / MB)
        snap.pressure = _num(sample.get("pressure"))
    if hist:
        snap.rps = _num(hist.get("Requests/s"))
        users = _num(hist.get("User Count"))
        snap.users = int(users) if users is not None else None
    return snap


def _num(text: Any, scale: float = 1.0) -> float | None:
    try:
        return float(text) * scale
    except (TypeError, ValueError):
        return None


def _fmt(value: float | None, unit: str = "", digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 60:d}:{s % 60:02d}"


class ProgressView(Protocol):
    def show(self, snap: Snapshot) -> None: ...
    def close(self) -> None: ...


class PlainProgress:
    """One line every ``every`` seconds: for logs, CI and pipes."""

    def __init__(self, console: Console, every: float = 10.0) -> None:
        self.console = console
        self.every = every
        self._last = 0.0

    def show(self, snap: Snapshot) -> None:
        now = time.monotonic()
        if now - self._last < self.every:
            return
        self._last = now
        self.console.print(
            f"[{snap.index}/{snap.total}] {snap.scenario} stage={snap.stage or '-'} "
            f"elapsed={_clock(snap.elapsed_s)} remaining~{_clock(snap.remaining_s)} "
            f"rss={_fmt(snap.rss_mb, ' MB')} pressure={_fmt(snap.pressure, '%')} "
            f"req/s={_fmt(snap.rps)} users={snap.users if snap.users is not None else '-'}",
            highlight=False,
        )

    def close(self) -> None:
        pass


class RichProgress:
    """A live panel redrawn in place on a terminal."""

    def __init__(self, console: Console) -> None:
        self.live = Live(console=console, refresh_per_second=4, transient=False)
        self.live.start()

    def show(self, snap: Snapshot) -> None:
        table = Table(title=f"memstress: scenario {snap.index} of {snap.total}", expand=False)
        for col in (
            "scenario",
            "stage",
            "elapsed",
            "remaining",
            "RSS",
            "pressure",
            "req/s",
            "users",
        ):
            table.add_column(col)
        done = min(1.0, snap.elapsed_s / snap.planned_s) if snap.planned_s else 0.0
        table.add_row(
            snap.scenario,
            snap.stage or "-",
            f"{_clock(snap.elapsed_s)} ({done:.0%})",
            _clock(snap.remaining_s),
            _fmt(snap.rss_mb, " MB"),
            _fmt(snap.pressure, "%"),
            _fmt(snap.rps),
            "-" if snap.users is None else str(snap.users),
        )
        self.live.update(table)

    def close(self) -> None:
        self.live.stop()


def make_progress(console: Console) -> ProgressView:
    return RichProgress(console) if console.is_terminal else PlainProgress(console)
