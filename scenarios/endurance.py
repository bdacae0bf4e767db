"""endurance: sustained mixed load, stepping the users up.

Five steps (``step_1`` .. ``step_5``), each adding the stress level's
``concurrent_agents`` users of mixed agent traffic, with a management cycle
every two seconds throughout. The report's endurance limit is the highest
step that still meets the thresholds.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from memstress.common.config import Config, StressLevel
from memstress.scenarios import api, target
from memstress.scenarios.spec import Expect, Part, Scenario, staged_plan
from memstress.shapes.plan import StageSpec

if TYPE_CHECKING:
    from memstress.common.context import Stage

STEPS = 5


def plan(config: Config, stress: StressLevel, total_s: float) -> list[StageSpec]:
    per_step = max(1, stress.concurrent_agents)
    common = {"agents": 16, "namespaces": 2, "document_bytes": 4096, "cycle_interval_s": 2.0}
    return staged_plan(
        total_s,
        [Part(f"step_{k}", 1, 1 + k * per_step, {"step": k}) for k in range(1, STEPS + 1)],
        common=common,
    )


@functools.cache
def users() -> tuple[type, ...]:
    from memstress.scenarios.base import AgentTrafficUser, ConductorUser

    class EnduranceCycler(ConductorUser):
        """Runs a memory-management cycle every ``cycle_interval_s``."""

        def step(self, stage: Stage) -> float:
            if self.can(target.CYCLE):
                self.target.cycle()
            return float(stage.params.get("cycle_interval_s", 2.0))

    class EnduranceAgent(AgentTrafficUser):
        """Mixed agent traffic: messages, context and history reads, searches, upserts."""

    return EnduranceCycler, EnduranceAgent


SCENARIO = Scenario(
    name="endurance",
    seed_key="endurance_limits",
    purpose="Sustained mixed load, stepping the users up to find the endurance limit.",
    expected=(
        Expect("late_slope_max_mb_min", "memory slope over the last half < {bound} MB/min"),
        Expect("stability_min", "stability score > {bound}"),
    ),
    endpoints=(api.CYCLE, *api.AGENT_TRAFFIC, *api.CLEANUP),
    users=users,
    plan=plan,
    optional=frozenset({target.CYCLE, target.VECTORS}),
)
