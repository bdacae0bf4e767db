"""recovery: large objects under load, then the load stops and memory is watched.

In the stress stage one user adds objects of ``scenarios.recovery_object_mb``
times the stress factor (ballast whose ttl ends with the stage, so the objects
become garbage when the load stops), while more agent users send longer
messages; objects stop when the pressure reaches the stress level's target.
In the idle stage only that user remains: once a second it reads the memory
stats and one context (a latency probe), watching the target settle.

The objects are the target's ``pressure`` capability (ballast with a ttl), not
fault injection: on the bundled service its ballast fault, on Redis filler keys
(``SET ... PX``) toward ``maxmemory``, which expire as the stress stage ends;
the idle stage then watches the Redis process's RSS and ``INFO memory`` settle.
The cleanup stage releases what is left (``reset_faults``).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from memstress.common.config import Config, StressLevel
from memstress.common.units import MB
from memstress.scenarios import api, target
from memstress.scenarios.spec import Expect, Part, Scenario, staged_plan, with_params
from memstress.shapes.plan import StageSpec

if TYPE_CHECKING:
    from memstress.common.context import Stage

OBJECTS = 10
"""Objects in the stress stage (fewer when that would be more than one a second)."""


def plan(config: Config, stress: StressLevel, total_s: float) -> list[StageSpec]:
    size = int(config.scenarios.recovery_object_mb * stress.memory_factor * MB)
    heavy = 2 * max(2, stress.concurrent_agents)
    stress_params = {
        "object_bytes": size,
        "pressure_cap": stress.pressure_target,
        "message_bytes": 4000,
    }
    stages = staged_plan(
        total_s,
        [
            Part("baseline", 2, 3, {"watch": True}, phase="warmup"),
            Part("stress", 3.5, 1 + heavy, stress_params),
            Part("idle", 4.5, 1, {"watch": True, "traffic": False}, phase="recovery"),
        ],
        common={"agents": 8, "namespaces": 1, "document_bytes": 2048},
        faults=True,
    )
    interval = round(min(5.0, max(1.0, stages[1].duration_s / OBJECTS)), 3)
    stages[1] = with_params(stages[1], object_interval_s=interval)
    return stages


@functools.cache
def users() -> tuple[type, ...]:
    from memstress.scenarios.base import AgentTrafficUser, ConductorUser

    class RecoveryLoader(ConductorUser):
        """Adds large objects in the stress stage; watches memory and latency otherwise."""

        def step(self, stage: Stage) -> float:
            size = int(stage.params.get("object_bytes", 0))
            if size:
                reply = self.target.stats()
                data = reply.data if reply.ok and isinstance(reply.data, dict) else {}
                seen = data.get("pressure")  # none read: assume full, add nothing
                pressure = 100.0 if seen is None else float(seen)
                if pressure < float(stage.params.get("pressure_cap", 80)):
                    ttl = max(1.0, stage.remaining_s())
                    self.target.ballast(size, round(ttl, 1))
                return float(stage.params.get("object_interval_s", 2.0))
            if stage.params.get("watch"):
                self.target.stats()
                self.target.context(self.agent(0), "recovery probe", 3)
            return 1.0

    class RecoveryAgent(AgentTrafficUser):
        """Agent traffic: light before, heavy during the stress, none after."""

    return RecoveryLoader, RecoveryAgent


SCENARIO = Scenario(
    name="recovery",
    seed_key="recovery_capabilities",
    purpose="Large objects under load, then the load stops and memory is watched until it settles.",
    expected=(
        Expect(
            "recovery_time_max_s",
            "memory is back within the recovery tolerance of its pre-stress level within {bound} s",
        ),
    ),
    endpoints=(api.STATS, api.BALLAST, api.RESET, *api.AGENT_TRAFFIC, *api.CLEANUP),
    users=users,
    plan=plan,
    needs=frozenset({target.CONVERSATION, target.PRESSURE, target.STATS}),
    optional=frozenset({target.VECTORS}),
)
