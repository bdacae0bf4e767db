"""The scenarios, in the design's order. Adding one: a new module and one line here.

Each module in :data:`MODULES` defines ``SCENARIO`` (a
:class:`scenarios.spec.Scenario`), or, written the seed's way, subclasses of
:class:`scenarios.seed.MemoryStressTest` whose ``test_<name>`` methods are
scenarios; the locustfile exposes every scenario's user classes to Locust and
its shape picks the chosen scenario's at run time.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from memstress.common.config import Config, ConfigError
from memstress.scenarios.spec import Scenario

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


def _load(module: str) -> list[Scenario]:
    mod = importlib.import_module(f"memstress.scenarios.{module}")
    found = getattr(mod, "SCENARIO", None)
    if found is None:  # the seed's way: MemoryStressTest subclasses defined here
        from memstress.scenarios.seed import MemoryStressTest, scenarios_of

        seeded = [
            s
            for value in vars(mod).values()
            if isinstance(value, type)
            and issubclass(value, MemoryStressTest)
            and value.__module__ == mod.__name__
            for s in scenarios_of(value)
        ]
        if seeded:
            return seeded
    if not isinstance(found, Scenario):
        raise TypeError(
            f"scenarios/{module}.py: SCENARIO must be a scenarios.spec.Scenario, "
            f"not {type(found).__name__} (or define MemoryStressTest subclasses with "
            "test_<name> methods)"
        )
    return [found]


def _load_all() -> tuple[Scenario, ...]:
    loaded = tuple(s for m in MODULES for s in _load(m))
    seen: dict[str, str] = {}  # a name or seed key -> the scenario it stands for
    for s in loaded:
        for alias in dict.fromkeys((s.name, s.seed_key or s.name)):
            if alias in seen:
                raise ValueError(
                    f"scenarios/registry.py: {s.name!r} and {seen[alias]!r} are both called "
                    f"{alias!r} (valid: a name no other scenario uses as its name or seed key)"
                )
            seen[alias] = s.name
    return loaded


SCENARIOS: tuple[Scenario, ...] = _load_all()


def all_scenarios() -> tuple[Scenario, ...]:
    return SCENARIOS


def names() -> tuple[str, ...]:
    """The registered scenarios' names, in registry order."""
    return tuple(s.name for s in SCENARIOS)


def get_scenario(name: str) -> Scenario:
    """A scenario by name or seed key; a one-line ConfigError listing the valid names.

    >>> get_scenario("memory_leak_simulation").name
    'memory_leak'
    """
    for s in SCENARIOS:
        if name in (s.name, s.seed_key):
            return s
    valid = ", ".join(names())
    raise ConfigError(f"unknown scenario {name!r} (valid: {valid}, or their seed keys)")


def scenario_name(name: str) -> str:
    """A scenario name or seed key resolved to the scenario's name (ConfigError if neither)."""
    return get_scenario(name).name


def check_config(config: Config) -> Config:
    """The config's scenario keys against the registry; returns ``config`` when they hold.

    ``test_duration`` has a key for every scenario with a seed key and no other;
    ``scenarios.quick`` names registered scenarios; ``checks`` names registered
    scenarios and checks they declare. A ConfigError is one line that
    starts with the config file's name, as :func:`common.config.load_config` does.
    """
    problem = _config_problem(config)
    if problem:
        where = Path(config.source).name if config.source else "config"
        raise ConfigError(f"{where}: {problem}")
    return config


def _config_problem(config: Config) -> str | None:
    keys = [s.seed_key for s in SCENARIOS if s.seed_key is not None]
    for key in config.test_duration:
        if key not in keys:
            return f"test_duration.{key}: unknown key (valid keys here: {', '.join(keys)})"
    for key in keys:
        if key not in config.test_duration:
            return f"test_duration.{key}: missing (every key of the shipped file is required)"
    for i, name in enumerate(config.scenarios.quick):
        try:
            get_scenario(name)
        except ConfigError as exc:
            return f"scenarios.quick[{i}]: {exc}"
    # checks: each entry names a registered scenario and one of its declared checks (a
    # typo would otherwise leave a check judged on its declared defaults without a word)
    known = {s.name: s for s in SCENARIOS}
    for name in config.checks.scenarios():
        if name not in known:
            return f"checks.{name}: unknown scenario (valid: {', '.join(names())})"
        declared = [e.id for e in known[name].expected]
        for cid in config.checks.of(name):
            if cid not in declared:
                valid = ", ".join(declared)
                return f"checks.{name}.{cid}: {name} has no such check (valid: {valid})"
    return None


def user_classes() -> dict[str, type]:
    """Every scenario's user classes by class name (Locust needs the names unique)."""
    out: dict[str, type] = {}
    for s in SCENARIOS:
        for cls in s.user_classes:
            if cls.__name__ in out and out[cls.__name__] is not cls:
                raise ValueError(f"user class name {cls.__name__} is used by two scenarios")
            out[cls.__name__] = cls
    return out
