"""The scenarios, in the design's order. Adding one: a new module and one line here.

Each module in :data:`MODULES` defines ``SCENARIO`` (a
:class:`scenarios.spec.Scenario`); the locustfile exposes every scenario's user
classes to Locust and its shape picks the chosen scenario's at run time.
"""

from __future__ import annotations

import importlib

from common.config import SEED_KEYS, Config, ConfigError
from scenarios.spec import Scenario

MODULES: tuple[str, ...] = (
    "baseline",
    "memory_leak",
    "high_memory",
    "rapid_growth",
    "vector_store",
    "concurrent_agents",
    "optimization_overload",
    "memory_pressure_crisis",
    "recovery",
    "endurance",
)
"""Modules of ``scenarios/``, one per scenario; a new scenario's module goes here."""


def _load(module: str) -> Scenario:
    found = getattr(importlib.import_module(f"scenarios.{module}"), "SCENARIO", None)
    if not isinstance(found, Scenario):
        raise TypeError(
            f"scenarios/{module}.py: SCENARIO must be a scenarios.spec.Scenario, "
            f"not {type(found).__name__}"
        )
    return found


def _load_all() -> tuple[Scenario, ...]:
    loaded = tuple(_load(m) for m in MODULES)
    seen: set[str] = set()
    for s in loaded:
        if s.name in seen:
            raise ValueError(f"scenarios/registry.py: two scenarios are named {s.name!r}")
        if s.seed_key is None and s.name in SEED_KEYS.values():
            raise ValueError(
                f"scenarios/registry.py: {s.name!r} is a config key of another scenario "
                "(valid: any other name)"
            )
        seen.add(s.name)
    return loaded


SCENARIOS: tuple[Scenario, ...] = _load_all()


def all_scenarios() -> tuple[Scenario, ...]:
    return SCENARIOS


def names() -> tuple[str, ...]:
    """The registered scenarios' names, in registry order."""
    return tuple(s.name for s in SCENARIOS)


def get_scenario(name: str) -> Scenario:
    """A scenario by name or seed key; a one-line ConfigError listing the valid names."""
    from common.config import scenario_name

    wanted = scenario_name(name)
    for s in SCENARIOS:
        if s.name == wanted:
            return s
    valid = ", ".join(names())  # pragma: no cover - scenario_name checked the registry
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


def check_expectations(config: Config) -> None:
    """Refuse a config whose ``checks`` do not match the scenarios' declared expectations.

    Every entry must name a registered scenario and one of its checks: a typo would
    otherwise leave a check judged on its declared defaults without a word.
    """
    known = {s.name: s for s in SCENARIOS}
    for name in config.checks.scenarios():
        if name not in known:
            raise ConfigError(f"checks.{name}: unknown scenario (valid: {', '.join(names())})")
        declared = [e.id for e in known[name].expected]
        for cid in config.checks.of(name):
            if cid not in declared:
                raise ConfigError(
                    f"checks.{name}.{cid}: {name} has no such check (valid: {', '.join(declared)})"
                )
