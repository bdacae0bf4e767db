"""Where a memory sample's figures come from.

Each source fills some of the columns of ``memory_samples.csv``
(:data:`common.runfiles.SAMPLE_COLUMNS`) and nothing else. ``read()`` returns
its figures, or raises:

- :class:`SourceMissing` when the source is not there at all (no PID, a 404,
  no ``/proc/pressure``, an unreadable cgroup). The sampler notes that once
  and stops asking; the source's columns stay empty.
- :class:`SourceFailed` when it is there but did not answer well this time:
  the target refused the connection, reset it, answered 5xx, sent a body too
  large or one that does not parse, or figures of the wrong type. It carries
  an example of what came back, for the ``source_degraded`` event.
  :class:`TargetGone` (a SourceFailed) when the target process itself is gone.

Every reading is checked again by :func:`junk_values` (NaN, negative figures,
an RSS above the host's memory, a pressure outside 0-100) before a sample
uses it; see :class:`monitors.sampler.Sampler`, which also bounds how long a
read may take.

Sources are plain objects: no greenlets, no clocks, no Locust. The names in
:data:`SOURCE_NAMES` are what ``--monitor-sources`` accepts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import requests
from prometheus_client.parser import text_string_to_metric_families

from memstress.common.cgroup import find_memory_cgroup
from memstress.common.target import TargetClient

SOURCE_NAMES = ("process", "smaps", "metrics_url", "prometheus", "stats", "host", "psi", "cgroup")
"""Every source, in the order a sample reads them (``metrics_url``: monitors/exporter.py)."""

HOST_SOURCES = frozenset({"host", "psi", "cgroup"})
"""Sources that read the machine the monitor runs on: the target's only when it is there."""

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
    """The source did not answer well this time; ``example`` is what came back, if anything."""

    def __init__(self, reason: str, example: str = "") -> None:
        super().__init__(reason)
        self.example = example


class TargetGone(SourceFailed):
    """The target process (known by its PID) is not there any more."""


EXAMPLE_CHARS = 120
"""How much of a bad answer an event quotes."""

MAX_BODY_BYTES = 4 << 20
"""A /metrics or /memory/stats body larger than this is refused unread (the
reference service's are a few kB; a Prometheus page of a big process, some 100 kB)."""


def example_of(text: str | bytes) -> str:
    """The start of a bad answer, printable, for an event's ``example``."""
    if isinstance(text, bytes):
        text = text[: 4 * EXAMPLE_CHARS].decode("utf-8", errors="replace")
    short = text[:EXAMPLE_CHARS]
    return repr(short)[1:-1] + (" ..." if len(text) > EXAMPLE_CHARS else "")


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
                if p.status() == psutil.STATUS_ZOMBIE:  # dead, its parent has not reaped it
                    raise psutil.ZombieProcess(self.pid)
                mem = p.memory_info()
                return {
                    "proc_rss_bytes": mem.rss,
                    "vms_bytes": mem.vms,
                    "cpu_percent": p.cpu_percent(None),
                    "num_threads": p.num_threads(),
                    "open_files": p.num_fds(),
                }
        except psutil.NoSuchProcess:  # a zombie too: killed, not yet reaped
            raise TargetGone(f"target process {self.pid} is gone") from None
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
            raise TargetGone(f"target process {self.pid} is gone") from None
        except ProcessLookupError:
            raise TargetGone(f"target process {self.pid} is gone") from None
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


def _get(client: TargetClient, path: str) -> str:
    """``GET path`` on the target: its body as text, else SourceMissing (404) or SourceFailed."""
    return fetch_text(
        client.session,
        f"{client.base_url}{path}",
        client.timeout,
        f"GET {path}",
        missing=f"the target has no {path} (HTTP 404)",
    )


