"""The scenarios, in the design's order. Adding one: a new module and one line here.

Each module defines ``SCENARIO`` (a :class:`scenarios.spec.Scenario`); the
locustfile exposes every scenario's user classes to Locust and its shape picks
the chosen scenario's at run time.
"""

from __future__ import annotations

from scenarios import (
    baseline,
    concurrent_agents,
    endurance,
    high_memory,
    memory_leak,
    memory_pressure_crisis,
    optimization_overload,
    rapid_growth,
    recovery,
    vector_store,
)
from scenarios.spec import Scenario

SCENARIOS: tuple[Scenario, ...] = (
    baseline.SCENARIO,
    memory_leak.SCENARIO,
    high_memory.SCENARIO,
    rapid_growth.SCENARIO,
    vector_store.SCENARIO,
    concurrent_agents.SCENARIO,
    optimization_overload.SCENARIO,
    memory_pressure_crisis.SCENARIO,
    recovery.SCENARIO,
    endurance.SCENARIO,
)


def all_scenarios() -> tuple[Scenario, ...]:
    return SCENARIOS


def get_scenario(name: str) -> Scenario:
    """A scenario by name or seed key; a one-line ConfigError listing the valid names."""
    from common.config import scenario_name

    wanted = scenario_name(name)
    for s in SCENARIOS:
        if s.name == wanted:
            return s
    valid = ", ".join(s.name for s in SCENARIOS)  # pragma: no cover - config and registry agree
    raise KeyError(f"scenario {wanted!r} is not registered (valid: {valid})")


def user_classes() -> dict[str, type]:
    """Every scenario's user classes by class name (Locust needs the names unique)."""
    out: dict[str, type] = {}
    for s in SCENARIOS:
        for cls in s.user_classes:
            if cls.__name__ in out and out[cls.__name__] is not cls:
                raise ValueError(f"user class name {cls.__name__} is used by two scenarios")
            out[cls.__name__] = cls
    return out
