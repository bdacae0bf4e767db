"""optimization_overload: N optimization requests per cycle, then a cycle.

N ramps up to the stress level's ``optimization_requests_per_cycle``
(1/5/10/20/50). Each cycle one user sends the N ``POST /memory/optimize``
at once, with mixed priorities, then ``POST /memory/cycle``. A 429 with
``Retry-After`` (the queue is full) is shed, not an error.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

from memstress.common.config import Config, StressLevel
from memstress.scenarios import api, target
from memstress.scenarios.spec import Expect, Part, Scenario, staged_plan
from memstress.shapes.plan import StageSpec

if TYPE_CHECKING:
    from memstress.common.context import Stage

BURST_TIMEOUT_S = 10.0


def plan(config: Config, stress: StressLevel, total_s: float) -> list[StageSpec]:
    n = stress.optimization_requests
    common = {"agents": 8, "namespaces": 1, "document_bytes": 2048, "cycle_interval_s": 1.0}
    return staged_plan(
        total_s,
        [
            Part("warmup", 1, 3, {"optimize_per_cycle": 1}, phase="warmup"),
            Part("ramp", 2, 3, {"optimize_per_cycle": max(1, math.ceil(n / 2))}),
            Part("overload", 4, 3, {"optimize_per_cycle": n}),
            Part("cooldown", 2, 3, {"optimize_per_cycle": 0}, phase="recovery"),
        ],
        common=common,
    )


@functools.cache
def users() -> tuple[type, ...]:
    from gevent.pool import Group

    from memstress.scenarios.base import AgentTrafficUser, ConductorUser

    class OptimizationFlood(ConductorUser):
        """Sends the stage's ``optimize_per_cycle`` requests together, then one cycle."""

        concurrency = 64  # connections in this user's pool: a burst goes out at once

        def step(self, stage: Stage) -> float:
            n = int(stage.params.get("optimize_per_cycle", 0))
            if n:
                priorities = self.rng.choices(api.PRIORITIES, api.PRIORITY_WEIGHTS, k=n)
                burst = Group()
                for i, priority in enumerate(priorities):
                    burst.spawn(self.target.optimize, priority, f"overload {stage.name} #{i}")
                try:
                    burst.join(timeout=BURST_TIMEOUT_S)
                finally:
                    burst.kill(block=False)
            if self.can(target.CYCLE):
                self.target.cycle()
            return float(stage.params.get("cycle_interval_s", 1.0))

    class OverloadAgent(AgentTrafficUser):
        """Agent traffic, so there is something to optimize and latency to watch."""

    return OptimizationFlood, OverloadAgent


SCENARIO = Scenario(
    name="optimization_overload",
    seed_key="optimization_overload",
    purpose="N optimization requests per cycle (the stress level's 1/5/10/20/50), mixed "
    "priorities.",
    expected=(
        Expect("cycle_p95_max_s", "management-cycle p95 < {bound} s"),
        Expect("overflow_shed_not_errors", "overflow is shed with 429 (counted apart), not failed"),
        Expect("error_rate_max_pct", "error rate < {bound} %"),
    ),
    endpoints=(api.OPTIMIZE, api.CYCLE, *api.AGENT_TRAFFIC, *api.CLEANUP),
    users=users,
    plan=plan,
    optional=frozenset({target.CYCLE, target.VECTORS}),
)
