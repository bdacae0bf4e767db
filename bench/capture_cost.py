"""Capture cost: the target's requests/s while memray tracks it, against while it does not.

One reference service, pinned to one CPU, kept busy by a closed loop of
:data:`CLIENTS` threads in this process (each: add a message to its agent, read
that agent's context, search a namespace, no pause), so the service is
saturated and its throughput is what the requests/s measure. Meanwhile this
process alternates windows of the same length: no capture, then a capture
(:func:`monitors.allocations.capture`, the code ``--profile-leaks`` runs:
attach, track for the window, detach). Interleaved in one run, so drift and
the neighbours' load fall on both alike.

Then a reference for what memray's tracking costs by itself, with no gdb and no
attach: two fresh services on the same CPU, one plain and one started under
``python -m memray run --aggregate`` (tracking from its first instruction, the
same aggregated tracker the attach starts), each loaded in turn by the same
closed loop for windows of the same length, the order flipped every round.

Figures, from the completions counted per whole second:

- **tracking ratio**: requests/s while tracking over requests/s without, the
  median of the windows' rates;
- **memray-run ratio**: the memray-run service's requests/s over the plain
  one's (medians), and the tracking ratio over it: near 1 when our attach adds
  nothing to what memray's tracking costs anyway;
- **attach + detach stall**: seconds of service lost per capture while gdb had
  the target stopped (the off rate times the attach and detach seconds, less
  what was served in them).
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import requests

from bench.procs import Service, cpus, pin, service
from bench.results import BenchResult, Goal, Table
from memstress.monitors.allocations import attach_blocker, capture

CLIENTS = 4
GOAL_RATIO = 0.9  # tracking keeps at least 90% of the target's request rate
WARMUP_S = 3.0
REF_WARMUP_S = 1.5  # each reference window's load starts afresh: its sessions connect
MEMRAY_RUN_FILE = "memray-run.memray"


class Load:
    """A closed loop of requests with no pause, completions counted per second."""

    def __init__(self, url: str, seconds_cap: float) -> None:
        self.url = url
        self.counts: Counter[int] = Counter()
        self.errors = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._cap = time.monotonic() + seconds_cap  # bounded whatever happens
        self._threads = [
            threading.Thread(target=self._loop, args=(k,), daemon=True) for k in range(CLIENTS)
        ]

    def _loop(self, k: int) -> None:
        agent, ns = f"bench-capture-agent-{k}", "bench-capture-ns"
        calls = [
            ("POST", f"/agents/{agent}/messages", {"role": "user", "content": "hello " * 40}),
            ("GET", f"/agents/{agent}/context?query=hello&k=5", None),
            ("POST", "/vectors/search", {"namespace": ns, "query": "hello", "k": 5}),
        ]
        with requests.Session() as s:
            i = 0
            while not self._stop.is_set() and time.monotonic() < self._cap:
                method, path, body = calls[i % len(calls)]
                i += 1
                try:
                    r = s.request(method, f"{self.url}{path}", json=body, timeout=30)
                    ok = r.status_code < 500 or r.status_code == 503
                except requests.RequestException:
                    ok = False
                with self._lock:
                    if ok:
                        self.counts[int(time.time())] += 1
                    else:
                        self.errors += 1

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(35)

    def rate(self, t0: float, t1: float) -> tuple[float | None, int]:
        """Requests/s over the whole seconds inside [t0, t1)."""
        lo, hi = int(t0) + 1, int(t1)
        if hi <= lo:
            return None, 0
        with self._lock:
            n = sum(self.counts.get(t, 0) for t in range(lo, hi))
        return n / (hi - lo), n


def _windows(svc: Service, workdir: Path, rounds: int, window: float) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(rounds):
        t0 = time.time()
        time.sleep(window)
        out.append({"kind": "off", "t0": t0, "t1": time.time()})
        tracked: dict[str, float] = {}

        def track(seconds: float, tracked: dict[str, float] = tracked) -> None:
            tracked["t0"] = time.time()
            time.sleep(seconds)
            tracked["t1"] = time.time()

        folder = workdir / f"capture-{i}"
        folder.mkdir(parents=True, exist_ok=True)
        c0 = time.time()
        res = capture(svc.pid, folder, window, sleep=track)
        c1 = time.time()
        entry: dict[str, Any] = {
            "kind": "tracking",
            "status": res.status,
            "reason": res.reason,
            "attach_s": res.attach_s,
            "detach_s": res.detach_s,
            "retained_mb": (res.retained_bytes or 0) / 2**20,
        }
        if "t0" in tracked:
            entry.update(t0=tracked["t0"], t1=tracked["t1"], c0=c0, c1=c1)
        out.append(entry)
    return out


def memray_run_args(path: Path) -> tuple[str, ...]:
    """The interpreter arguments that run the service under ``memray run --aggregate``:
    memray from this interpreter (``-m memray``, as :mod:`monitors.allocations` runs it),
    the aggregated tracker the attach starts, its file at ``path``."""
    return ("-m", "memray", "run", "--aggregate", "-q", "-f", "-o", str(path))


def _reference(
    workdir: Path, cpu: int | None, rounds: int, window: float
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Windows of a plain service and of one under ``memray run``, loaded in turn."""
    path = workdir / MEMRAY_RUN_FILE
    out: list[dict[str, Any]] = []
    with (
        service(workdir, cpu=cpu) as plain,
        service(workdir, cpu=cpu, python_args=memray_run_args(path)) as tracked,
    ):
        pair = [("plain", plain), ("memray run", tracked)]
        for i in range(rounds):
            for kind, svc in pair if i % 2 == 0 else pair[::-1]:
                with Load(svc.url, REF_WARMUP_S + window + 60) as load:
                    time.sleep(REF_WARMUP_S)
                    t0 = time.time()
                    time.sleep(window)
                    t1 = time.time()
                rate, n = load.rate(t0, t1)
                out.append(
                    {"kind": kind, "t0": t0, "t1": t1, "rps": rate, "n": n, "errors": load.errors}
                )
        code = tracked.stop()  # a clean stop: memray writes its file as the service exits
    info = {
        "exit_code": code,
        "file": str(path),
        "file_bytes": path.stat().st_size if path.exists() else 0,
    }
    return out, info


