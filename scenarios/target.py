"""What the scenarios' users ask of a target, whatever stores the memory.

A :class:`Target` is a small protocol (one method per operation); an adapter
implements it for one kind of system and declares the :data:`CAPABILITIES` it
has. A scenario declares what it ``needs`` and what it uses only if it is there
(``optional``): :func:`refusal` says, before any load, why a scenario cannot
run on an adapter; a user skips an optional operation the adapter lacks and
records it once in ``events.csv`` (``capability_skipped``).

Fault injection (``faults``: leak, ballast, reset) is the bundled service's own
test hook. Memory pressure (``pressure``: ballast with a ttl, and its release)
is the part of it a target can give by its own means: Redis fills toward its
``maxmemory`` with keys of the run. A target that injects faults gives pressure
too (the same two operations); the pressure scenarios need only ``pressure``.

The adapters live one per module in :mod:`scenarios.adapters` and are chosen by
name (``--adapter``). No Locust import here (see :mod:`scenarios.spec`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple, Protocol

CONVERSATION = "conversation"
VECTORS = "vectors"
OPTIMIZE = "optimize"
CYCLE = "cycle"
STATS = "stats"
FAULTS = "faults"
PRESSURE = "pressure"

CAPABILITIES: dict[str, str] = {
    CONVERSATION: "agent conversation memory (remember, context, history, forget)",
    VECTORS: "a vector store (add document, search, drop namespace)",
    OPTIMIZE: "optimization requests with a priority",
    CYCLE: "a management cycle",
    STATS: "memory stats (pressure, budget)",
    FAULTS: "fault injection (leak, ballast, reset)",
    PRESSURE: "memory pressure by the target's own means (ballast with a ttl, release)",
}
"""Every capability, with the words a refusal uses for it."""


class Reply(NamedTuple):
    """What one operation got: ``ok`` (success), ``shed`` (the target protecting
    itself, counted apart), or neither (a failure, already reported to Locust).

    A named tuple, not a frozen dataclass: one is made for every request, and a frozen
    dataclass's ``__init__`` costs twice as much (four ``object.__setattr__`` calls;
    bench ``loadgen_cpu_per_request_ratio``)."""

    ok: bool
    shed: bool
    status: int
    data: Any = None


class Target(Protocol):
    """One user's connection to the target; every method reports one Locust request."""

    capabilities: frozenset[str]

    def remember(self, agent: str, role: str, content: str) -> Reply: ...
    def context(self, agent: str, query: str, k: int) -> Reply: ...
    def history(self, agent: str, offset: int, limit: int) -> Reply: ...
    def forget(self, agent: str) -> Reply: ...
    def add_document(self, namespace: str, doc_id: str, text: str) -> Reply: ...
    def search(self, namespace: str, query: str, k: int) -> Reply: ...
    def drop_namespace(self, namespace: str) -> Reply: ...
    def optimize(self, priority: str, reason: str) -> Reply: ...
    def cycle(self) -> Reply: ...
    def stats(self) -> Reply:
        """``data`` holds at least ``pressure`` (0-100) and ``budget_bytes`` when known."""
        ...

    def leak(self, n_bytes: int) -> Reply: ...
    def ballast(self, n_bytes: int, ttl_s: float) -> Reply:
        """Hold ``n_bytes`` more of the target's memory for ``ttl_s`` seconds (faults or
        pressure: the bundled service's ballast, Redis's filler keys)."""
        ...

    def reset_faults(self) -> Reply:
        """Let go of every leak and ballast of the run (faults or pressure)."""
        ...


def describe(capabilities: Iterable[str]) -> str:
    return ", ".join(f"{CAPABILITIES[c]} ({c})" for c in sorted(capabilities))


def refusal(
    scenario: Any, adapter: str, has: frozenset[str], runnable: Iterable[str]
) -> str | None:
    """One line saying why ``scenario`` cannot run on ``adapter``, or None when it can."""
    missing = set(scenario.required) - has
    if not missing:
        return None
    would = ", ".join(runnable) or "none"
    return (
        f"--adapter {adapter}: scenario {scenario.name} needs {describe(missing)}, which "
        f"{adapter} lacks (scenarios that would run on {adapter}: {would})"
    )
