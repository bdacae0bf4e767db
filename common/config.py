"""Load and validate ``stress_test_config.yml`` into typed, frozen dataclasses.

Every section is a dataclass whose fields carry their valid range in
``metadata``; one generic walker checks a parsed YAML mapping against them, so
a bad value is refused with one line naming the key path, the value and what is
valid::

    ConfigError: stress_levels.memory_pressure_targets[2]: 140 is out of range (valid: 0 to 100)
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_PATH = ROOT / "stress_test_config.yml"

GRADES = ("excellent", "good", "acceptable", "marginal", "poor")
"""Grades from best to worst. Marginal lies between the acceptable and poor bounds."""

SEED_KEYS = {
    "baseline": "baseline_performance",
    "memory_leak": "memory_leak_simulation",
    "high_memory": "high_memory_usage",
    "rapid_growth": "rapid_memory_growth",
    "vector_store": "vector_store_stress",
    "concurrent_agents": "concurrent_agent_stress",
    "optimization_overload": "optimization_overload",
    "memory_pressure_crisis": "memory_pressure_crisis",
    "recovery": "recovery_capabilities",
    "endurance": "endurance_limits",
}
"""Scenario name -> the seed's config key for the same scenario."""

SCENARIO_NAMES = tuple(SEED_KEYS)
"""The design's ten scenarios, in its order."""


class ConfigError(ValueError):
    """A configuration problem, as one line naming the key and what is valid."""


def scenario_name(name: str) -> str:
    """Resolve a scenario name or its seed key to the scenario name.

    The design's ten resolve by name or seed key; a scenario added to
    ``scenarios/registry.py`` resolves by its name.

    >>> scenario_name("memory_leak_simulation")
    'memory_leak'
    """
    if name in SEED_KEYS:
        return name
    for short, seed in SEED_KEYS.items():
        if seed == name:
            return short
    from scenarios.registry import names  # here: the scenario modules import this one

    registered = names()
    if name in registered:
        return name
    valid = ", ".join(registered)
    raise ConfigError(f"unknown scenario {name!r} (valid: {valid}, or their seed keys)")


def _num(lo: float | None = None, hi: float | None = None, *, above: bool = False) -> Any:
    """Field metadata for a number in [lo, hi] (or (lo, hi] with ``above``)."""
    return {"lo": lo, "hi": hi, "above": above}


def _f(lo: float | None = None, hi: float | None = None, *, above: bool = False) -> Any:
    return field(metadata=_num(lo, hi, above=above))


@dataclass(frozen=True)
class TestDuration:
    __test__ = False  # not a pytest class, whatever its name

    baseline_performance: float = _f(0, above=True)
    memory_leak_simulation: float = _f(0, above=True)
    high_memory_usage: float = _f(0, above=True)
    rapid_memory_growth: float = _f(0, above=True)
    vector_store_stress: float = _f(0, above=True)
    concurrent_agent_stress: float = _f(0, above=True)
    optimization_overload: float = _f(0, above=True)
    memory_pressure_crisis: float = _f(0, above=True)
    recovery_capabilities: float = _f(0, above=True)
    endurance_limits: float = _f(0, above=True)

    def of(self, scenario: str) -> float:
        """Default duration in seconds of one of the design's ten (name or seed key).

        A scenario added outside the ten has no key here: ask its
        :meth:`scenarios.spec.Scenario.default_duration`, which falls back to its own.
        """
        return float(getattr(self, SEED_KEYS[scenario_name(scenario)]))


@dataclass(frozen=True)
class StressLevels:
    default_level: int = _f(0, 4)
    memory_multiplication_factors: tuple[float, ...] = _f(0, above=True)
    memory_pressure_targets: tuple[float, ...] = _f(1, 100)
    concurrent_agents: tuple[int, ...] = _f(1, 1000)
    optimization_requests_per_cycle: tuple[int, ...] = _f(1, 10000)

    def count(self) -> int:
        return len(self.memory_multiplication_factors)


@dataclass(frozen=True)
class Threshold:
    """Bounds of one metric's grades; ``higher_is_better`` for stability."""

    excellent: float = _f()
    good: float = _f()
    acceptable: float = _f()
    poor: float = _f()


@dataclass(frozen=True)
class PerformanceThresholds:
    response_time: Threshold = _f()
    stability_score: Threshold = _f()
    memory_growth: Threshold = _f()
    error_rate: Threshold = _f()

    HIGHER_IS_BETTER: typing.ClassVar[frozenset[str]] = frozenset({"stability_score"})

    def items(self) -> list[tuple[str, Threshold]]:
        return [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self)]


