"""Capture cost: the target's requests/s while memray tracks it, against while it does not.

One reference service, pinned to one CPU, kept busy by a closed loop of
:data:`CLIENTS` threads in this process (each: add a message to its agent, read
that agent's context, search a namespace, no pause), so the service is
saturated and its throughput is what the requests/s measure. Meanwhile this
process alternates windows of the same length: no capture, then a capture
(:func:`monitors.allocations.capture`, the code ``--profile-leaks`` runs:
attach, track for the window, detach). Interleaved in one run, so drift and
the neighbours' load fall on both alike.

Figures, from the completions counted per whole second:

- **tracking ratio**: requests/s while tracking over requests/s without, the
  median of the windows' rates;
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


def _note(w: dict[str, Any]) -> str:
    if w["kind"] != "tracking":
        return ""
    return f"attach {w.get('attach_s') or 0:.1f} s, detach {w.get('detach_s') or 0:.1f} s"


def run(workdir: Path, small: bool) -> BenchResult:
    rounds = 1 if small else 4
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
            "while gdb held the target, as seconds of service lost per capture."
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
    result.raw = {"windows": windows, "window_s": window, "errors": load.errors}
    result.ratios = {"tracking_rps_ratio": None if ratio is None else round(ratio, 3)}
    result.goals = [
        Goal(
            "requests/s while tracking, over without",
            None if ratio is None else round(ratio, 3),
            ">=",
            GOAL_RATIO,
            note="median of the windows' rates, same run",
            id="capture_tracking_rps_ratio",
        ),
    ]
    result.tables = [
        Table(
            "Windows, in order",
            ["window", "capture", "req/s", "requests", "stall s", "note"],
            rows,
        )
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
    ]
    result.setup = {"clients": CLIENTS, "rounds": rounds, "window_s": window}
    return result
