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
- the target unreachable on ``target_lost_after`` consecutive samples: stop
  (exit 3).
"""

from __future__ import annotations

from dataclasses import dataclass

from common.config import Safety
from common.exitcodes import ExitCode


@dataclass(frozen=True)
class Stop:
    kind: str  # the events.csv kind: emergency_stop | target_lost
    reason: str  # one line for people: what crossed which limit
    exit_code: int


class SafetyGuard:
    def __init__(self, safety: Safety) -> None:
        self.safety = safety
        self._pressure_since: float | None = None
        self._lost = 0

    def check(
        self,
        now: float,
        elapsed_s: float,
        host_percent: float | None,
        pressure: float | None,
        target_ok: bool | None,
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
        if target_ok is not None:
            self._lost = 0 if target_ok else self._lost + 1
            if self._lost >= s.target_lost_after:
                return Stop(
                    "target_lost",
                    f"target unreachable on {self._lost} consecutive samples "
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