@dataclass(frozen=True)
class BusinessValue:
    memory_optimization_per_mb: float = _f(0)
    performance_improvement_per_second: float = _f(0)
    stability_improvement_per_point: float = _f(0)
    error_reduction_per_error: float = _f(0)
    reference_cycle_time_s: float = _f(0, above=True)
    stability_floor: float = _f(0, 100)
    acceptable_error_rate: float = _f(0, 100)


@dataclass(frozen=True)
class Safety:
    emergency_shutdown_threshold: float = _f(1, 100)
    max_test_duration: float = _f(0, above=True)
    memory_cleanup_interval: float = _f(0, above=True)
    system_health_check_interval: float = _f(0, above=True)
    target_pressure_limit: float = _f(1, 1000)
    target_pressure_limit_s: float = _f(0)
    target_lost_after: int = _f(1, 1000)


@dataclass(frozen=True)
class LeakDetection:
    warmup_s: float = _f(0)
    window_s: float = _f(0, above=True)
    lookback_s: float = _f(0, above=True)
    min_windows: int = _f(4, 10000)
    min_slope_mb_per_min: float = _f(0)
    significance: float = _f(0, 0.5, above=True)


PROFILE_MODES = ("off", "auto", "on")
"""``monitor.leak_profiling.mode``: never; only where the scenario marks a stage and the
target is the bundled service; whenever the detector calls a leak or a stage is marked."""


@dataclass(frozen=True)
class LeakProfiling:
    mode: str = _f()
    window_s: float = _f(2, 600)
    top_sites: int = _f(1, 1000)


@dataclass(frozen=True)
class Monitor:
    interval: float = _f(0.05, 3600)
    http_timeout: float = _f(0, 60, above=True)
    leak_detection: LeakDetection = _f()
    leak_profiling: LeakProfiling = _f()


@dataclass(frozen=True)
class Service:
    budget_mb: float = _f(16, 1_048_576)
    max_body_bytes: int = _f(1024, 1 << 30)
    optimization_queue_size: int = _f(1, 100_000)
    embedding_cache_mb: float = _f(0, above=True)
    conversation_cache_mb: float = _f(0, above=True)
    vector_cache_mb: float = _f(0, above=True)


@dataclass(frozen=True)
class Scenarios:
    quick: tuple[str, ...] = _f()
    quick_duration_scale: float = _f(0, 1, above=True)
    leak_rate_mb_per_min: float = _f(0, above=True)
    rapid_growth_mb_per_cycle: float = _f(0, above=True)
    document_kb: float = _f(0, 512, above=True)
    recovery_object_mb: float = _f(0, above=True)
    recovery_tolerance_pct: float = _f(0, 100, above=True)
    pressure_tolerance: float = _f(0, 50, above=True)


@dataclass(frozen=True)
class Compare:
    response_time_pct: float = _f(0)
    memory_growth_mb: float = _f(0)
    error_rate_points: float = _f(0)
    stability_points: float = _f(0)


@dataclass(frozen=True)
class Config:
    test_duration: TestDuration = _f()
    stress_levels: StressLevels = _f()
    performance_thresholds: PerformanceThresholds = _f()
    fail_on: str = _f()
    business_value: BusinessValue = _f()
    safety: Safety = _f()
    monitor: Monitor = _f()
    service: Service = _f()
    scenarios: Scenarios = _f()
    compare: Compare = _f()
    source: str = field(default="", compare=False, metadata={"internal": True})

    def stress(self, level: int) -> StressLevel:
        """The stress parameters at ``level`` (an index into every stress list)."""
        n = self.stress_levels.count()
        if not 0 <= level < n:
            raise ConfigError(f"--stress-level: {level} is out of range (valid: 0 to {n - 1})")
        s = self.stress_levels
        return StressLevel(
            level=level,
            memory_factor=s.memory_multiplication_factors[level],
            pressure_target=s.memory_pressure_targets[level],
            concurrent_agents=s.concurrent_agents[level],
            optimization_requests=s.optimization_requests_per_cycle[level],
        )


@dataclass(frozen=True)
class StressLevel:
    """One column of the stress lists."""

    level: int
    memory_factor: float
    pressure_target: float
    concurrent_agents: int
    optimization_requests: int


# --- the validating walker -------------------------------------------------------


def _type_name(tp: Any) -> str:
    if tp is float:
        return "a number"
    if tp is int:
        return "a whole number"
    if tp is str:
        return "a string"
    if typing.get_origin(tp) is tuple:
        return f"a non-empty list of {_type_name(typing.get_args(tp)[0]).removeprefix('a ')}s"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return str(tp)


def _check_range(path: str, value: float, meta: Any) -> None:
    lo, hi, above = meta.get("lo"), meta.get("hi"), meta.get("above", False)
    bad = (lo is not None and (value <= lo if above else value < lo)) or (
        hi is not None and value > hi
    )
    if bad:
        if lo is not None and hi is not None:
            valid = f"{'above ' if above else ''}{lo:g} to {hi:g}"
        elif lo is not None:
            valid = f"{'above' if above else 'at least'} {lo:g}"
        else:
            valid = f"at most {hi:g}"
        raise ConfigError(f"{path}: {value!r} is out of range (valid: {valid})")


