"""Memory sources read on this machine: the target process by PID, its smaps, the host,
PSI and the target's memory cgroup.

They read ``/proc`` and :mod:`psutil` only, never the network. A missing file or
permission makes a source missing; a target process that went away makes it
:class:`~monitors.readings.TargetGone`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import psutil

from memstress.common.cgroup import MemoryCgroup, process_cgroup
from memstress.monitors.readings import Reading, SourceFailed, SourceMissing, TargetGone


class ProcessSource:
    """The target process by PID (psutil): RSS, VMS, CPU percent, threads, open fds.

    ``open_files`` is the count of open file descriptors (``num_fds``: files,
    sockets, pipes): cheaper than listing regular files, and a socket leak
    shows up in it too.
    """

    name = "process"
    local = True  # /proc and psutil only: read in the sampler's own greenlet

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

SMAPS_SHARE = 0.0005
"""The share of one core the monitor's ``smaps_rollup`` reads may take (0.05 %: a tenth
of the whole monitor's budget, ``bench`` goal ``sampler_cpu_pct_of_core`` <= 0.5 %)."""


class SmapsSource:
    """The target's resident memory by kind, from ``/proc/PID/smaps_rollup``.

    ``smaps_anon_bytes`` is ``Anonymous`` (heap, anonymous mmaps: where a leak
    of objects shows), ``smaps_file_bytes`` ``Pss_File`` (mapped files:
    libraries, memory-mapped data), ``smaps_shmem_bytes`` ``Pss_Shmem`` (shared
    memory, tmpfs), ``smaps_swap_bytes`` ``Swap``. A kernel without the
    ``Pss_*`` lines (before 5.7) gives file as ``Rss - Anonymous`` and no shmem.
    The kernel walks the page tables of every mapping for each read, so a read
    costs in proportion to the target's resident memory (about 1.9 ms of CPU for
    the reference service, 17 ms for a process of 1 GB), and it is made on the
    Locust process's event loop, where every user waits for it. So a read is
    made only when the last one's CPU cost, spread over the time since, is at
    most ``share`` of one core: ``read()`` returns no figures (the columns stay
    empty for that sample, nothing is degraded) until then. At the default
    :data:`SMAPS_SHARE` a small target is read every sample at 1 s, the
    reference service about every 4 s, a 1 GB target every 35 s; ``share=None``
    reads every time.
    """

    name = "smaps"
    local = True  # /proc and psutil only: read in the sampler's own greenlet

    def __init__(
        self,
        pid: int | None,
        proc: str | Path = "/proc",
        *,
        share: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if share is not None and share <= 0:
            raise ValueError(f"smaps share: {share!r} (valid: above 0, or None for every read)")
        self.pid = pid
        self.proc = Path(proc)
        self.share = share
        self.clock = clock
        self.next_read = -float("inf")  # clock() time before which a read is skipped

    def read(self) -> Reading:
        if self.pid is None:
            raise SourceMissing("no target PID (pass --target-pid, or run the target on loopback)")
        now = self.clock()
        if now < self.next_read:
            return {}
        path = self.proc / str(self.pid) / "smaps_rollup"
        cost = time.thread_time()
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
        if self.share is not None:  # the kernel's page walk is this thread's CPU time
            self.next_read = now + (time.thread_time() - cost) / self.share
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


class HostSource:
    """Host memory (``psutil.virtual_memory``): total, available, percent used."""

    name = "host"
    local = True  # /proc and psutil only: read in the sampler's own greenlet

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
    local = True  # /proc and psutil only: read in the sampler's own greenlet

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
    ``cgroup_events`` is ``max=N;oom=N;oom_kill=N`` (v2) or ``failcnt=N`` (v1).
    ``cgroup_max_bytes`` is the tightest limit from the target's cgroup up to the
    mount's top (a parent's limit binds it too); empty when none is set.
    """

    name = "cgroup"
    local = True  # /proc and psutil only: read in the sampler's own greenlet

    def __init__(self, pid: int | None, proc: str | Path = "/proc") -> None:
        self.pid = pid
        self.proc = Path(proc)
        self._cgroup: MemoryCgroup | None = None

    def _locate(self) -> None:
        who = "self" if self.pid is None else str(self.pid)
        try:
            found = process_cgroup(self.proc, who)
        except OSError as exc:
            raise SourceMissing(f"cannot read /proc/{who}/cgroup: {exc.strerror}") from None
        if found is None:
            raise SourceMissing(f"no readable memory cgroup for process {who}")
        self._cgroup = found

    def read(self) -> Reading:
        if self._cgroup is None:
            self._locate()
        assert self._cgroup is not None
        d = self._cgroup.path
        limit = self._cgroup.limit()
        limit_bytes = None if limit is None else limit[0]
        try:
            if self._cgroup.version == 2:
                events = _keyvals((d / "memory.events").read_text())
                return {
                    "cgroup_current_bytes": int((d / "memory.current").read_text()),
                    "cgroup_max_bytes": limit_bytes,
                    "cgroup_events": ";".join(
                        f"{k}={events.get(k, 0)}" for k in ("max", "oom", "oom_kill")
                    ),
                }
            return {
                "cgroup_current_bytes": int((d / "memory.usage_in_bytes").read_text()),
                "cgroup_max_bytes": limit_bytes,
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
