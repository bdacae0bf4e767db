"""concurrent_agents: N agents at once, each with a memory of its own.

N is the stress level's ``concurrent_agents`` (1/3/5/10/20). Each user is one
agent: it claims a slot no other user holds (across workers) and only ever
writes and reads that agent's conversation and context.
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


def plan(config: Config, stress: StressLevel, total_s: float) -> list[StageSpec]:
    n = stress.concurrent_agents
    common = {"agents": n, "namespaces": 0, "message_bytes": 800}
    return staged_plan(
        total_s,
        [Part("join", 1, 1 + math.ceil(n / 2)), Part("converse", 4, 1 + n)],
        common=common,
    )


@functools.cache
def users() -> tuple[type, ...]:
    from locust import task

    from memstress.scenarios.base import ConductorUser, MemstressUser

    class AgentsObserver(ConductorUser):
        """Reads the target's memory stats every two seconds (per-tier bytes, evictions)."""

        def step(self, stage: Stage) -> float:
            if self.can(target.STATS):
                self.target.stats()
            return 2.0

    class ConcurrentAgent(MemstressUser):
        """One agent: messages in, its own history and context out."""

        def on_start(self) -> None:
            pool = max(1, int(self.params.get("agents", 1)))
            self.agent_id = self.agent(self.claim_slot() % pool)
            self._first = True

        def message(self) -> tuple[str, str]:
            size = int(self.params.get("message_bytes", 800))
            role = self.rng.choice(("user", "assistant"))
            return role, api.text_of(self.rng, self.rng.randint(size // 2, size))

        def active(self) -> bool:
            if not super().active():
                return False
            if self._first:  # one of each first, so even a short run reaches all three
                self._first = False
                self.add_message()
                self.read_context()
                self.read_history()
            return True

        @task(3)
        def talk(self) -> None:
            if self.active():
                self.add_message()

        @task(2)
        def recall(self) -> None:
            if self.active():
                self.read_context()

        @task(1)
        def review(self) -> None:
            if self.active():
                self.read_history()

        def add_message(self) -> None:
            self.target.remember(self.agent_id, *self.message())

        def read_context(self) -> None:
            query = " ".join(self.rng.choices(api.WORDS, k=4))
            self.target.context(self.agent_id, query, 5)

        def read_history(self) -> None:
            self.target.history(self.agent_id, 0, 50)

    return AgentsObserver, ConcurrentAgent


SCENARIO = Scenario(
    name="concurrent_agents",
    seed_key="concurrent_agent_stress",
    purpose="N concurrent agents (the stress level's 1/3/5/10/20), each with its own memory.",
    expected=(
        Expect(
            "agent_latency_spread_max",
            "the slowest agent's mean response time < {bound} × the fastest's",
        ),
        Expect("memory_growth_max_mb", "memory growth < {bound} MB"),
    ),
    endpoints=(api.MESSAGE_ADD, api.MESSAGES, api.CONTEXT, api.STATS, api.AGENT_DELETE),
    users=users,
    plan=plan,
    optional=frozenset({target.STATS}),
)
