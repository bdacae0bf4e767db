"""Where a memory sample's figures come from.

Each source fills some of the columns of ``memory_samples.csv``
(:data:`common.runfiles.SAMPLE_COLUMNS`) and nothing else. ``read()`` returns
its figures, or raises:

- :class:`SourceMissing` when the source is not there at all (no PID, a 404,
  no ``/proc/pressure``, an unreadable cgroup). The sampler notes that once
  and stops asking; the source's columns stay empty.
- :class:`SourceFailed` when it is there but did not answer this time (the
  target refused the connection, timed out, or its process is gone). A target
  source failing on consecutive samples is how the safety guard sees a lost
  target.

Sources are plain objects: no greenlets, no clocks, no Locust. The names in
:data:`SOURCE_NAMES` are what ``--monitor-sources`` accepts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import requests
from prometheus_client.parser import text_string_to_metric_families

from common.cgroup import find_memory_cgroup
from common.target import TargetClient

SOURCE_NAMES = ("process", "smaps", "prometheus", "stats", "host", "psi", "cgroup")
"""Every source, in the order a sample reads them."""

TARGET_SOURCES = frozenset({"process", "prometheus", "stats"})
# smaps is left out on purpose: the process source already says whether the PID is there.
"""Sources that read the target itself (their failures count toward ``target_lost``)."""

HTTP_SOURCES = frozenset({"prometheus", "stats"})

PROM_RSS = "process_resident_memory_bytes"

TIERS = ("conversations", "vectors", "embedding_cache", "ballast")

UNLIMITED = 1 << 62
"""cgroup limits at or above this are "no limit" (v1 writes 9223372036854771712)."""


class SourceMissing(Exception):
    """The source is not available here; asking again will not help."""


class SourceFailed(Exception):
    """The source did not answer this time."""


Reading = dict[str, Any]


class ProcessSource:
    """The target process by PID (psutil): RSS, VMS, CPU percent, threads, open fds.

    ``open_files`` is the count of open file descriptors (``num_fds``: files,
    sockets, pipes): cheaper than listing regular files, and a socket leak
    shows up in it too.
    """

    name = "process"

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self._proc: psutil.Process | None = None

    def read(self) -> Reading:
        if self.pid is None:
            raise SourceMissing("no target PID (pass --target-pid, or run the target on loopback)")
        try:
            if self._proc is None:
                self._proc = psutil.Process(self.pid)
                self._proc.cpu_percent(None)  # primes the CPU counter; the first call says 0.0
            p = self._proc
            with p.oneshot():
                mem = p.memory_info()
                return {
                    "proc_rss_bytes": mem.rss,
                    "vms_bytes": mem.vms,
                    "cpu_percent": p.cpu_percent(None),
                    "num_threads": p.num_threads(),
                    "open_files": p.num_fds(),
                }
        except psutil.NoSuchProcess:
            raise SourceFailed(f"target process {self.pid} is gone") from None
        except psutil.AccessDenied:
            raise SourceMissing(f"no permission to read process {self.pid}") from None


SMAPS_FIELDS = ("Anonymous", "Pss_File", "Pss_Shmem", "Swap", "Rss")


class SmapsSource:
    """The target's resident memory by kind, from ``/proc/PID/smaps_rollup``.

    ``smaps_anon_bytes`` is ``Anonymous`` (heap, anonymous mmaps: where a leak
    of objects shows), ``smaps_file_bytes`` ``Pss_File`` (mapped files:
    libraries, memory-mapped data), ``smaps_shmem_bytes`` ``Pss_Shmem`` (shared
    memory, tmpfs), ``smaps_swap_bytes`` ``Swap``. A kernel without the
    ``Pss_*`` lines (before 5.7) gives file as ``Rss - Anonymous`` and no shmem.
    The kernel sums the process's mappings for each read: well under a
    millisecond for a service, more for one with tens of thousands of mappings.
    """

    name = "smaps"

    def __init__(self, pid: int | None, proc: str | Path = "/proc") -> None:
        self.pid = pid
        self.proc = Path(proc)

    def read(self) -> Reading:
        if self.pid is None:
            raise SourceMissing("no target PID (pass --target-pid, or run the target on loopback)")
        path = self.proc / str(self.pid) / "smaps_rollup"
        try:
            text = path.read_text()
        except FileNotFoundError:
            if (self.proc / str(self.pid)).exists():
                raise SourceMissing(f"{path}: not there (a kernel before 4.14)") from None
            raise SourceFailed(f"target process {self.pid} is gone") from None
        except ProcessLookupError:
            raise SourceFailed(f"target process {self.pid} is gone") from None
        except PermissionError:
            raise SourceMissing(f"no permission to read {path}") from None
        except OSError as exc:
            raise SourceMissing(f"{path}: {exc.strerror or exc}") from None
        row = parse_smaps_rollup(text)
        if row is None:
            raise SourceMissing(f"{path}: no Rss or Anonymous line")
        return row


def parse_smaps_rollup(text: str) -> Reading | None:
    """The ``smaps_*`` columns from a ``smaps_rollup`` text (kB lines), or None."""
    kb: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        if sep and key in SMAPS_FIELDS:
            parts = rest.split()
            if parts and parts[0].isdigit():
                kb[key] = int(parts[0]) * 1024
    if "Anonymous" not in kb or "Rss" not in kb:
        return None
    file_bytes = kb.get("Pss_File", kb["Rss"] - kb["Anonymous"])
    return {
        "smaps_anon_bytes": kb["Anonymous"],
        "smaps_file_bytes": file_bytes,
        "smaps_shmem_bytes": kb.get("Pss_Shmem"),
        "smaps_swap_bytes": kb.get("Swap"),
    }


def _get(client: TargetClient, path: str) -> requests.Response:
    """``GET path`` on the target: 200, else SourceMissing (404) or SourceFailed."""
    try:
        r = client.session.get(f"{client.base_url}{path}", timeout=client.timeout)
    except requests.RequestException as exc:
        raise SourceFailed(f"GET {path}: {type(exc).__name__}") from None
    if r.status_code == 404:
        raise SourceMissing(f"the target has no {path} (HTTP 404)")
    if r.status_code != 200:
        raise SourceFailed(f"GET {path}: HTTP {r.status_code}")
    return r


class PrometheusSource:
    """``process_resident_memory_bytes`` from the target's ``GET /metrics``."""

    name = "prometheus"

    def __init__(self, client: TargetClient) -> None:
        self.client = client

    def read(self) -> Reading:
        r = _get(self.client, "/metrics")
        value = parse_prometheus_rss(r.text)
        if value is None:
            raise SourceMissing(f"/metrics has no {PROM_RSS}")
        return {"prom_rss_bytes": value}


