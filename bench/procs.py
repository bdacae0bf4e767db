"""The processes a benchmark starts: the reference service, Locust, wrk; and their CPU.

Everything listens on and talks to 127.0.0.1 only, on ports the kernel hands
out. Every wait has a deadline; a process that outlives it is killed with its
process group, and nothing started here is left running when a benchmark ends.

Locust and wrk run as their own processes (``import locust`` patches the whole
process with gevent), each optionally pinned to one CPU so a load generator and
the service do not take turns on the same core.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import requests

from memstress.common.target import TargetError
from memstress.runner.service import ManagedService, clean_env, free_port, pin, spawn

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "bench"
PYTHON = sys.executable
LOOPBACK = "127.0.0.1"


class BenchError(RuntimeError):
    """A benchmark could not run (a process failed, a deadline passed)."""


def read_rows(path: Path) -> list[dict[str, str]]:
    """A run folder's CSV as rows of text; none when it is missing or unreadable."""
    try:
        with open(path, newline="") as fh:
            return list(csv.DictReader(fh))
    except OSError:
        return []


def cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return list(range(os.cpu_count() or 1))


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a live process (None when it is gone)."""
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return float(t.user + t.system)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> int | None:
    """SIGTERM, then SIGKILL of the process group after ``timeout``; the exit code."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
    return proc.returncode


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    with suppress(subprocess.TimeoutExpired):  # an unkillable process is left to the OS
        proc.wait(10)


# --- the reference service ---------------------------------------------------------


@dataclass
class Service(ManagedService):
    """The reference service with an HTTP session and the figures a benchmark reads."""

    session: requests.Session = field(default_factory=requests.Session)

    def rss(self) -> int:
        return int(psutil.Process(self.pid).memory_info().rss)

    def cpu(self) -> float:
        return cpu_seconds(self.pid) or 0.0

    def get(self, path: str, timeout: float = 10.0) -> Any:
        r = self.session.get(self.url + path, timeout=timeout)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, body: Any = None, timeout: float = 30.0) -> Any:
        r = self.session.post(self.url + path, json=body, timeout=timeout)
        if r.status_code >= 400:
            raise BenchError(f"POST {path}: HTTP {r.status_code}: {r.text[:200]}")
        return r.json()

    def log_tail(self, n: int = 2000) -> str:
        return self.log()[-n:]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        self.session.close()
        return super().stop(sig, timeout)


def start_service(
    workdir: Path,
    *,
    budget_mb: float | None = None,
    faults: bool = True,
    cpu: int | None = None,
    log_level: str = "warning",
    python_args: Sequence[str] = (),
    timeout: float = 30.0,
) -> Service:
    """Start the reference service with its data in ``workdir`` and wait for /health;
    ``python_args`` go to its interpreter before ``-m memstress.service`` (e.g. ``-m memray
    run``, see :meth:`ManagedService.start`)."""
    port = free_port()
    try:
        return Service.start(
            workdir / f"service-{port}",
            workdir / f"service-{port}.log",
            port=port,
            budget_mb=budget_mb,
            faults=faults,
            bind=LOOPBACK,
            log_level=log_level,
            env=clean_env(),
            cpu=cpu,
            python_args=python_args,
            ready="answering",
            timeout=timeout,
        )
    except TargetError as exc:
        raise BenchError(str(exc)) from None


@contextmanager
def service(workdir: Path, **kwargs: Any) -> Iterator[Service]:
    svc = start_service(workdir, **kwargs)
    try:
        yield svc
    finally:
        svc.stop()


# --- CPU accounting from outside -----------------------------------------------------


class CpuWatch:
    """Samples the CPU seconds of some processes every ``period`` s in a thread.

    :meth:`between` interpolates a process's CPU seconds over a wall-clock
    window, so a benchmark can charge a process only for the steady part of a
    run (not its start-up imports or its shutdown).
    """

    def __init__(self, pids: dict[str, int], period: float = 0.2) -> None:
        self.pids = dict(pids)
        self.period = period
        self.samples: dict[str, list[tuple[float, float]]] = {k: [] for k in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-watch", daemon=True)

    def add(self, name: str, pid: int) -> None:
        """Watch one more process; a name stands for one process (not reused)."""
        if name in self.pids:
            raise ValueError(f"CpuWatch: {name!r} is already watched")
        self.samples[name] = []
        self.pids[name] = pid

    def _sample(self) -> None:
        now = time.time()
        for name, pid in list(self.pids.items()):
            c = cpu_seconds(pid)
            if c is not None:
                self.samples[name].append((now, c))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.period)

    def __enter__(self) -> CpuWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def between(self, name: str, t0: float, t1: float) -> float | None:
        """CPU seconds ``name`` spent from ``t0`` to ``t1`` (Unix time), or None."""
        pts = self.samples.get(name) or []
        a, b = _interp(pts, t0), _interp(pts, t1)
        return None if a is None or b is None else max(0.0, b - a)


def _interp(pts: Sequence[tuple[float, float]], t: float) -> float | None:
    if not pts or t < pts[0][0] or t > pts[-1][0]:
        return None
    for (t_a, c_a), (t_b, c_b) in itertools.pairwise(pts):
        if t_a <= t <= t_b:
            return c_a if t_b == t_a else c_a + (c_b - c_a) * (t - t_a) / (t_b - t_a)
    return pts[-1][1]


# --- Locust ------------------------------------------------------------------------


