"""The leak detector against real target processes: each memory shape, sampled live.

Each target is ``tests/fixtures/memory_target.py``, a process of its own on a free
loopback port whose real memory (touched blocks) follows one shape, and which serves
``/memory/stats`` as the reference service does (its RSS, and for one shape a
``conversations`` tier with ``bytes`` and ``limit_bytes``). The test samples each every
0.25 s, in a thread of its own, with the monitor's own sources (``ProcessSource`` by
PID, ``StatsSource`` over HTTP) and feeds the detector what the monitor feeds it
(:func:`judged_bytes`, :func:`tier_readings`). Shapes run ten times faster than real
life, and the detector with ``on_run_clock(settings, 0.1)`` (as a run shortened to a
tenth): window 0.5 s, lookback 48 s, the same 3.2 MB rise. So "within 120 s" below is
within 12 s here, counted in the sampler's schedule (:meth:`Watched.scheduled_s`).

The shapes are fixed (no seed); the detector's settings were tuned on other series
(tests/leak_series.py, ``TUNING_SEEDS``).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import gevent
import pytest

from memstress.common.config import load_config
from memstress.common.target import TargetClient
from memstress.monitors.leak import (
    LEAK_VERDICT,
    NO_LEAK,
    PLATEAU,
    STEP,
    FinalVerdict,
    LeakDetector,
    judged_bytes,
    on_run_clock,
    tier_readings,
)
from memstress.monitors.sampler import Sampler
from memstress.monitors.sources import TIERS, ProcessSource, StatsSource
from memstress.runner.service import clean_env, free_port

pytestmark = pytest.mark.slow

TARGET = Path(__file__).parent / "fixtures" / "memory_target.py"
INTERVAL = 0.25
CLOCK = 0.1  # shapes and detector run ten times faster than at full length
SETTINGS = on_run_clock(load_config().monitor.leak_detection, CLOCK, INTERVAL)
LIFE_S = {
    "step": 35,
    "leak": 28,
    "fill": 58,
    "saw": 40,
    "stairs": 36,
    "stepleak": 30,
    "tier": 24,
}


@dataclass
class Watched:
    shape: str
    proc: subprocess.Popen[bytes]
    sampler: Sampler
    offset: float = 0.0  # time.time() at its first sample, which starts its shape clock
    detector: LeakDetector = field(default_factory=lambda: LeakDetector(SETTINGS))
    events: list[tuple[float, str, str, str]] = field(default_factory=list)  # clock_s, ...
    rounds: int = 0  # slots of the schedule in which it was read
    skipped: int = 0  # slots of the schedule missed while it lived (a round ran late)
    samples: int = 0  # rounds that gave a whole sample
    sampled: list[float] = field(default_factory=list)  # shape clock of each whole sample
    final: FinalVerdict | None = None

    def clock(self, t: float) -> float:
        return t - self.offset

    def scheduled_s(self, start: float, end: float) -> float:
        """Seconds of the sampler's schedule from ``start`` to ``end`` (shape clock): the
        slots in which the detector got a sample. ``end - start`` when no slot was skipped;
        on a loaded machine a late round skips slots, and a bound on how soon something
        is called is counted this way, against the sampler's own schedule (issue 12)."""
        return sum(1 for t in self.sampled if start < t <= end) * INTERVAL


def start(shape: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(TARGET), str(port), shape, str(LIFE_S[shape])],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=clean_env(),
    )
    return proc, f"http://127.0.0.1:{port}"


def watch(w: Watched, deadline: float) -> None:
    """Sample one target every INTERVAL until it exits, in a thread of its own: a slow
    answer from one target delays no other's samples. A round that overruns whole slots
    skips them, counted. Each thread touches only its own Watched (and its own gevent hub,
    which the sampler's reads use)."""
    try:
        next_at = time.monotonic()
        while w.proc.poll() is None and time.monotonic() < deadline:
            now = time.time()
            if not w.rounds:
                w.offset = now
            w.rounds += 1
            row = w.sampler.take().row
            if "stats_rss_bytes" in row and row.get("rss_bytes") is not None:
                tiers = tier_readings(row, TIERS)
                w.samples += 1
                w.sampled.append(w.clock(now))
                for e in w.detector.add(now, judged_bytes(row["rss_bytes"], tiers), tiers).events:
                    w.events.append((w.clock(now), e.kind, e.series, e.reason))
            # (else it is ending: the sample is not whole)
            next_at += INTERVAL
            late = time.monotonic() - next_at
            if late >= INTERVAL:
                missed = int(late // INTERVAL)
                next_at += missed * INTERVAL
                w.skipped += missed
            time.sleep(max(0.0, next_at - time.monotonic()))
        if w.proc.poll() is not None:
            w.final = w.detector.final_verdict()
    finally:
        gevent.get_hub().destroy(destroy_loop=True)


@pytest.fixture(scope="module")
def watched() -> Iterator[dict[str, Watched]]:
    targets: dict[str, Watched] = {}
    try:
        for shape in LIFE_S:  # all started at once; each one's clock starts at its first sample
            proc, url = start(shape)
            sampler = Sampler(
                [ProcessSource(proc.pid), StatsSource(TargetClient(url, timeout=2.0))]
            )
            targets[shape] = Watched(shape, proc, sampler)
        for w in targets.values():
            assert w.proc.stdout is not None
            line = w.proc.stdout.readline()
            assert line.strip() == b"ready", (w.shape, line)
        deadline = time.monotonic() + max(LIFE_S.values()) + 20
        threads = [threading.Thread(target=watch, args=(w, deadline)) for w in targets.values()]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(1.0, deadline + 10 - time.monotonic()))
        outlived = [w.shape for w in targets.values() if w.final is None]
        assert not outlived, f"targets outlived their lives: {outlived}"
        yield targets
    finally:
        for w in targets.values():
            if w.proc.poll() is None:
                w.proc.kill()
            w.proc.wait(10)
            if w.proc.stdout is not None:
                w.proc.stdout.close()