def parse_prometheus_rss(text: str) -> float | None:
    """The ``process_resident_memory_bytes`` value in a Prometheus text page, if any.

    Only the metric's own lines (with its HELP and TYPE) are parsed, so a large
    page of other metrics costs a substring scan, not a full parse.
    """
    lines = [ln for ln in text.splitlines() if PROM_RSS in ln]
    if not lines:
        return None
    for family in text_string_to_metric_families("\n".join(lines) + "\n"):
        if family.name == PROM_RSS:
            for sample in family.samples:
                if sample.name == PROM_RSS:
                    return float(sample.value)
    return None


class StatsSource:
    """The target's own view from ``GET /memory/stats`` (DESIGN section 3)."""

    name = "stats"

    def __init__(self, client: TargetClient) -> None:
        self.client = client

    def read(self) -> Reading:
        r = _get(self.client, "/memory/stats")
        try:
            data = r.json()
        except ValueError:
            raise SourceFailed("GET /memory/stats: not JSON") from None
        return stats_row(data)


def stats_row(data: Any) -> Reading:
    """Map a ``/memory/stats`` body to sample columns; unknown or odd fields stay empty."""
    if not isinstance(data, dict):
        raise SourceFailed("GET /memory/stats: not a JSON object")
    row: Reading = {"stats_rss_bytes": _number(data.get("rss_bytes"))}
    for key in (
        "budget_bytes",
        "pressure",
        "optimizations_total",
        "optimizations_failed",
        "bytes_freed_total",
        "unaccounted_bytes",
    ):
        row[key] = _number(data.get(key))
    strategy = data.get("strategy")
    row["strategy"] = strategy if isinstance(strategy, str) else None
    suspected = data.get("leak_suspected")
    row["leak_suspected"] = int(suspected) if isinstance(suspected, bool | int) else None
    tiers = data.get("tiers") if isinstance(data.get("tiers"), dict) else data
    for tier in TIERS:
        info = tiers.get(tier) if isinstance(tiers, dict) else None
        row[f"{tier}_bytes"] = _number(info.get("bytes")) if isinstance(info, dict) else None
    return row


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


class HostSource:
    """Host memory (``psutil.virtual_memory``): total, available, percent used."""

    name = "host"

    def read(self) -> Reading:
        vm = psutil.virtual_memory()
        return {
            "host_total_bytes": vm.total,
            "host_available_bytes": vm.available,
            "host_percent": vm.percent,
        }


class PsiSource:
    """Linux pressure stall information for memory: ``some`` and ``full`` avg10."""

    name = "psi"

    def __init__(self, path: str | Path = "/proc/pressure/memory") -> None:
        self.path = Path(path)

    def read(self) -> Reading:
        try:
            text = self.path.read_text()
        except OSError as exc:
            raise SourceMissing(
                f"{self.path}: {exc.strerror or exc} (kernel without PSI)"
            ) from None
        return parse_psi(text)


