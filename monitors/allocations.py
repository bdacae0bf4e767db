"""Allocation sites of a leak: a bounded ``memray attach`` capture of the target.

``capture(pid, folder, window_s)`` is the whole capture, usable on its own:

1. :func:`attach_blocker` says, cheaply and before any debugger starts, why
   attaching cannot work (no ``gdb``, no such process, another user, a
   ``ptrace_scope`` that forbids it, not a Python process); ``None`` when it
   may.
2. ``python -m memray attach --aggregate --duration BACKSTOP -o FILE PID``
   starts tracking in the target (memray runs ``import memray`` inside it
   through gdb, so memray must be installed in the target's environment).
   ``BACKSTOP`` is the window plus a minute: should this process die, the
   target stops tracking by itself.
3. After the window, ``python -m memray detach PID`` stops tracking; it
   returns once the target has closed the file. A capture that is cut short
   (the run quits) detaches too: the detach is in a ``finally``.
4. :func:`read_sites` opens the file with ``memray.FileReader`` and groups
   ``get_leaked_allocation_records()`` (allocations made in the window and not
   freed when tracking stopped) by their innermost frame, heap allocations
   (malloc and kin) apart from mappings (``mmap``): a mapping counts in RSS only
   as far as it is touched, and libraries map large buffers once and keep them
   (the reference service's numpy matrix product left 32 MB mapped, and RSS
   never saw it).

It never raises for a target that cannot be profiled: the result says why.
Subprocesses are plain :mod:`subprocess` calls, so under Locust (gevent
patched) they wait cooperatively and the sampler keeps its clock.

:class:`AllocationProfiler` is the monitor's part: it decides when to capture
(the detector called a leak, or the stage says ``capture_allocations``), runs
one capture at a time in a greenlet, and writes :data:`SITES_NAME` and
:data:`CAPTURE_NAME` into the run folder.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from memstress.common.units import MB

log = logging.getLogger(__name__)

SITES_NAME = "leak_sites.csv"
CAPTURE_NAME = "leak_capture.json"
CAPTURE_FILE = "leak_capture.memray"
SITE_COLUMNS = (
    "rank",
    "kind",  # heap (malloc and kin) or mapping (mmap: resident only as far as touched)
    "function",  # innermost Python frame of the allocations
    "location",  # its file:line
    "frames",  # the first 3 frames, innermost first, " <- " between them
    "retained_bytes",  # allocated in the window, not freed at its end
    "retained_mb_per_min",  # retained_bytes over the window's length
    "allocations",  # how many allocations those bytes are
    "share_pct",  # of all bytes of its kind retained in the window
)

CAPTURE_PARAM = "capture_allocations"
"""A stage parameter: a scenario sets it true on the stage worth a capture."""

MODES = ("off", "marked", "on")
"""``--profile-leaks`` in a Locust run: never; at a marked stage; also when a leak is called."""

FRAMES = 3
BACKSTOP_S = 60.0  # the target stops tracking this long after the window, whatever happens
COMMAND_TIMEOUT_S = 60.0  # for one memray attach or detach (gdb and the injection)
ATTACH_ALLOWANCE_S = 3.0  # what an attach and a detach take, kept out of a stage's window
MIN_WINDOW_S = 2.0
DETACH_ALLOWANCE_S = 4.0
MIN_WAIT_S = 1.0  # a slow attach may eat into the window, never all of it
_OWN_FRAMES = ("_memray_attach_hook.py", f"{os.sep}memray{os.sep}")


@dataclass(frozen=True)
class Site:
    kind: str  # heap | mapping
    function: str
    location: str
    frames: tuple[str, ...]
    retained_bytes: int
    allocations: int


@dataclass
class CaptureResult:
    """What one capture found, or why there is none (``status`` not ``captured``)."""

    status: str  # captured | unavailable | failed | not_triggered
    reason: str = ""
    pid: int | None = None
    trigger: str = ""
    native: bool = False
    requested_window_s: float | None = None
    started: float | None = None  # Unix seconds tracking began (memray's own clock)
    ended: float | None = None
    window_s: float | None = None
    rss_start_bytes: int | None = None
    rss_end_bytes: int | None = None
    retained_bytes: int | None = None  # heap bytes
    mapped_bytes: int | None = None  # mmap bytes
    attach_s: float | None = None  # wall time of the attach command
    detach_s: float | None = None
    sites: list[Site] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("sites")
        out["site_count"] = len(self.sites)
        return out


# --- may we attach? -------------------------------------------------------------------


def is_python_process(pid: int, proc: Path = Path("/proc")) -> bool | None:
    """True when the process runs a CPython (executable named python*, or libpython
    mapped); None when its files cannot be read."""
    try:
        exe = os.readlink(proc / str(pid) / "exe")
    except OSError:
        exe = ""
    if Path(exe).name.startswith("python"):
        return True
    try:
        maps = (proc / str(pid) / "maps").read_text()
    except OSError:
        return None if not exe else False
    return "libpython3" in maps


def _tracer(pid: int) -> int:
    """PID of the process already tracing ``pid`` (0: none); a process has one tracer."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("TracerPid:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _ptrace_scope() -> int | None:
    try:
        return int(Path("/proc/sys/kernel/yama/ptrace_scope").read_text().strip())
    except (OSError, ValueError):
        return None