def _scalar(path: str, tp: Any, value: Any, meta: Any) -> Any:
    if tp is str:
        if isinstance(value, bool):
            raise ConfigError(
                f"{path}: {value!r} has the wrong type (valid: a string; YAML reads a bare "
                "off/on/yes/no as false/true, so quote it)"
            )
        if not isinstance(value, str):
            raise ConfigError(f"{path}: {value!r} has the wrong type (valid: a string)")
        return value
    # bool is an int in Python; a YAML `yes` is never a number here.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{path}: {value!r} has the wrong type (valid: {_type_name(tp)})")
    if tp is int and not float(value).is_integer():
        raise ConfigError(f"{path}: {value!r} has the wrong type (valid: a whole number)")
    _check_range(path, value, meta)
    return tp(value)


def _build(path: str, cls: Any, data: Any) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    for key in data:
        if key not in fields:
            valid = ", ".join(fields)
            where = f"{path}.{key}" if path else str(key)
            raise ConfigError(f"{where}: unknown key (valid keys here: {valid})")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        where = f"{path}.{name}" if path else name
        if name not in data:
            raise ConfigError(f"{where}: missing (every key of the shipped file is required)")
        kwargs[name] = _value(where, hints[name], data[name], f.metadata)
    return cls(**kwargs)


def _value(path: str, tp: Any, value: Any, meta: Any) -> Any:
    if dataclasses.is_dataclass(tp):
        return _build(path, tp, value)
    if typing.get_origin(tp) is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: {value!r} has the wrong type (valid: {_type_name(tp)})")
        if not value:
            raise ConfigError(f"{path}: the list is empty (valid: {_type_name(tp)})")
        inner = typing.get_args(tp)[0]
        return tuple(_scalar(f"{path}[{i}]", inner, v, meta) for i, v in enumerate(value))
    if isinstance(tp, types.UnionType):  # pragma: no cover - no optional keys today
        raise TypeError(path)
    return _scalar(path, tp, value, meta)


def _cross_checks(cfg: Config) -> None:
    """Rules that span keys."""
    s = cfg.stress_levels
    lists = {f.name: getattr(s, f.name) for f in dataclasses.fields(s) if f.name != "default_level"}
    lengths = {len(v) for v in lists.values()}
    if len(lengths) != 1:
        detail = ", ".join(f"{k} has {len(v)}" for k, v in lists.items())
        raise ConfigError(f"stress_levels: the lists differ in length ({detail}; valid: equal)")
    if s.default_level >= s.count():
        raise ConfigError(
            f"stress_levels.default_level: {s.default_level} is out of range "
            f"(valid: 0 to {s.count() - 1})"
        )
    mode = cfg.monitor.leak_profiling.mode
    if mode not in PROFILE_MODES:
        raise ConfigError(
            f"monitor.leak_profiling.mode: {mode!r} is not a mode "
            f"(valid: {', '.join(PROFILE_MODES)})"
        )
    if cfg.fail_on not in GRADES:
        raise ConfigError(f"fail_on: {cfg.fail_on!r} is not a grade (valid: {', '.join(GRADES)})")
    for name, t in cfg.performance_thresholds.items():
        bounds = [t.excellent, t.good, t.acceptable, t.poor]
        higher = name in PerformanceThresholds.HIGHER_IS_BETTER
        ordered = sorted(bounds, reverse=higher)
        if bounds != ordered:
            way = "falling" if higher else "rising"
            raise ConfigError(
                f"performance_thresholds.{name}: bounds {bounds} are not in order "
                f"(valid: {way} from excellent to poor)"
            )
    for i, name in enumerate(cfg.scenarios.quick):
        try:
            scenario_name(name)
        except ConfigError as exc:
            raise ConfigError(f"scenarios.quick[{i}]: {exc}") from None


def parse_config(data: Any, source: str = "<memory>") -> Config:
    """Validate an already-parsed YAML document."""
    cfg = _build("", Config, data)
    cfg = dataclasses.replace(cfg, source=source)
    _cross_checks(cfg)
    return cfg


def load_config(path: str | Path | None = None) -> Config:
    """Load and validate a config file (default: the shipped one)."""
    p = Path(path) if path else DEFAULT_CONFIG_PATH
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found (pass an existing YAML file)") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the config file ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(f"{p}: bad YAML{where}: {problem} (valid: a YAML mapping)") from None
    try:
        return parse_config(data, str(p))
    except ConfigError as exc:
        raise ConfigError(f"{p.name}: {exc}") from None