def parse_psi(text: str) -> Reading:
    row: Reading = {"psi_some_avg10": None, "psi_full_avg10": None}
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        fields = dict(part.split("=", 1) for part in rest.split() if "=" in part)
        if kind in ("some", "full") and "avg10" in fields:
            row[f"psi_{kind}_avg10"] = float(fields["avg10"])
    return row


class CgroupSource:
    """The memory cgroup of the target process (v2, else v1), found via /proc/PID/cgroup.

    v2: ``memory.current``, ``memory.max``, ``memory.events``; v1:
    ``memory.usage_in_bytes``, ``memory.limit_in_bytes``, ``memory.failcnt``.
    ``cgroup_events`` is ``max=N;oom=N;oom_kill=N`` (v2) or ``failcnt=N`` (v1);
    a limit of "max" (or v1's huge number) is left empty.
    """

    name = "cgroup"

    def __init__(self, pid: int | None, proc: str | Path = "/proc") -> None:
        self.pid = pid
        self.proc = Path(proc)
        self._dir: Path | None = None
        self._version = 0

    def _locate(self) -> None:
        who = "self" if self.pid is None else str(self.pid)
        try:
            cgroups = (self.proc / who / "cgroup").read_text()
            mounts = (self.proc / who / "mountinfo").read_text()
        except OSError as exc:
            raise SourceMissing(f"cannot read /proc/{who}/cgroup: {exc.strerror}") from None
        found = find_memory_cgroup(cgroups, mounts)
        if found is None:
            raise SourceMissing(f"no readable memory cgroup for process {who}")
        self._dir, self._version = found

    def read(self) -> Reading:
        if self._dir is None:
            self._locate()
        assert self._dir is not None
        d = self._dir
        try:
            if self._version == 2:
                events = _keyvals((d / "memory.events").read_text())
                return {
                    "cgroup_current_bytes": int((d / "memory.current").read_text()),
                    "cgroup_max_bytes": _limit((d / "memory.max").read_text()),
                    "cgroup_events": ";".join(
                        f"{k}={events.get(k, 0)}" for k in ("max", "oom", "oom_kill")
                    ),
                }
            return {
                "cgroup_current_bytes": int((d / "memory.usage_in_bytes").read_text()),
                "cgroup_max_bytes": _limit((d / "memory.limit_in_bytes").read_text()),
                "cgroup_events": f"failcnt={int((d / 'memory.failcnt').read_text())}",
            }
        except FileNotFoundError:
            # The cgroup went away with its process (or was never ours to read).
            raise SourceFailed(f"{d}: cgroup files are gone") from None
        except (OSError, ValueError) as exc:
            raise SourceMissing(f"{d}: {exc}") from None


def _keyvals(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            out[parts[0]] = int(parts[1])
    return out


def _limit(text: str) -> int | None:
    text = text.strip()
    if text == "max":
        return None
    value = int(text)
    return None if value >= UNLIMITED else value


def find_listening_pid(url: str) -> int | None:
    """PID of the local process listening on the URL's port, when this user may see it."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError):
        return None
    for c in conns:
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
            return int(c.pid)
    return None


def build_sources(
    names: Iterable[str], pid: int | None, client_factory: Callable[[], TargetClient]
) -> list[Any]:
    """Source objects for the given names, in :data:`SOURCE_NAMES` order."""
    wanted = set(check_source_names(names))
    make: dict[str, Callable[[], Any]] = {
        "process": lambda: ProcessSource(pid),
        "prometheus": lambda: PrometheusSource(client_factory()),
        "stats": lambda: StatsSource(client_factory()),
        "smaps": lambda: SmapsSource(pid),
        "host": HostSource,
        "psi": PsiSource,
        "cgroup": lambda: CgroupSource(pid),
    }
    return [make[n]() for n in SOURCE_NAMES if n in wanted]


def parse_source_names(spec: str | None) -> tuple[str, ...]:
    """``auto``/empty -> every source; else a comma-separated subset."""
    if not spec or spec.strip() == "auto":
        return SOURCE_NAMES
    return check_source_names(n.strip() for n in spec.split(",") if n.strip())


def check_source_names(names: Iterable[str]) -> tuple[str, ...]:
    """The names, or ValueError naming the first unknown one and the valid ones."""
    out = tuple(names)
    for n in out:
        if n not in SOURCE_NAMES:
            raise ValueError(
                f"--monitor-sources: unknown source {n!r} "
                f"(valid: auto, or a comma-separated list of {', '.join(SOURCE_NAMES)})"
            )
    if not out:
        raise ValueError("--monitor-sources: no source named (valid: auto, or e.g. process,host)")
    return out
