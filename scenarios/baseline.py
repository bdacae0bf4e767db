"""baseline: steady agent traffic plus a management cycle about every second.

The reference every other scenario is judged against: nothing is injected,
the target should hold its memory flat and its cycles fast.
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


def plan(config: Config, stress: StressLevel, total_s: float) -> list[StageSpec]:
    agents = max(2, stress.concurrent_agents)
    common = {"agents": 8, "namespaces": 2, "cycle_interval_s": 1.0, "document_bytes": 2048}
    return staged_plan(
        total_s,
        [Part("warmup", 1, 1 + max(1, agents // 2), phase="warmup"), Part("steady", 5, 1 + agents)],
        common=common,
    )


@functools.cache
def users() -> tuple[type, ...]:
    from memstress.scenarios.base import AgentTrafficUser, ConductorUser

    class BaselineCycler(ConductorUser):
        """Runs one memory-management cycle about every second."""

        def step(self, stage: Stage) -> float:
            if self.can(target.CYCLE):
                self.target.cycle()
            return float(stage.params.get("cycle_interval_s", 1.0))

    class BaselineAgent(AgentTrafficUser):
        """Messages, context reads, history reads and searches over the agent pool."""

    return BaselineCycler, BaselineAgent


SCENARIO = Scenario(
    name="baseline",
    seed_key="baseline_performance",
    purpose="Steady agent traffic plus a management cycle about every second: the reference run.",
    expected=(
        Expect("memory_growth_max_mb", "memory growth < {bound} MB"),
        Expect("cycle_time_max_s", "mean management-cycle time < {bound} s"),
        Expect("stability_min", "stability score > {bound}"),
        Expect("cycles_every_stage", "cycles keep running in every loaded stage"),
    ),
    endpoints=(api.CYCLE, *api.AGENT_TRAFFIC, *api.CLEANUP),
    users=users,
    plan=plan,
    optional=frozenset({target.CYCLE, target.VECTORS}),
)