@dataclass
class LocustRun:
    """A finished Locust process: exit code, wall time, its --json-file entries."""

    exit_code: int
    wall_s: float
    out_dir: Path
    log_path: Path
    entries: list[dict[str, Any]]
    started: float
    ended: float

    def entry(self, name: str) -> dict[str, Any] | None:
        return next((e for e in self.entries if e["name"] == name), None)

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def per_second(entry: dict[str, Any]) -> dict[int, int]:
    """A --json-file entry's requests each second (Unix second -> count)."""
    return {int(k): int(v) for k, v in entry.get("num_reqs_per_sec", {}).items()}


def steady_rate(entry: dict[str, Any], skip_s: int = 1) -> tuple[float, int, float, float]:
    """Requests per second over the whole seconds of a run, ``skip_s`` cut at each end.

    Returns ``(rate, requests, window start, window end)``; Locust's per-second
    counts (``num_reqs_per_sec`` in --json-file) leave out the ramp-up and the
    last, partial second.
    """
    per_sec = per_second(entry)
    if not per_sec:
        return 0.0, 0, 0.0, 0.0
    first, last = min(per_sec), max(per_sec)
    lo, hi = first + skip_s, last - skip_s  # whole seconds [lo, hi)
    if hi - lo < 1:
        lo, hi = first, last + 1
    n = sum(v for t, v in per_sec.items() if lo <= t < hi)
    return n / (hi - lo), n, float(lo), float(hi)


def start_locust(
    locustfile: Path,
    out_dir: Path,
    args: Sequence[str],
    *,
    host: str,
    env: dict[str, str] | None = None,
    cpu: int | None = None,
    log_name: str = "locust.log",
) -> subprocess.Popen[bytes]:
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [PYTHON, "-m", "locust", "-f", str(locustfile), "--host", host, *args]
    cmd += ["--json-file", str(out_dir / "locust")]
    proc = spawn(cmd, out_dir / log_name, env=clean_env(env), mode="w")
    pin(proc.pid, cpu)
    return proc


def finish_locust(
    proc: subprocess.Popen[bytes],
    out_dir: Path,
    started: float,
    timeout: float,
    log_name: str = "locust.log",
) -> LocustRun:
    """Wait for a Locust process (killed after ``timeout``) and read its --json-file."""
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise BenchError(
            f"Locust did not end within {timeout:g} s: {_tail(out_dir / log_name)}"
        ) from None
    ended = time.time()
    path = out_dir / "locust.json"
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        tail = _tail(out_dir / log_name)
        raise BenchError(f"Locust wrote no {path.name} (exit {code}): {tail}") from None
    return LocustRun(code, ended - started, out_dir, out_dir / log_name, entries, started, ended)


def run_locust(
    locustfile: Path,
    out_dir: Path,
    args: Sequence[str],
    *,
    host: str,
    timeout: float,
    env: dict[str, str] | None = None,
    cpu: int | None = None,
    watch: CpuWatch | None = None,
    watch_as: str = "locust",
) -> LocustRun:
    """Run Locust to its end; with ``watch``, its CPU is sampled under the name ``watch_as``."""
    started = time.time()
    proc = start_locust(locustfile, out_dir, args, host=host, env=env, cpu=cpu)
    if watch is not None:
        watch.add(watch_as, proc.pid)
    return finish_locust(proc, out_dir, started, timeout)


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


# --- wrk -----------------------------------------------------------------------------


def wrk_path() -> str | None:
    return shutil.which("wrk")


def run_wrk(
    url: str,
    *,
    connections: int,
    seconds: float,
    script: Path | None = None,
    cpu: int | None = None,
) -> dict[str, float]:
    """One ``wrk -t1`` run; requests/s and latency figures parsed from its summary."""
    exe = wrk_path()
    if exe is None:
        raise BenchError("wrk is not installed")
    cmd = [exe, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    if script is not None:
        cmd += ["-s", str(script)]
    cmd.append(url)
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    pin(proc.pid, cpu)
    try:
        out, _ = proc.communicate(timeout=seconds + 30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise BenchError("wrk did not end in time") from None
    return parse_wrk(out.decode(errors="replace"))


def parse_wrk(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        parts = line.split()
        if line.startswith("Requests/sec:"):
            out["rps"] = float(parts[1])
        elif "requests in" in line and parts and parts[0].isdigit():
            out["requests"] = float(parts[0])
        elif line.strip().startswith("Non-2xx or 3xx responses:"):
            out["non_2xx"] = float(parts[-1])
        elif len(parts) == 2 and parts[0] in ("50%", "90%", "99%"):
            out[f"p{parts[0][:-1]}_ms"] = _ms(parts[1])
    if "rps" not in out:
        raise BenchError(f"wrk printed no Requests/sec: {text[-500:]}")
    return out


def _ms(text: str) -> float:
    for unit, k in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * k
    return float(text)


# --- the fast target -------------------------------------------------------------------


@dataclass
class FastTarget:
    """``bench.fast_target``: answers every request at once (see its module doc)."""

    proc: subprocess.Popen[bytes]
    port: int

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"


@contextmanager
def fast_target(
    workdir: Path, *, cpu: int | None = None, timeout: float = 20.0
) -> Iterator[FastTarget]:
    """Start ``python -m bench.fast_target``, pinned to ``cpu``; stopped on the way out."""
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / "fast-target.port"
    proc = spawn([PYTHON, "-m", "bench.fast_target"], out, env=clean_env(), mode="w", cwd=ROOT)
    try:
        deadline = time.monotonic() + timeout
        port = 0
        while time.monotonic() < deadline and proc.poll() is None:
            first = out.read_text().split("\n", 1)
            if len(first) > 1 and first[0].strip().isdigit():
                port = int(first[0])
                break
            time.sleep(0.05)
        if not port:
            raise BenchError(f"the fast target did not start: {_tail(out)}")
        pin(proc.pid, cpu)
        yield FastTarget(proc, port)
    finally:
        stop_process(proc, 5.0)
