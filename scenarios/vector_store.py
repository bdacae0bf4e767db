"""vector_store: large documents upserted and searched in several namespaces.

Documents are ``scenarios.document_kb`` times the stress factor (kept under
the service's body limit); doc ids come from a fixed pool per namespace, so an
upsert replaces as often as it adds. The stages move from mostly upserts to
mostly searches.
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

NAMESPACES = 4
DOCS_PER_NAMESPACE = 100
BODY_MARGIN = 4096
"""Bytes left under ``service.max_body_bytes`` for the JSON around the text."""


def plan(config: Config, stress: StressLevel, total_s: float) -> list[StageSpec]:
    size = int(config.scenarios.document_kb * stress.memory_factor * 1024)
    size = max(256, min(size, config.service.max_body_bytes - BODY_MARGIN))
    clients = max(2, 2 * stress.concurrent_agents)
    common = {"agents": 0, "namespaces": NAMESPACES, "docs": DOCS_PER_NAMESPACE}
    return staged_plan(
        total_s,
        [
            Part("load", 3, 1 + clients, {"upsert_share": 0.8}),
            Part("mixed", 5, 1 + clients, {"upsert_share": 0.4}),
            Part("search_heavy", 3, 1 + clients, {"upsert_share": 0.1}),
        ],
        common={**common, "document_bytes": size},
    )


@functools.cache
def users() -> tuple[type, ...]:
    from locust import task

    from memstress.scenarios.base import ConductorUser, MemstressUser

    class VectorKeeper(ConductorUser):
        """Reads the target's memory stats every two seconds (cache and vector tiers)."""

        def step(self, stage: Stage) -> float:
            if self.can(target.STATS):
                self.target.stats()
            return 2.0

    class VectorClient(MemstressUser):
        """Upserts (share ``upsert_share`` of its requests) or searches its namespaces."""

        def on_start(self) -> None:
            self._seeded: list[str] = []  # the namespaces this user has written to, by name

        def upsert(self) -> None:
            ns = self.namespace(self.rng.randrange(int(self.params.get("namespaces", NAMESPACES))))
            doc_id = f"doc-{self.rng.randrange(int(self.params.get('docs', 1)))}"
            text = api.text_of(self.rng, int(self.params.get("document_bytes", 8192)))
            if self.target.add_document(ns, doc_id, text).ok and ns not in self._seeded:
                self._seeded.append(ns)

        def search(self) -> None:
            ns = self.rng.choice(self._seeded)  # a name, not made again every search
            query = " ".join(self.rng.choices(api.WORDS, k=6))
            self.target.search(ns, query, 10)

        @task
        def work(self) -> None:
            if not self.active():
                return
            if not self._seeded:  # a first upsert, then a search: a short run reaches both
                self.upsert()
                if self._seeded:
                    self.search()
            elif self.rng.random() < float(self.params.get("upsert_share", 0.5)):
                self.upsert()
            else:
                self.search()

    return VectorKeeper, VectorClient


SCENARIO = Scenario(
    name="vector_store",
    seed_key="vector_store_stress",
    purpose="Large documents upserted and searched in several namespaces.",
    expected=(
        Expect("search_p95_max_s", "search p95 < {bound} s"),
        Expect("memory_per_vector_max_kb", "memory per stored vector < {bound} KB"),
    ),
    endpoints=(api.DOCUMENT_ADD, api.SEARCH, api.STATS, api.NAMESPACE_DELETE),
    users=users,
    plan=plan,
    optional=frozenset({target.STATS}),
)