def called(w: Watched) -> list[float]:
    return [t for t, k, _, _ in w.events if k == "leak_detected"]


def test_every_target_was_sampled_through(watched: dict[str, Watched]) -> None:
    """Counted in the schedule's slots, so a loaded machine (late rounds) cannot fail it:
    every slot of a target's life was read or counted as skipped, and nearly every read
    gave a whole sample."""
    for w in watched.values():
        seen = (w.shape, w.rounds, w.skipped, w.samples, w.sampled[0], w.sampled[-1])
        assert w.sampled[-1] >= LIFE_S[w.shape] - 1.5, seen  # sampled to the end of its life
        slots = (w.sampled[-1] - w.sampled[0]) / INTERVAL
        assert w.rounds + w.skipped >= slots, seen
        assert w.samples >= 0.9 * w.rounds, seen  # a read may time out on a loaded machine
        assert w.final is not None


def test_a_real_step_after_a_warmup_is_a_step_not_a_leak(watched: dict[str, Watched]) -> None:
    w = watched["step"]
    assert called(w) == [], w.events
    assert w.final is not None and w.final.verdict == NO_LEAK, w.final
    steps = [e for e in w.final.episodes if e.kind == STEP]
    assert len(steps) == 1 and steps[0].step_mb is not None, w.final.episodes
    assert 30 <= steps[0].step_mb <= 50
    assert abs(w.clock(steps[0].called_at) - 9) <= 1.5
    assert "plain RSS" in w.final.tiers_note  # this target reports no tiers


def test_a_real_steady_leak_is_called_within_its_bound(watched: dict[str, Watched]) -> None:
    w = watched["leak"]  # 20 MB/min here: 2 MB/min at full length, bound 120 s -> 12 s
    calls = called(w)
    assert calls and calls[0] > 6 and w.scheduled_s(6, calls[0]) <= 12, w.events
    assert w.final is not None and w.final.verdict == LEAK_VERDICT
    assert w.final.slope_mb_min is not None and 14 <= w.final.slope_mb_min <= 28


def test_a_real_saturating_fill_ends_as_a_plateau(watched: dict[str, Watched]) -> None:
    w = watched["fill"]  # rate below the 4 MB/min threshold at 4 + 9 ln(66.7) = 41.8 s
    kinds = [k for _, k, _, _ in w.events]
    assert kinds == ["leak_detected", "leak_cleared"], w.events
    assert w.scheduled_s(0, w.events[0][0]) <= 4 + 9 * 1.5  # called in its fast phase
    assert w.scheduled_s(0, w.events[1][0]) <= 41.8 + 12
    assert w.final is not None and w.final.verdict == NO_LEAK
    assert [e.kind for e in w.final.episodes if e.kind != STEP] == [PLATEAU]


def test_a_real_sawtooth_raises_no_alarm(watched: dict[str, Watched]) -> None:
    w = watched["saw"]
    assert called(w) == [], w.events
    assert w.final is not None and w.final.verdict == NO_LEAK


def test_a_real_staircase_is_a_leak(watched: dict[str, Watched]) -> None:
    w = watched["stairs"]  # 5 MB every 6 s from 6 s
    calls = called(w)
    assert calls and w.scheduled_s(0, calls[0]) <= 6 + 3 * 6 + 6, w.events
    assert w.final is not None and w.final.verdict == LEAK_VERDICT


def test_a_real_leak_right_after_a_step_is_called(watched: dict[str, Watched]) -> None:
    w = watched["stepleak"]
    calls = called(w)
    assert calls and calls[0] - 8 >= 6, w.events  # not on the step itself
    assert w.scheduled_s(8, calls[0]) <= 12, w.events
    assert w.final is not None and w.final.verdict == LEAK_VERDICT


def test_a_real_tier_past_its_limit_is_called_naming_it(watched: dict[str, Watched]) -> None:
    w = watched["tier"]  # conversations: 8 MB limit reached at 4 s, then +30 MB/min
    tier_calls = [t for t, k, s, _ in w.events if k == "leak_detected" and s == "conversations"]
    assert tier_calls and w.scheduled_s(4, tier_calls[0]) <= 12, w.events
    assert w.final is not None and w.final.verdict == LEAK_VERDICT
    (finding,) = w.final.tiers
    assert finding.tier == "conversations" and finding.limit_mb == 8 and finding.active
    assert 24 <= finding.slope_mb_min <= 36
    assert finding.text.startswith("conversations: +") and "past its 8 MB limit" in finding.text
