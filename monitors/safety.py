"""The safety guard: when a run must stop, and with which exit code.

Pure: :meth:`SafetyGuard.check` takes one sample's figures and the time and
answers a :class:`Stop` or None. The monitor acts on it (event, log, exit
code, ``runner.quit()``); see :class:`monitors.monitor.MemoryMonitor`.

Limits (``safety`` in the config):

- host memory percent >= ``emergency_shutdown_threshold``: stop now (exit 4);
- the target's pressure above ``target_pressure_limit`` for
  ``target_pressure_limit_s`` seconds without a break: stop (exit 4);
- the run longer than ``max_test_duration``: stop (exit 4); the shape ends a
  run long before this, so reaching it means something kept the run going;
- the target lost (exit 3): when its PID is known, its process gone on
  ``target_lost_after`` consecutive samples; without a PID, no source able to
  read its memory on that many consecutive samples, or no answer to that many
  consecutive health checks. A target that answers badly (junk, slow, 5xx) is
  not lost: its sources are degraded and the run goes on.
"""

from __future__ import annotations

from dataclasses import dataclass

from memstress.common.config import Safety
from memstress.common.exitcodes import ExitCode


@dataclass(frozen=True)
class Seen:
    """What one sample saw of the target."""

    process: bool | None = None  # its process is there; None when no PID is read
    memory: bool | None = None  # some source read its memory; None when none can


@dataclass(frozen=True)
class Stop:
    kind: str  # the events.csv kind: emergency_stop | target_lost
    reason: str  # one line for people: what crossed which limit
    exit_code: int


class SafetyGuard:
    def __init__(self, safety: Safety) -> None:
        self.safety = safety
        self._pressure_since: float | None = None
        self._lost = 0  # consecutive samples without the target
        self._unanswered = 0  # consecutive health checks without an answer
        self._pid_known = False

    def check(
        self,
        now: float,
        elapsed_s: float,
        host_percent: float | None,
        pressure: float | None,
        target: Seen,
    ) -> Stop | None:
        s = self.safety
        if host_percent is not None and host_percent >= s.emergency_shutdown_threshold:
            return Stop(
                "emergency_stop",
                f"host memory {host_percent:.1f}% >= emergency_shutdown_threshold "
                f"{s.emergency_shutdown_threshold:g}%",
                ExitCode.SAFETY,
            )
        if pressure is not None:
            if pressure > s.target_pressure_limit:
                if self._pressure_since is None:
                    self._pressure_since = now
                held = now - self._pressure_since
                if held >= s.target_pressure_limit_s:
                    return Stop(
                        "emergency_stop",
                        f"target pressure {pressure:.1f} > target_pressure_limit "
                        f"{s.target_pressure_limit:g} for {held:.1f} s "
                        f"(limit {s.target_pressure_limit_s:g} s)",
                        ExitCode.SAFETY,
                    )
            else:
                self._pressure_since = None
        self._pid_known = target.process is not None
        there = target.process if target.process is not None else target.memory
        if there is not None:
            self._lost = 0 if there else self._lost + 1
            if self._lost >= s.target_lost_after:
                what = (
                    "target process gone"
                    if self._pid_known
                    else "no source could read the target's memory"
                )
                return Stop(
                    "target_lost",
                    f"{what} on {self._lost} consecutive samples "
                    f"(target_lost_after {s.target_lost_after})",
                    ExitCode.TARGET_LOST,
                )
        if elapsed_s >= s.max_test_duration:
            return Stop(
                "emergency_stop",
                f"run time {elapsed_s:.0f} s reached max_test_duration {s.max_test_duration:g} s",
                ExitCode.SAFETY,
            )
        return None

    def health(self, answered: bool) -> Stop | None:
        """One health check: did the target answer at all (any HTTP status)?

        Counts only while no PID is read: with one, the process says whether the
        target is there, and a failing health check is an event, not a loss.
        """
        if self._pid_known:
            self._unanswered = 0
            return None
        self._unanswered = 0 if answered else self._unanswered + 1
        n = self.safety.target_lost_after
        if self._unanswered >= n:
            return Stop(
                "target_lost",
                f"no answer to /health on {self._unanswered} consecutive checks "
                f"(target_lost_after {n})",
                ExitCode.TARGET_LOST,
            )
        return None
