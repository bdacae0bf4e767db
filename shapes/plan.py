"""Stage plans, and the player that walks one as a pure function of run time.

No Locust here: :class:`shapes.staged.StagedShape` wraps a :class:`StagePlayer`
for Locust, and tests drive the player with a fake clock.

Locust asks a shape for its next tick about once a second (``shape_worker``
sleeps ``1 - time spent``), so a stage shorter than :data:`MIN_STAGE_S` could
pass between two ticks. :func:`check_plan` refuses such plans, and the player
never skips a stage silently: when one tick finds that several stages began
since the last one, it reports all of them, in order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MIN_STAGE_S = 1.0
"""Shortest stage a plan may have: Locust's shape tick period."""

PLAN_COMPLETE = "stage plan complete"


class PlanError(ValueError):
    """A plan that cannot be played, as one line."""


@dataclass(frozen=True)
class StageSpec:
    """One stage of a plan: how long, how many users, and what the users should do."""

    name: str
    duration_s: float
    users: int
    spawn_rate: float
    params: Mapping[str, Any] = field(default_factory=dict)  # plain JSON data

    def __post_init__(self) -> None:
        if not self.name:
            raise PlanError("a stage needs a name")
        if not (math.isfinite(self.duration_s) and self.duration_s > 0):
            raise PlanError(f"stage {self.name}: duration {self.duration_s!r} (valid: above 0 s)")
        if self.users < 0:
            raise PlanError(f"stage {self.name}: users {self.users!r} (valid: 0 or more)")
        if not (math.isfinite(self.spawn_rate) and self.spawn_rate > 0):
            raise PlanError(f"stage {self.name}: spawn rate {self.spawn_rate!r} (valid: above 0)")


def plan_length(plan: Iterable[StageSpec]) -> float:
    return sum(s.duration_s for s in plan)


def check_plan(plan: Sequence[StageSpec], min_stage_s: float = MIN_STAGE_S) -> None:
    """Refuse an empty plan, a repeated stage name, or a stage Locust could miss."""
    if not plan:
        raise PlanError("the stage plan is empty")
    seen: set[str] = set()
    for s in plan:
        if s.name in seen:
            raise PlanError(f"stage name {s.name!r} is used twice (valid: unique names)")
        seen.add(s.name)
    short = [s for s in plan if s.duration_s < min_stage_s - 1e-9]
    if short:
        raise PlanError(
            f"stage {short[0].name!r} would last {short[0].duration_s:.2f} s, under the "
            f"{min_stage_s:g} s a stage needs"
        )


def stage_starts(plan: Sequence[StageSpec]) -> list[float]:
    """Run time (s) at which each stage begins."""
    starts, t = [], 0.0
    for s in plan:
        starts.append(t)
        t += s.duration_s
    return starts


def stage_at(plan: Sequence[StageSpec], t: float) -> int | None:
    """Index of the stage playing at run time ``t``; None after the last one."""
    end = 0.0
    for i, s in enumerate(plan):
        end += s.duration_s
        if t < end:
            return i
    return None


def split(total_s: float, weights: Sequence[float]) -> list[float]:
    """Share ``total_s`` out by ``weights``; the shares add up to ``total_s`` exactly."""
    if total_s <= 0 or not weights or min(weights) <= 0:
        raise PlanError(f"cannot split {total_s!r} s by {list(weights)!r}")
    whole = sum(weights)
    shares = [round(total_s * w / whole, 3) for w in weights[:-1]]
    return [*shares, total_s - sum(shares)]


class StagePlayer:
    """Walks a plan: give it the run time, it says which stages began and what plays now.

    ``cap_s`` is a hard limit on run time (the config's ``safety.max_test_duration``):
    past it the player ends whatever the plan says, and :attr:`end_reason` says why.
    """

    def __init__(self, plan: Sequence[StageSpec], cap_s: float | None = None) -> None:
        self.plan = tuple(plan)
        self.cap_s = cap_s
        self.index = -1  # last stage entered
        self.end_reason = ""  # set once the player has ended
        self.capped = False

    @property
    def ended(self) -> bool:
        return bool(self.end_reason)

    def advance(self, t: float) -> tuple[list[int], StageSpec | None]:
        """Stages entered since the last call (in order), and the stage now playing.

        The stage is None once the plan is over or the cap is passed; from then on
        every call returns ``([], None)``.
        """
        if self.ended:
            return [], None
        if self.cap_s is not None and t >= self.cap_s:
            self.capped = True
            self.end_reason = (
                f"safety.max_test_duration reached after {t:.1f} s (cap {self.cap_s:g} s)"
            )
            return [], None
        now = stage_at(self.plan, t)
        last = len(self.plan) - 1 if now is None else now
        entered = list(range(self.index + 1, last + 1))
        self.index = max(self.index, last)
        if now is None:
            self.end_reason = PLAN_COMPLETE
            return entered, None
        return entered, self.plan[now]