def _why(ratio: float | None, run_ratio: float | None) -> str:
    """The goal's reason when it is missed: what the memray-run reference says about it."""
    if ratio is None or ratio >= GOAL_RATIO:
        return ""
    if run_ratio is None:
        return "the memray-run reference was not measured in this run"
    ours = f"our attach+track served {ratio:.2f}x, {ratio / run_ratio:.2f}x of that"
    run = (
        f"the service under `memray run --aggregate` (no attach) served {run_ratio:.2f}x "
        "its plain rate in this run"
    )
    if run_ratio >= GOAL_RATIO:
        return f"not memray's own tracking: {run}; {ours}, so the attach path costs the rest"
    if ratio / run_ratio >= GOAL_RATIO:
        return f"memray's own tracking: {run}; {ours}"
    return f"memray's own tracking and more: {run}; {ours}, a further loss on top"


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def _note(w: dict[str, Any]) -> str:
    if w["kind"] != "tracking":
        return ""
    return f"attach {w.get('attach_s') or 0:.1f} s, detach {w.get('detach_s') or 0:.1f} s"


def run(workdir: Path, small: bool) -> BenchResult:
    rounds = 1 if small else 4
    ref_rounds = 1 if small else 2
    window = 6.0 if small else 10.0
    cores = cpus()
    svc_cpu, gen_cpu = (cores[0], cores[1]) if len(cores) >= 2 else (None, None)
    result = BenchResult(
        name="capture",
        title="Capture cost: target requests/s with memray tracking vs without",
        mode="small" if small else "full",
        what=(
            f"One reference service pinned to one CPU, saturated by {CLIENTS} client threads "
            "pinned to the other (add a message, read an agent's context, search; no pause); "
            f"meanwhile {rounds} rounds of a {window:g} s window without a capture, then a "
            f"capture of {window:g} s (`monitors.allocations.capture`: memray attach "
            "--aggregate, track, memray detach). Requests/s: completions counted per whole "
            "second inside each window; the attach and detach stall: requests not served "
            "while gdb held the target, as seconds of service lost per capture. Then the "
            "reference for memray's own cost: a fresh plain service and a fresh one under "
            "`python -m memray run --aggregate` (no gdb, no attach), same CPU, loaded in turn "
            f"by the same loop for {ref_rounds} rounds of one {window:g} s window each, the "
            "order flipped every round."
        ),
    )
    with service(workdir, cpu=svc_cpu) as svc:
        blocker = attach_blocker(svc.pid)
        if blocker is not None:
            result.notes.append(f"not measured: {blocker}")
            return result
        pin(os.getpid(), gen_cpu)  # the load threads and the memray commands: the other CPU
        cap_s = WARMUP_S + rounds * (2 * window + 120)
        with Load(svc.url, cap_s) as load:
            time.sleep(WARMUP_S)
            windows = _windows(svc, workdir, rounds, window)
    ref_windows, ref_info = _reference(workdir, svc_cpu, ref_rounds, window)
    rows: list[list[Any]] = []
    off_rates: list[float | None] = []
    on_rates: list[float | None] = []
    stalls: list[float] = []
    for w in windows:
        if "t0" not in w:
            rows.append([w["kind"], w.get("status", ""), None, None, None, w.get("reason", "")])
            continue
        rate, n = load.rate(w["t0"], w["t1"])
        (off_rates if w["kind"] == "off" else on_rates).append(rate)
        stall = None
        if w["kind"] == "tracking" and off_rates and off_rates[-1]:
            ref = off_rates[-1]
            _, n_attach = load.rate(w["c0"], w["t0"])
            _, n_detach = load.rate(w["t1"], w["c1"])
            busy = (int(w["t0"]) - int(w["c0"]) - 1) + (int(w["c1"]) - int(w["t1"]) - 1)
            stall = max(0.0, busy - (n_attach + n_detach) / ref) if busy > 0 else 0.0
            stalls.append(stall)
        rows.append(
            [
                w["kind"],
                w.get("status", ""),
                None if rate is None else round(rate, 1),
                n,
                None if stall is None else round(stall, 2),
                _note(w),
            ]
        )
    off = [r for r in off_rates if r]
    on = [r for r in on_rates if r is not None]
    ratio = statistics.median(on) / statistics.median(off) if off and on else None
    stall_s = statistics.median(stalls) if stalls else None
    plain = [w["rps"] for w in ref_windows if w["kind"] == "plain" and w["rps"]]
    under = [w["rps"] for w in ref_windows if w["kind"] == "memray run" and w["rps"] is not None]
    run_ratio = statistics.median(under) / statistics.median(plain) if plain and under else None
    if not ref_info["file_bytes"]:  # memray wrote nothing: it did not track that service
        result.notes.append(f"the memray-run service left no {MEMRAY_RUN_FILE}: not a reference")
        run_ratio = None
    over_run = ratio / run_ratio if ratio is not None and run_ratio else None
    result.raw = {
        "windows": windows,
        "window_s": window,
        "errors": load.errors,
        "reference_windows": ref_windows,
        "memray_run": ref_info,
    }
    result.ratios = {
        "tracking_rps_ratio": _r(ratio),
        "memray_run_rps_ratio": _r(run_ratio),
        "tracking_over_memray_run": _r(over_run),
    }
    result.goals = [
        Goal.of(
            "capture_tracking_rps_ratio",
            _r(ratio),
            note="median of the windows' rates, same run",
            reason=_why(ratio, run_ratio),
        ),
    ]
    result.tables = [
        Table(
            "Windows, in order",
            ["window", "capture", "req/s", "requests", "stall s", "note"],
            rows,
        ),
        Table(
            "Reference: plain service vs under `memray run --aggregate`, in order",
            ["service", "req/s", "requests", "errors"],
            [
                [w["kind"], None if w["rps"] is None else round(w["rps"], 1), w["n"], w["errors"]]
                for w in ref_windows
            ],
        ),
    ]
    result.reading = [
        f"While memray tracked the service it served {ratio:.0%} of the requests/s it "
        "served without a capture (median of the windows)."
        if ratio is not None
        else "No ratio: a window had no whole second or no capture was taken.",
        f"Each capture stopped the service for about {stall_s:.1f} s in all while gdb "
        "attached and detached (requests not served at the off rate)."
        if stall_s is not None
        else "No attach/detach stall measured.",
        f"Started under `memray run --aggregate` (tracking from the start, no attach), the "
        f"service served {run_ratio:.0%} of a plain service's requests/s; the attach's ratio "
        f"is {over_run:.2f}x of that."
        if run_ratio is not None and over_run is not None
        else "No memray-run reference: a side had no rate.",
    ]
    result.setup = {"clients": CLIENTS, "rounds": rounds, "window_s": window}
    return result
