"""memory_pressure_crisis: ballast drives the target to 95 % of its budget.

The crisis target is two entries above the stress level's in
``memory_pressure_targets`` (70/80/90/95/99: 95 at the default level 1, capped
at the last entry), so it is always past high_memory's. Then the faults are
reset and the target should come back under 90 %. Like high_memory it needs the
target's ``pressure`` capability (Redis: filler keys toward ``maxmemory``).
"""

from __future__ import annotations

import functools

from memstress.common.config import Config, StressLevel
from memstress.scenarios import api, target
from memstress.scenarios.spec import Expect, Part, Scenario, pressure_plan
from memstress.shapes.plan import StageSpec


def target_of(config: Config, stress: StressLevel) -> float:
    targets = config.stress_levels.memory_pressure_targets
    return targets[min(stress.level + 2, len(targets) - 1)]


def plan(config: Config, stress: StressLevel, total_s: float) -> list[StageSpec]:
    target = target_of(config, stress)
    return pressure_plan(
        total_s,
        [
            Part("baseline", 1, 3, phase="warmup"),
            Part("ramp_1", 1.5, 3, {"pressure_target": max(1.0, target - 15)}),
            Part("ramp_2", 1.5, 3, {"pressure_target": max(1.0, target - 5)}),
            Part("crisis", 3.5, 3, {"pressure_target": target}),
            Part("recovery", 2.5, 3, {"reset_faults": True}, phase="recovery"),
        ],
        tolerance=config.scenarios.pressure_tolerance,
        common={"agents": 8, "namespaces": 1, "document_bytes": 2048},
    )


@functools.cache
def users() -> tuple[type, ...]:
    from memstress.scenarios.base import AgentTrafficUser, PressureController

    class CrisisController(PressureController):
        """Adds ballast until the pressure reaches the crisis target, then holds it."""

    class CrisisAgent(AgentTrafficUser):
        """Agent traffic that should be shed (503 + Retry-After), not fail."""

    return CrisisController, CrisisAgent


SCENARIO = Scenario(
    name="memory_pressure_crisis",
    seed_key="memory_pressure_crisis",
    purpose="Ballast drives the target to 95 % of its budget, holds it there, then lets go.",
    expected=(
        Expect("emergency_reached", "the target's strategy reaches emergency"),
        Expect("writes_shed", "writes are shed with 503 + Retry-After, not failed"),
        Expect(
            "pressure_under_90_within_s",
            "pressure is back under 90 % within {bound} s of the release",
        ),
        Expect("target_stays_up", "the target stays up (no target lost)"),
    ),
    endpoints=(api.STATS, api.BALLAST, api.RESET, *api.AGENT_TRAFFIC, *api.CLEANUP),
    users=users,
    plan=plan,
    needs=frozenset({target.CONVERSATION, target.PRESSURE, target.STATS}),
    optional=frozenset({target.VECTORS}),
)