def fetch_text(
    session: requests.Session, url: str, timeout: float, what: str, *, missing: str
) -> str:
    """``GET url``: its body as text, else SourceMissing(``missing``) on a 404, or SourceFailed.

    The body is streamed and refused past :data:`MAX_BODY_BYTES`, so a huge
    answer costs at most that much memory and reading time.
    """
    try:
        with session.get(url, timeout=timeout, stream=True) as r:
            if r.status_code == 404:
                raise SourceMissing(missing)
            declared = r.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
                raise SourceFailed(
                    f"{what}: body of {int(declared) / 2**20:.1f} MB "
                    f"(valid: up to {MAX_BODY_BYTES >> 20} MB)",
                    example_of(next(r.iter_content(EXAMPLE_CHARS + 1), b"")),
                )
            body = bytearray()
            for chunk in r.iter_content(64 * 1024):
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    raise SourceFailed(
                        f"{what}: body over {MAX_BODY_BYTES >> 20} MB", example_of(bytes(body))
                    )
            text = bytes(body).decode(r.encoding or "utf-8", errors="replace")
            if r.status_code != 200:
                raise SourceFailed(f"{what}: HTTP {r.status_code}", example_of(text))
            return text
    except requests.Timeout:
        raise SourceFailed(f"{what}: no answer within {timeout:g} s") from None
    except requests.RequestException as exc:
        raise SourceFailed(f"{what}: {type(exc).__name__}", _cause(exc)) from None


def _cause(exc: BaseException) -> str:
    """The innermost error text of a requests failure (e.g. 'Connection reset by peer')."""
    while exc.__context__ is not None and exc.__context__ is not exc:
        exc = exc.__context__
    for arg in exc.args:
        if isinstance(arg, BaseException):
            exc = arg
    return example_of(str(exc))


class PrometheusSource:
    """``process_resident_memory_bytes`` from the target's ``GET /metrics``."""

    name = "prometheus"

    def __init__(self, client: TargetClient) -> None:
        self.client = client

    def read(self) -> Reading:
        value = parse_prometheus_rss(_get(self.client, "/metrics"))
        if value is None:
            raise SourceMissing(f"/metrics has no {PROM_RSS}")
        return {"prom_rss_bytes": value}


def parse_prometheus_rss(text: str) -> float | None:
    """The ``process_resident_memory_bytes`` value in a Prometheus text page, if any.

    Only the metric's own lines (with its HELP and TYPE) are parsed, so a large
    page of other metrics costs a substring scan, not a full parse. Lines that
    do not parse raise :class:`SourceFailed`, quoting the first of them.
    """
    lines = [ln for ln in text.splitlines() if PROM_RSS in ln]
    if not lines:
        return None
    try:
        for family in text_string_to_metric_families("\n".join(lines) + "\n"):
            if family.name == PROM_RSS:
                for sample in family.samples:
                    if sample.name == PROM_RSS:
                        return float(sample.value)
    except Exception as exc:  # the parser's own errors on text it cannot read, whatever type
        bad = next((ln for ln in lines if not _parses(ln)), lines[0])
        raise SourceFailed(
            f"GET /metrics: not Prometheus text ({type(exc).__name__})", example_of(bad)
        ) from None
    return None


def _parses(line: str) -> bool:
    try:
        list(text_string_to_metric_families(line + "\n"))
    except Exception:  # as above: whatever the parser raises on this line
        return False
    return True


class StatsSource:
    """The target's own view from ``GET /memory/stats``."""

    name = "stats"

    def __init__(self, client: TargetClient) -> None:
        self.client = client

    def read(self) -> Reading:
        text = _get(self.client, "/memory/stats")
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise SourceFailed(
                f"GET /memory/stats: not JSON ({type(exc).__name__})", example_of(text)
            ) from None
        return stats_row(data)


STATS_NUMBERS = (
    "budget_bytes",
    "pressure",
    "optimizations_total",
    "optimizations_failed",
    "bytes_freed_total",
    "unaccounted_bytes",
)


