"""high_memory: ballast ramps the target's pressure to 80 % of its budget in steps.

The hold target is the stress level's ``memory_pressure_targets`` entry (80 at
the default level 1); two ramp stages approach it 20 and 10 points below. The
pressure controller is :class:`scenarios.base.PressureController`. It needs the
target's ``pressure`` capability, not fault injection: on the bundled service
the ballast fault, on Redis filler keys toward ``maxmemory``.
"""

from __future__ import annotations

import functools

from memstress.common.config import Config, StressLevel
from memstress.scenarios import api, target
from memstress.scenarios.spec import Expect, Part, Scenario, pressure_plan
from memstress.shapes.plan import StageSpec


def target_of(config: Config, stress: StressLevel) -> float:
    return stress.pressure_target


def plan(config: Config, stress: StressLevel, total_s: float) -> list[StageSpec]:
    target = target_of(config, stress)
    return pressure_plan(
        total_s,
        [
            Part("baseline", 1, 3, phase="warmup"),
            Part("ramp_1", 1.5, 3, {"pressure_target": max(1.0, target - 20)}),
            Part("ramp_2", 1.5, 3, {"pressure_target": max(1.0, target - 10)}),
            Part("hold", 4, 3, {"pressure_target": target}),
            Part("release", 2, 3, {"reset_faults": True}, phase="recovery"),
        ],
        tolerance=config.scenarios.pressure_tolerance,
        common={"agents": 8, "namespaces": 1, "document_bytes": 2048},
    )


@functools.cache
def users() -> tuple[type, ...]:
    from memstress.scenarios.base import AgentTrafficUser, PressureController

    class HighMemoryController(PressureController):
        """Adds ballast until the pressure reaches the stage's target, then holds it."""

    class HighMemoryAgent(AgentTrafficUser):
        """Agent traffic, so errors and latency under pressure can be judged."""

    return HighMemoryController, HighMemoryAgent


SCENARIO = Scenario(
    name="high_memory",
    seed_key="high_memory_usage",
    purpose="Ballast ramps the target's pressure to 80 % of its budget in steps and holds it.",
    expected=(
        Expect(
            "pressure_held_pct",
            "pressure holds at its target ± the tolerance for {bound} % of the hold or more",
        ),
        Expect("aggressive_reached", "the target's strategy reaches aggressive"),
        Expect("error_rate_max_pct", "error rate < {bound} %"),
    ),
    endpoints=(api.STATS, api.BALLAST, api.RESET, *api.AGENT_TRAFFIC, *api.CLEANUP),
    users=users,
    plan=plan,
    needs=frozenset({target.CONVERSATION, target.PRESSURE, target.STATS}),
    optional=frozenset({target.VECTORS}),
)
