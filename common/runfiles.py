"""The run folder: its naming and the incremental CSV files written into it.

A run folder is ``results/<UTC timestamp>_<scenario>``; nothing ever overwrites
an earlier one. The suite's own CSVs are appended one row at a time and
flushed after every row, so a run that is killed keeps every row it wrote.

Columns of the suite's files (the reports read these names):

- ``stages.csv``: see :data:`STAGE_COLUMNS`
- ``events.csv``: ``time,kind,detail`` (time is Unix seconds)
- ``memory_samples.csv``: see :data:`SAMPLE_COLUMNS`
- ``worker_samples.csv``: see :data:`WORKER_COLUMNS`
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TextIO

from memstress.common.config import ROOT, ConfigError

RESULTS_DIR = ROOT / "results" if (ROOT / "pyproject.toml").is_file() else Path("results")
"""Run folders go under the checkout's ``results/``; an installed memstress (no checkout
around it) writes them under ``results/`` of the working directory."""

STAGE_COLUMNS = (
    "time",  # Unix seconds when the stage began
    "elapsed_s",  # seconds since the shape started
    "index",  # 0-based stage number
    "name",  # stage name from the scenario's plan
    "users",  # target user count of the stage
    "spawn_rate",
    "duration_s",  # planned length of the stage
    "params",  # the stage parameters as JSON
)

EVENT_COLUMNS = ("time", "kind", "detail")

EVENT_KINDS = (
    "run_start",  # the run id its test data on the target is named by
    "stage",
    "leak_settings",  # the leak detector's settings for this run (scaled for a short run)
    "leak_detected",
    "leak_cleared",
    "emergency_stop",
    "target_lost",
    "health_failed",
    "health_ok",
    "cleanup",
    "source_missing",  # a sample source that is not there: dropped for the run
    "source_degraded",  # a source answered badly (JSON: source, reason, example)
    "source_recovered",  # ... and answers well again (JSON: source, degraded_s, failed_reads)
    "source_disabled",  # a source failed with a bug: off for the rest of the run
    "capability_skipped",  # the adapter lacks an optional capability: "<capability>: ..."
    "adapter",  # the run's adapter and each operation's Locust request name (JSON)
    "source_scope",  # host/PSI/cgroup read the load generator, not a remote target's host
    "allocation_capture",  # --profile-leaks: a capture started, ended, or could not be taken
    "run_end",
)

SAMPLE_COLUMNS = (
    "time",  # Unix seconds
    "elapsed_s",  # seconds since the monitor started
    "stage",  # name of the current stage ('' before the first)
    "users",  # Locust user count
    "rss_bytes",  # target RSS: psutil by PID, else --metrics-url, else /metrics, else /memory/stats
    "rss_source",  # psutil | metrics_url | prometheus | stats | custom
    "vms_bytes",
    "cpu_percent",  # target process CPU percent (psutil)
    "num_threads",
    "open_files",
    "smaps_anon_bytes",  # /proc/PID/smaps_rollup: anonymous (heap) ...
    "smaps_file_bytes",  # ... file-backed (Pss_File) ...
    "smaps_shmem_bytes",  # ... shared memory (Pss_Shmem) ...
    "smaps_swap_bytes",  # ... and swapped out
    "prom_rss_bytes",  # process_resident_memory_bytes from /metrics
    "custom_rss_bytes",  # RSS from a registered source (monitors.registry), e.g. redis
    "accounted_bytes",  # what a registered source says the target holds on purpose
    "budget_bytes",  # from /memory/stats, a registered source, or the configured budget
    "pressure",  # 0-100, the target's own score
    "strategy",  # normal | aggressive | emergency
    "optimizations_total",
    "optimizations_failed",
    "bytes_freed_total",
    "leak_suspected",  # the target's own flag (0/1)
    "unaccounted_bytes",
    "conversations_bytes",
    "vectors_bytes",
    "embedding_cache_bytes",
    "ballast_bytes",
    "conversations_limit_bytes",  # each tier's limit_bytes, when the target reports one
    "vectors_limit_bytes",
    "embedding_cache_limit_bytes",
    "ballast_limit_bytes",
    "stored_vectors",  # the run's vectors on the target, the adapter's count (vector scenarios)
    "host_total_bytes",
    "host_available_bytes",
    "host_percent",  # host memory used, percent
    "psi_some_avg10",  # /proc/pressure/memory
    "psi_full_avg10",
    "cgroup_current_bytes",
    "cgroup_max_bytes",
    "cgroup_events",  # oom/oom_kill/max events (v2) or failcnt (v1)
    "judged_bytes",  # what the leak detector judged: RSS less each tier's bytes up to its limit
    "leak_slope_mb_min",  # the online detector's current slope estimate
    "leak_state",  # warmup | clear | leak
    "sample_cost_ms",  # wall time spent taking this sample
    "sample_cpu_ms",  # CPU time of the sampler greenlet and its source reads for this sample
)

WORKER_COLUMNS = ("time", "worker_id", "rss_bytes", "cpu_percent", "user_count")


def utc_stamp(now: float | None = None) -> str:
    """``20261125T103000Z``: sortable, filesystem-safe UTC time."""
    t = dt.datetime.fromtimestamp(time.time() if now is None else now, tz=dt.UTC)
    return t.strftime("%Y%m%dT%H%M%SZ")


def new_run_dir(scenario: str, root: str | Path | None = None) -> Path:
    """Create ``<root>/<UTC timestamp>_<scenario>``; never reuses an existing folder."""
    base = Path(root) if root else RESULTS_DIR
    base.mkdir(parents=True, exist_ok=True)
    stamp = utc_stamp()
    for n in range(1000):
        suffix = f"-{n}" if n else ""
        path = base / f"{stamp}_{scenario}{suffix}"
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"{base}: too many run folders named {stamp}_{scenario}")


def make_run_dir(given: str | Path | None, scenario: str) -> Path:
    """``--run-dir`` as given (created if missing), else a new folder under ``results/``."""
    text = str(given).strip() if given is not None else ""
    if not text:
        try:
            return new_run_dir(scenario)
        except OSError as exc:
            raise ConfigError(
                f"--run-dir: cannot create a run folder under results/ ({exc})"
            ) from None
    path = Path(text).expanduser()
    if not is_writable_dir(path):
        raise ConfigError(
            f"--run-dir: {text} is not a folder this user can write (valid: a writable path)"
        )
    return path


class CsvAppender:
    """Append rows to a CSV file, flushing after each one.

    The header is written only when the file is new or empty, so reopening an
    existing file (a resumed run, a second writer) keeps its rows.
    """

    def __init__(self, path: str | Path, columns: Iterable[str]) -> None:
        self.path = Path(path)
        self.columns = tuple(columns)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: TextIO | None = open(self.path, "a", newline="", encoding="utf-8")  # noqa: SIM115
        self._writer = csv.DictWriter(self._fh, fieldnames=self.columns, extrasaction="ignore")
        if self._fh.tell() == 0:
            self._writer.writeheader()
            self._fh.flush()
        self.rows = 0

    def write(self, row: Mapping[str, Any]) -> None:
        if self._fh is None:
            raise ValueError(f"{self.path}: writer is closed")
        self._writer.writerow({k: _cell(v) for k, v in row.items()})
        self._fh.flush()
        self.rows += 1

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> CsvAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return round(value, 6)
    return value


class EventLog:
    """``events.csv``: one row per thing that happened (``time,kind,detail``)."""

    def __init__(self, run_dir: str | Path) -> None:
        self._csv = CsvAppender(Path(run_dir) / "events.csv", EVENT_COLUMNS)

    def record(self, kind: str, detail: str = "", when: float | None = None) -> None:
        self._csv.write(
            {"time": time.time() if when is None else when, "kind": kind, "detail": detail}
        )

    def close(self) -> None:
        self._csv.close()


def write_meta(run_dir: str | Path, **updates: Any) -> dict[str, Any]:
    """Create or update ``run_meta.json`` (written whole, through a temp file)."""
    path = Path(run_dir) / "run_meta.json"
    meta: dict[str, Any] = {}
    if path.exists():
        meta = json.loads(path.read_text())
    meta.update(updates)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True))
    os.replace(tmp, path)
    return meta


def is_writable_dir(path: Path) -> bool:
    """True when files can be created in ``path`` (created if missing)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK | os.X_OK)


class RunFolder:
    """The files a Locust run writes into its folder as it goes: ``events.csv`` from the
    start, ``stages.csv`` from the first stage. Only the master (or a local runner) has one.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.events = EventLog(self.path)
        self._stages: CsvAppender | None = None

    def record(self, kind: str, detail: str | Mapping[str, Any] = "") -> None:
        """One ``events.csv`` row; a mapping detail is written as JSON."""
        text = detail if isinstance(detail, str) else json.dumps(detail, sort_keys=True)
        self.events.record(kind, text)

    def write_stage(self, row: Mapping[str, Any]) -> None:
        """One ``stages.csv`` row (:data:`STAGE_COLUMNS`; ``params`` as a mapping)."""
        if self._stages is None:
            self._stages = CsvAppender(self.path / "stages.csv", STAGE_COLUMNS)
        self._stages.write({**row, "params": json.dumps(row["params"], sort_keys=True)})

    def close(self) -> None:
        if self._stages is not None:
            self._stages.close()
        self.events.close()
