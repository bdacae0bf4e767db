"""The run's stored vectors, counted through its adapter: one more source of the sampler.

A scenario that needs a vector store (``vector_store``) gets this source when the
run's adapter can count what its target holds (``scenarios.adapters.CountsVectors``:
the bundled service's ``tiers.vectors.stored``, each of Chroma's collections'
``count``). Its column, ``stored_vectors``, is what the report divides memory
growth by (memory per stored vector) and what it compares before and after the
cleanup stage's drop (``reports.metrics.vectors``). A count that fails is a
degraded source like any other, never a lost target.
"""

from __future__ import annotations

from typing import Any

from memstress.common.config import ConfigError
from memstress.common.context import RunContext
from memstress.common.target import TargetClient, TargetError
from memstress.monitors.sources import SourceFailed
from memstress.scenarios.registry import get_scenario
from memstress.scenarios.target import VECTORS

COLUMN = "stored_vectors"


class StoredVectors:
    """Reads the run's stored vectors from the adapter, over one HTTP session."""

    name = "vectors"

    def __init__(self, counter: Any, host: str, run_id: str, timeout: float) -> None:
        self.counter = counter
        self.host = host
        self.run_id = run_id
        self.timeout = timeout
        self.session = TargetClient(host, timeout).session  # the environment read once

    def read(self) -> dict[str, Any]:
        try:
            n = self.counter.count_vectors(self.session, self.host, self.run_id, self.timeout)
        except TargetError as exc:
            raise SourceFailed(f"counting the run's vectors: {exc}") from None
        return {COLUMN: n}


def stored_vectors_sources(context: RunContext, host: str, timeout: float) -> list[StoredVectors]:
    """The source when the run's scenario needs a vector store and its adapter counts
    vectors; none otherwise (a user's own load test has no adapter)."""
    adapter = context.adapter
    if adapter is None or not callable(getattr(adapter, "count_vectors", None)) or not host:
        return []
    try:
        needs = VECTORS in get_scenario(context.scenario).required
    except ConfigError:  # a scenario of the user's own, outside the registry
        return []
    return [StoredVectors(adapter, host, context.run_id, timeout)] if needs else []