def stats_row(data: Any) -> Reading:
    """Map a ``/memory/stats`` body to sample columns.

    A field that is absent or null stays empty (another platform may not know
    it); a field of the wrong type (a string where the contract has a number)
    makes the whole answer junk: :class:`SourceFailed` naming the fields.
    """
    if not isinstance(data, dict):
        raise SourceFailed(
            "GET /memory/stats: not a JSON object", example_of(json.dumps(data)[:EXAMPLE_CHARS])
        )
    wrong: list[str] = []

    def number(where: dict[str, Any], key: str, label: str) -> float | int | None:
        value = where.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            wrong.append(f"{label}={value!r}"[:60])
            return None
        return value

    row: Reading = {"stats_rss_bytes": number(data, "rss_bytes", "rss_bytes")}
    for key in STATS_NUMBERS:
        row[key] = number(data, key, key)
    strategy = data.get("strategy")
    if strategy is not None and not isinstance(strategy, str):
        wrong.append(f"strategy={strategy!r}"[:60])
    row["strategy"] = strategy if isinstance(strategy, str) else None
    suspected = data.get("leak_suspected")
    if suspected is not None and not isinstance(suspected, bool | int):
        wrong.append(f"leak_suspected={suspected!r}"[:60])
    row["leak_suspected"] = int(suspected) if isinstance(suspected, bool | int) else None
    tiers = data.get("tiers") if isinstance(data.get("tiers"), dict) else data
    for tier in TIERS:
        info = tiers.get(tier) if isinstance(tiers, dict) else None
        info = info if isinstance(info, dict) else {}
        row[f"{tier}_bytes"] = number(info, "bytes", f"tiers.{tier}.bytes")
        row[f"{tier}_limit_bytes"] = number(info, "limit_bytes", f"tiers.{tier}.limit_bytes")
    if wrong:
        raise SourceFailed(
            f"GET /memory/stats: wrong types ({', '.join(wrong[:4])}; valid: numbers)",
            example_of(json.dumps(data, default=str)),
        )
    return row


RSS_COLUMNS = ("proc_rss_bytes", "prom_rss_bytes", "stats_rss_bytes")
"""Readings of the target's resident memory, one per source that has one."""

PERCENT_COLUMNS = ("pressure", "host_percent", "psi_some_avg10", "psi_full_avg10")


def junk_values(reading: Reading, host_total_bytes: float | None) -> list[str]:
    """What in a reading cannot be true: each as ``column=value (why)``; empty when sound.

    Every figure of a sample is a finite quantity at or above zero. An RSS
    cannot exceed the host's memory (the target runs on this host: targets are
    on loopback). A percentage is 0-100, except the target's own ``pressure``
    (100 x RSS / budget), which may exceed 100 when the same answer puts its
    RSS above its budget.
    """
    bad: list[str] = []
    for key, value in reading.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if not math.isfinite(value):
            bad.append(f"{key}={value} (not a number)")
        elif value < 0:
            bad.append(f"{key}={value:g} (negative)")
        elif key in RSS_COLUMNS and host_total_bytes and value > host_total_bytes:
            bad.append(f"{key}={value:.4g} (above the host's {host_total_bytes / 2**30:.1f} GiB)")
        elif key in PERCENT_COLUMNS and value > 100 and not _over_budget(key, reading):
            bad.append(f"{key}={value:g} (valid: 0-100)")
    return bad


def _over_budget(key: str, reading: Reading) -> bool:
    rss, budget = reading.get("stats_rss_bytes"), reading.get("budget_bytes")
    return key == "pressure" and bool(rss and budget and rss > budget)


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


def host_scope_note(names: Iterable[str], target: str, remote: bool, here: str) -> str | None:
    """For a remote target, the line saying whose host the host/PSI/cgroup sources read.

    They read the machine the monitor runs on (``here``); with the target on
    another machine, that is the load generator's, never the target's host.
    """
    local = sorted(HOST_SOURCES & set(names))
    if not remote or not local:
        return None
    return (
        f"{', '.join(local)}: not this target's host: they read the load generator {here}, "
        f"and the target {target} is on another machine"
    )


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
    names: Iterable[str],
    pid: int | None,
    client_factory: Callable[[], TargetClient],
    metrics_url: Callable[[], Any] | None = None,
) -> list[Any]:
    """Source objects for the given built-in names, in :data:`SOURCE_NAMES` order
    (registered ones are made by :mod:`monitors.registry`).

    ``metrics_url`` makes the ``--metrics-url`` source; without it that source is left out.
    """
    wanted = set(check_source_names(names))
    if metrics_url is None:
        wanted.discard("metrics_url")
    make: dict[str, Callable[[], Any]] = {
        "process": lambda: ProcessSource(pid),
        "metrics_url": metrics_url or (lambda: None),
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
    from memstress.monitors.registry import REGISTRY  # registered sources (redis, a user's own)

    out = tuple(names)
    valid = SOURCE_NAMES + REGISTRY.names()
    for n in out:
        if n not in valid:
            raise ValueError(
                f"--monitor-sources: unknown source {n!r} "
                f"(valid: auto, or a comma-separated list of {', '.join(valid)})"
            )
    if not out:
        raise ValueError("--monitor-sources: no source named (valid: auto, or e.g. process,host)")
    return out