def attach_blocker(pid: int) -> str | None:
    """Why ``memray attach`` cannot work on ``pid`` here, in one phrase; None when it may."""
    try:
        proc = psutil.Process(pid)
        name = proc.name()
        uids = proc.uids()
    except psutil.NoSuchProcess:
        return f"process {pid} does not exist"
    except psutil.AccessDenied:
        return f"no permission to inspect process {pid}"
    if pid == os.getpid():
        return f"process {pid} is this Locust process, not the target"
    python = is_python_process(pid)
    if python is False:
        return f"not available for a non-Python target (process {pid} is {name})"
    if python is None:
        return f"cannot read /proc/{pid} to tell whether {name} runs Python"
    if shutil.which("gdb") is None:
        return "gdb is not installed (apt-get install gdb)"
    if tracer := _tracer(pid):
        return f"process {pid} is already traced by process {tracer} (a debugger or profiler)"
    me = os.geteuid()
    if me != 0 and uids.real != me:
        return f"process {pid} belongs to another user (uid {uids.real}); tracing it needs root"
    scope = _ptrace_scope()
    if scope == 3:
        return "kernel.yama.ptrace_scope is 3: no process may be traced"
    if scope == 2 and me != 0:
        return "kernel.yama.ptrace_scope is 2: only root may trace (set it to 0 or run as root)"
    if scope == 1 and me != 0:
        parents = {p.pid for p in proc.parents()}
        if os.getpid() not in parents:
            return (
                "kernel.yama.ptrace_scope is 1: only a parent may trace it "
                "(sysctl kernel.yama.ptrace_scope=0, or run as root)"
            )
    return None


# --- one capture ----------------------------------------------------------------------


