"""The monitor's calls on the target between samples: health checks and cleanup cycles.

:class:`Upkeep` holds two loops, each spawned by the monitor in the runner's greenlet
group on its own interval:

- :meth:`Upkeep.health_loop`: ``GET /health`` every ``system_health_check_interval``
  (a user's own ``health_path`` instead, where the target profile gives one). Each check
  is a ``health_ok`` or ``health_failed`` event; the safety guard decides when checks
  that go unanswered mean the target is lost, and the monitor stops the run;
- :meth:`Upkeep.cleanup_loop`: ``POST /memory/cycle`` every ``memory_cleanup_interval``,
  each answer (or failure) a ``cleanup`` event.

A target that is not an HTTP URL has neither. A user's own target (``api="auto"``) is
asked the memstress API's endpoints only once it has been seen speaking it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import gevent
import requests

from memstress.common.context import RunContext
from memstress.common.exitcodes import ExitCode
from memstress.common.target import TargetClient, TargetError
from memstress.monitors.options import TargetProfile
from memstress.monitors.safety import SafetyGuard, Stop

log = logging.getLogger(__name__)


class Upkeep:
    """Health checks and cleanup cycles against ``host``, for one monitor.

    :param speaks_api: whether the target has answered ``/memory/stats`` yet (asked
        before each call, for a user's own target).
    :param stopping: whether the run is already stopping (no second stop).
    :param stop_run: stops the run for a lost target.
    """

    def __init__(
        self,
        host: str,
        context: RunContext,
        profile: TargetProfile,
        guard: SafetyGuard,
        *,
        speaks_api: Callable[[], bool],
        stopping: Callable[[], bool],
        stop_run: Callable[[Stop], None],
    ) -> None:
        self.host = host
        self.context = context
        self.profile = profile
        self.guard = guard
        self._speaks_api = speaks_api
        self._stopping = stopping
        self._stop_run = stop_run
        self._failures = 0  # consecutive failures of a user-given health check

    def _http(self) -> bool:
        return urlsplit(self.host).scheme in ("http", "https")

    def _asks_api(self) -> bool:
        """May the memstress API's endpoints be asked now?"""
        return not self.profile.own_load or self._speaks_api()

    def _client(self) -> TargetClient:
        return TargetClient(self.host, timeout=self.context.config.monitor.http_timeout)

    def health_loop(self, every: float) -> None:
        if self.profile.health_path:
            self._user_health_loop(every, self.profile.health_path)
            return
        if not self._http():
            return  # only an HTTP target has a /health to ask
        client = self._client()
        try:
            while True:
                gevent.sleep(every)
                if not self._asks_api():
                    continue  # not (yet) seen speaking the memstress API: no /health to ask
                answered = True
                try:
                    h = client.health()
                    status, code = h.get("status"), h.get("http_status")
                    ok = code == 200 and status in ("ok", "degraded")
                    detail = f"status {status!r:.40}, HTTP {code}"
                except requests.RequestException as exc:
                    answered, ok, detail = False, False, f"no answer ({type(exc).__name__})"
                except ValueError:
                    ok, detail = False, "an answer that is not JSON"
                if not ok:
                    log.warning("memory monitor: health check failed: %s", detail)
                self.context.record("health_ok" if ok else "health_failed", detail)
                stop = None if self._stopping() else self.guard.health(answered)
                if stop is not None:
                    self._stop_run(stop)
        finally:
            client.close()

    def _user_health_loop(self, every: float, path: str) -> None:
        """GET the user's health path; ``target_lost_after`` failures in a row lose the target."""
        client = self._client()
        limit = self.context.config.safety.target_lost_after
        try:
            while True:
                gevent.sleep(every)
                try:
                    r = client.session.get(f"{client.base_url}{path}", timeout=client.timeout)
                    ok, detail = 200 <= r.status_code < 300, f"GET {path}: HTTP {r.status_code}"
                except requests.RequestException as exc:
                    ok, detail = False, f"GET {path}: no answer ({type(exc).__name__})"
                self._failures = 0 if ok else self._failures + 1
                if not ok:
                    log.warning("memory monitor: health check failed: %s", detail)
                self.context.record("health_ok" if ok else "health_failed", detail)
                if self._failures >= limit and not self._stopping():
                    self._stop_run(
                        Stop(
                            "target_lost",
                            f"health check {path} failed {self._failures} times in a "
                            f"row (target_lost_after {limit}): {detail}",
                            ExitCode.TARGET_LOST,
                        )
                    )
        finally:
            client.close()

    def cleanup_loop(self, every: float) -> None:
        if not self._http():
            return
        client = self._client()
        try:
            while True:
                gevent.sleep(every)
                if not self._asks_api():
                    continue  # a cleanup cycle is the memstress API's; this target lacks it
                try:
                    r = client.cycle()
                    if not isinstance(r, dict):
                        raise TargetError(f"POST /memory/cycle: not a JSON object: {r!r:.100}")
                    detail: dict[str, Any] = {
                        k: r.get(k) for k in ("freed_bytes", "duration_ms", "strategy", "pressure")
                    }
                except (requests.RequestException, TargetError, ValueError) as exc:
                    log.warning("memory monitor: cleanup cycle failed: %s", exc)
                    detail = {"error": str(exc)[:200]}
                detail["by"] = "monitor"
                self.context.record("cleanup", detail)
        finally:
            client.close()
