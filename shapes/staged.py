"""The generic staged shape: a stage plan in, Locust ticks out.

:class:`StagedShape` adapts a :class:`shapes.plan.StagePlayer` to Locust's
``LoadTestShape``: ``tick()`` reads the run time from a clock (injectable, so
tests need no sleeping) and returns ``(users, spawn_rate)`` or, when it was
given user classes, ``(users, spawn_rate, user_classes)``; ``None`` after the
last stage or past the cap, which makes a ``--headless`` run quit by itself
(Locust's ``shape_worker`` calls ``runner.quit()`` on ``None`` when headless,
``runner.stop()`` in the web UI).

Subclasses react to stage changes in :meth:`StagedShape.on_stage` and to the
end in :meth:`StagedShape.on_end`; the locustfile's dispatching shape
(:class:`shapes.scenario.ScenarioShape`) records and broadcasts there. The
class is abstract, so importing it never gives Locust a second shape (with
several concrete shapes Locust silently uses the first).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from locust import LoadTestShape

from memstress.shapes.plan import StagePlayer, StageSpec

if TYPE_CHECKING:
    from locust import User

TickResult = tuple[int, float] | tuple[int, float, list[type["User"]]]


class StagedShape(LoadTestShape):
    """Plays a list of :class:`StageSpec` in order, one after the other."""

    abstract = True

    def __init__(
        self,
        plan: Sequence[StageSpec] = (),
        *,
        cap_s: float | None = None,
        clock: Callable[[], float] = time.perf_counter,
        user_classes: Sequence[type[User]] | None = None,
    ) -> None:
        self._clock = clock
        super().__init__()
        self.start_time = clock()
        self.player = StagePlayer(plan, cap_s)
        self.user_classes: list[type[User]] | None = list(user_classes) if user_classes else None

    def reset_time(self) -> None:
        self.start_time = self._clock()

    def get_run_time(self) -> float:
        return self._clock() - self.start_time

    def tick(self) -> TickResult | None:
        t = self.get_run_time()
        entered, spec = self.player.advance(t)
        for index in entered:
            self.on_stage(index, self.player.plan[index], t)
        if spec is None:
            self.on_end(self.player.end_reason, t)
            return None
        if self.user_classes:
            return spec.users, spec.spawn_rate, self.user_classes
        return spec.users, spec.spawn_rate

    def on_stage(self, index: int, spec: StageSpec, elapsed_s: float) -> None:
        """A stage began (called once per stage, in plan order)."""

    def on_end(self, reason: str, elapsed_s: float) -> None:
        """The plan is over (``reason`` says why); called once, right before ``None``."""

    def describe(self) -> list[dict[str, Any]]:
        """The plan as plain data (for logs and tests)."""
        return [
            {
                "name": s.name,
                "duration_s": s.duration_s,
                "users": s.users,
                "spawn_rate": s.spawn_rate,
                "params": dict(s.params),
            }
            for s in self.player.plan
        ]