def _memray(*args: str, timeout: float = COMMAND_TIMEOUT_S) -> tuple[int, str]:
    """Run ``python -m memray ARGS`` in its own session; (exit code, last line of output)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "memray", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # gdb dies with it on a timeout, the target then runs on
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return -1, f"memray {args[0]} did not finish within {timeout:g} s"
    except BaseException:  # the run quits meanwhile: gdb must not outlive it
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    return proc.returncode, lines[-1] if lines else ""


def _rss(pid: int) -> int | None:
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return None


def capture(
    pid: int,
    folder: Path,
    window_s: float,
    *,
    native: bool = False,
    trigger: str = "",
    top: int = 20,
    deadline: float | None = None,
    sleep: Callable[[float], Any] = time.sleep,
) -> CaptureResult:
    """Capture ``pid``'s allocations for ``window_s`` seconds into ``folder``; never raises
    for a target that cannot be profiled (the result's ``reason`` says why).

    ``deadline`` (``time.monotonic()``) is when tracking must have stopped (the end of
    the stage captured: the next one may free what this one leaked). The window is
    shortened so the detach, reckoned at twice the attach (at least
    :data:`DETACH_ALLOWANCE_S`), ends by then.
    """
    result = CaptureResult(
        "unavailable", pid=pid, trigger=trigger, native=native, requested_window_s=window_s
    )
    blocker = attach_blocker(pid)
    if blocker is not None:
        result.reason = blocker
        return result
    path = Path(folder) / CAPTURE_FILE
    args = ["attach", "--aggregate", "-f", "-o", str(path)]
    args += ["--duration", str(int(window_s + BACKSTOP_S))]
    args += ["--native"] if native else []
    result.rss_start_bytes = _rss(pid)
    t0 = time.monotonic()
    try:
        code, last = _memray(*args, str(pid))
    except BaseException:  # cut while attaching: tracking may have begun, so detach
        _memray("detach", str(pid))
        raise
    result.attach_s = time.monotonic() - t0
    if code != 0:
        result.status, result.reason = "failed", f"memray attach failed: {last or code}"
        return result
    wait = window_s
    if deadline is not None:  # a detach has taken twice an attach on a busy machine
        detach = max(2 * result.attach_s, DETACH_ALLOWANCE_S)
        wait = max(min(wait, deadline - time.monotonic() - detach), MIN_WAIT_S)
    cut: BaseException | None = None
    try:
        sleep(wait)
    except BaseException as exc:  # the run quits (GreenletExit) or Ctrl-C: detach first
        cut = exc
    result.rss_end_bytes = _rss(pid)
    t1 = time.monotonic()
    code, last = _memray("detach", str(pid))
    result.detach_s = time.monotonic() - t1
    if isinstance(cut, KeyboardInterrupt | SystemExit):
        raise cut
    if cut is not None:
        result.reason = "cut short: the run ended before the window did"
    if code != 0 and "no previous" not in last:  # "no previous": the backstop stopped it
        result.status, result.reason = "failed", f"memray detach failed: {last or code}"
        return result
    try:
        sites, total, mapped, started, ended = read_sites(path, top, _cwd(pid))
    except Exception as exc:  # a file memray could not finish or read: say so, go on
        result.status = "failed"
        result.reason = f"cannot read the capture {path.name}: {type(exc).__name__}: {exc}"
        return result
    result.status = "captured"
    if not sites:
        result.reason = result.reason or "nothing allocated in the window was still held at its end"
    result.sites, result.retained_bytes, result.mapped_bytes = sites, total, mapped
    result.started, result.ended = started, ended
    result.window_s = max(ended - started, 1e-3)
    return result


def _short(path: str, base: str | None) -> str:
    """A path relative to the target's working folder when it lies inside it."""
    if base and path.startswith(base.rstrip(os.sep) + os.sep):
        return path[len(base.rstrip(os.sep)) + 1 :]
    return path


def _cwd(pid: int) -> str | None:
    try:
        return str(psutil.Process(pid).cwd())
    except psutil.Error:
        return None


def _own(stack: list[tuple[str, str, int]]) -> bool:
    return any(own in fr[1] for fr in stack for own in _OWN_FRAMES)


def read_sites(
    path: Path, top: int = 20, base: str | None = None
) -> tuple[list[Site], int, int, float, float]:
    """Heap sites then mapping sites (``top`` of each) by retained bytes; the heap and
    mapped bytes retained in all; and tracking's start and end (Unix s).

    Allocations made by memray's own attach code are left out. An allocation
    with no Python frame (the interpreter or a C library on its own) is
    ``(no Python frame)``; with native frames captured, its innermost native one.
    Files under ``base`` (the target's working folder) are shown relative to it.
    """
    import memray  # here: only a capture needs it

    reader = memray.FileReader(str(path))
    meta = reader.metadata
    native = bool(meta.has_native_traces)
    by_site: dict[tuple[str, str, str], list[Any]] = {}
    totals = {"heap": 0, "mapping": 0}
    mmap = int(memray.AllocatorType.MMAP)
    for rec in reader.get_leaked_allocation_records(merge_threads=True):
        stack = rec.stack_trace(FRAMES)
        if _own(stack):
            continue
        if not stack and native:
            stack = rec.hybrid_stack_trace(FRAMES)
        kind = "mapping" if rec.allocator == mmap else "heap"
        totals[kind] += rec.size
        frames = tuple(f"{fn} {_short(file, base)}:{line}" for fn, file, line in stack)
        top_frame = (stack[0][0], f"{_short(stack[0][1], base)}:{stack[0][2]}") if stack else None
        key = (kind, *(top_frame or ("(no Python frame)", "")))
        entry = by_site.setdefault(key, [0, 0, 0, ()])
        entry[0] += rec.size
        entry[1] += rec.n_allocations
        if rec.size > entry[2]:  # the frames of the site's largest record stand for it
            entry[2], entry[3] = rec.size, frames
    sites = [
        Site(kind, fn, loc, frames, size, count)
        for (kind, fn, loc), (size, count, _, frames) in by_site.items()
    ]
    sites.sort(key=lambda s: (s.kind != "heap", -s.retained_bytes, s.function))
    heap = [s for s in sites if s.kind == "heap"][:top]
    return (
        heap + [s for s in sites if s.kind == "mapping"][:top],
        totals["heap"],
        totals["mapping"],
        meta.start_time.timestamp(),
        meta.end_time.timestamp(),
    )


def write_capture(folder: Path, result: CaptureResult) -> None:
    """``leak_capture.json`` always; ``leak_sites.csv`` when there was a capture."""
    folder = Path(folder)
    tmp = folder / (CAPTURE_NAME + ".tmp")
    tmp.write_text(json.dumps(result.as_json(), indent=2, sort_keys=True))
    os.replace(tmp, folder / CAPTURE_NAME)
    if result.status != "captured":
        return
    minutes = (result.window_s or 0) / 60
    totals = {"heap": result.retained_bytes or 0, "mapping": result.mapped_bytes or 0}
    with open(folder / SITES_NAME, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(SITE_COLUMNS)
        for rank, s in enumerate(result.sites, start=1):
            w.writerow(
                [
                    rank,
                    s.kind,
                    s.function,
                    s.location,
                    " <- ".join(s.frames),
                    s.retained_bytes,
                    round(s.retained_bytes / MB / minutes, 4) if minutes else "",
                    s.allocations,
                    round(100 * s.retained_bytes / totals[s.kind], 2) if totals[s.kind] else "",
                ]
            )


# --- the monitor's part ---------------------------------------------------------------


class AllocationProfiler:
    """When to capture, one capture at a time, and the files it leaves.

    :param mode: ``marked`` captures when a stage carries :data:`CAPTURE_PARAM`;
        ``on`` also when the detector calls a leak. One capture per run.
    :param spawn: starts a greenlet (the runner's group, linked to its handler).
    """

    def __init__(
        self,
        *,
        run_dir: Path | None,
        pid: int | None,
        mode: str,
        window_s: float,
        top: int,
        native: bool,
        spawn: Callable[..., Any],
        record: Callable[[str, Any], None],
    ) -> None:
        self.run_dir = run_dir
        self.pid = pid
        self.mode = mode
        self.window_s = window_s
        self.top = top
        self.native = native
        self.spawn = spawn
        self.record = record
        self.result: CaptureResult | None = None
        self.running: Any = None

    def check(self) -> None:
        """At the run's start: a target that cannot be profiled is said now, once, and
        never attached to (a non-Python target, no gdb, no permission)."""
        if self.mode == "off" or self.result is not None:
            return
        why = "no target PID (pass --target-pid, or run the target on loopback)"
        if self.pid is not None:
            why = attach_blocker(self.pid) or ""
        if why:
            self._finish(CaptureResult("unavailable", why, pid=self.pid))

    def consider(
        self,
        stage_params: dict[str, Any],
        stage_left_s: float,
        leak_called: bool,
        run_left_s: float,
    ) -> None:
        """Start the capture when this sample calls for one (and none ran yet)."""
        if self.result is not None or self.running is not None or self.mode == "off":
            return
        if stage_params.get(CAPTURE_PARAM):
            trigger, left = "the stage marked for a capture", stage_left_s
        elif leak_called and self.mode == "on":
            trigger, left = "leak detected", run_left_s
        else:
            return
        window = min(self.window_s, left - ATTACH_ALLOWANCE_S)
        if window < MIN_WINDOW_S:
            self._finish(
                CaptureResult(
                    "unavailable",
                    f"{trigger}, but only {max(left, 0):.1f} s of it were left "
                    f"(a capture needs {MIN_WINDOW_S + ATTACH_ALLOWANCE_S:g} s)",
                    pid=self.pid,
                    trigger=trigger,
                )
            )
            return
        if self.pid is None:
            self._finish(
                CaptureResult(
                    "unavailable",
                    "no target PID (pass --target-pid, or run the target on loopback)",
                    trigger=trigger,
                )
            )
            return
        detail = {"state": "started", "trigger": trigger, "window_s": round(window, 2)}
        self.record("allocation_capture", {**detail, "pid": self.pid})
        log.info("allocation capture: %s; tracking PID %d for %.1f s", trigger, self.pid, window)
        deadline = time.monotonic() + left
        self.running = self.spawn(self._run, self.pid, window, trigger, deadline)

    def _run(self, pid: int, window: float, trigger: str, deadline: float) -> None:
        assert self.run_dir is not None
        result = CaptureResult(
            "failed", "the run ended while memray was attaching", pid=pid, trigger=trigger
        )
        try:
            result = capture(
                pid,
                self.run_dir,
                window,
                native=self.native,
                trigger=trigger,
                top=self.top,
                deadline=deadline,
            )
        finally:
            self.running = None
            self._finish(result)

    def _finish(self, result: CaptureResult) -> None:
        self.result = result
        if result.status == "captured":
            top = result.sites[0] if result.sites else None
            log.info(
                "allocation capture: %.1f MB of heap and %.1f MB of mappings retained in %.1f s; "
                "top site %s",
                (result.retained_bytes or 0) / MB,
                (result.mapped_bytes or 0) / MB,
                result.window_s or 0,
                f"{top.function} {top.location}" if top else "none",
            )
        else:
            log.warning("allocation sites: %s", result.reason)
        self.record(
            "allocation_capture",
            {"state": result.status, "reason": result.reason, "trigger": result.trigger},
        )
        if self.run_dir is not None:
            write_capture(self.run_dir, result)

    def close(self) -> None:
        """At quit: say why there was no capture, when there was none."""
        if self.result is None and self.running is None and self.mode != "off":
            why = (
                "no stage was marked for a capture"
                if self.mode == "marked"
                else "the detector called no leak and no stage was marked for a capture"
            )
            self._finish(CaptureResult("not_triggered", why, pid=self.pid))
