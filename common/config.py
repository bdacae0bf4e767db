"""Load and validate ``stress_test_config.yml`` into typed, frozen dataclasses.

Every section is a dataclass whose fields carry their valid range in
``metadata``; one generic walker checks a parsed YAML mapping against them, so
a bad value is refused with one line naming the key path, the value and what is
valid::

    ConfigError: stress_levels.memory_pressure_targets[2]: 140 is out of range (valid: 0 to 100)

This module knows no scenario: the keys of ``test_duration`` and the names in
``scenarios.quick`` are checked against the registered scenarios by
:func:`scenarios.registry.check_config`.
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


class ConfigError(ValueError):
    """A configuration problem, as one line naming the key and what is valid."""


def _num(lo: float | None = None, hi: float | None = None, *, above: bool = False) -> Any:
    """Field metadata for a number in [lo, hi] (or (lo, hi] with ``above``)."""
    return {"lo": lo, "hi": hi, "above": above}


def _ranged(lo: float | None = None, hi: float | None = None, *, above: bool = False) -> Any:
    """A dataclass field whose value (each item, for a list or mapping) lies in [lo, hi]."""
    return field(metadata=_num(lo, hi, above=above))


@dataclass(frozen=True)
class StressLevels:
    default_level: int = _ranged(0, 4)
    memory_multiplication_factors: tuple[float, ...] = _ranged(0, above=True)
    memory_pressure_targets: tuple[float, ...] = _ranged(1, 100)
    concurrent_agents: tuple[int, ...] = _ranged(1, 1000)
    optimization_requests_per_cycle: tuple[int, ...] = _ranged(1, 10000)

    def count(self) -> int:
        return len(self.memory_multiplication_factors)


@dataclass(frozen=True)
class Threshold:
    """Bounds of one metric's grades; ``higher_is_better`` for stability."""

    excellent: float = _ranged()
    good: float = _ranged()
    acceptable: float = _ranged()
    poor: float = _ranged()


@dataclass(frozen=True)
class PerformanceThresholds:
    response_time: Threshold = _ranged()
    stability_score: Threshold = _ranged()
    memory_growth: Threshold = _ranged()
    error_rate: Threshold = _ranged()
    leak: Threshold = _ranged()

    HIGHER_IS_BETTER: typing.ClassVar[frozenset[str]] = frozenset({"stability_score"})

    def items(self) -> list[tuple[str, Threshold]]:
        return [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self)]


@dataclass(frozen=True)
class BusinessValue:
    memory_optimization_per_mb: float = _ranged(0)
    performance_improvement_per_second: float = _ranged(0)
    stability_improvement_per_point: float = _ranged(0)
    error_reduction_per_error: float = _ranged(0)
    reference_cycle_time_s: float = _ranged(0, above=True)
    stability_floor: float = _ranged(0, 100)
    acceptable_error_rate: float = _ranged(0, 100)


@dataclass(frozen=True)
class Safety:
    emergency_shutdown_threshold: float = _ranged(1, 100)
    max_test_duration: float = _ranged(0, above=True)
    memory_cleanup_interval: float = _ranged(0, above=True)
    system_health_check_interval: float = _ranged(0, above=True)
    target_pressure_limit: float = _ranged(1, 1000)
    target_pressure_limit_s: float = _ranged(0)
    target_lost_after: int = _ranged(1, 1000)
    allow_remote_targets: bool = _ranged()


@dataclass(frozen=True)
class LeakDetection:
    warmup_s: float = _ranged(0)
    window_s: float = _ranged(0, above=True)
    lookback_s: float = _ranged(0, above=True)
    min_windows: int = _ranged(4, 10000)
    min_slope_mb_per_min: float = _ranged(0)
    min_rise_mb: float = _ranged(0, above=True)
    creep_mb_per_min: float = _ranged(0)
    significance: float = _ranged(0, 0.5, above=True)
    confirm: int = _ranged(1, 100)
    sustain: float = _ranged(0, 1)
    shortest_share: float = _ranged(0, 1, above=True)
    clear_hold_s: float = _ranged(0)
    penalty: float = _ranged(0, 1000, above=True)
    step_sigmas: float = _ranged(0, 1000)
    staircase_steps: int = _ranged(2, 100)


PROFILE_MODES = ("off", "auto", "on")
"""``monitor.leak_profiling.mode``: never; only where the scenario marks a stage and the
target is the bundled service; whenever the detector calls a leak or a stage is marked."""


@dataclass(frozen=True)
class LeakProfiling:
    mode: str = _ranged()
    window_s: float = _ranged(2, 600)
    top_sites: int = _ranged(1, 1000)


@dataclass(frozen=True)
class Monitor:
    interval: float = _ranged(0.05, 3600)
    http_timeout: float = _ranged(0, 60, above=True)
    leak_detection: LeakDetection = _ranged()
    leak_profiling: LeakProfiling = _ranged()


@dataclass(frozen=True)
class Service:
    budget_mb: float = _ranged(16, 1_048_576)
    max_body_bytes: int = _ranged(1024, 1 << 30)
    optimization_queue_size: int = _ranged(1, 100_000)
    embedding_cache_mb: float = _ranged(0, above=True)
    conversation_cache_mb: float = _ranged(0, above=True)
    vector_cache_mb: float = _ranged(0, above=True)
    aggressive_at: float = _ranged(1, 1000)
    emergency_at: float = _ranged(1, 1000)
    recover_below: float = _ranged(1, 1000)


@dataclass(frozen=True)
class Scenarios:
    quick: tuple[str, ...] = _ranged()
    quick_duration_scale: float = _ranged(0, 1, above=True)
    leak_rate_mb_per_min: float = _ranged(0, above=True)
    rapid_growth_mb_per_cycle: float = _ranged(0, above=True)
    document_kb: float = _ranged(0, 512, above=True)
    recovery_object_mb: float = _ranged(0, above=True)
    recovery_tolerance_pct: float = _ranged(0, 100, above=True)
    recovery_min_observed_s: float = _ranged(0)
    pressure_tolerance: float = _ranged(0, 50, above=True)


@dataclass(frozen=True)
class CheckSetting:
    """One scenario expectation's bound and whether failing it fails the verdict."""

    required: bool
    bound: float | None = None


@dataclass(frozen=True)
class Checks:
    """``checks``: scenario name -> check id -> :class:`CheckSetting`.

    Which ids a scenario has is the scenario's own declaration (its ``expected``);
    the scenarios' registry refuses a config that names an id its scenario lacks.
    """

    table: tuple[tuple[str, tuple[tuple[str, CheckSetting], ...]], ...] = ()

    def of(self, scenario: str) -> dict[str, CheckSetting]:
        return dict(dict(self.table).get(scenario, ()))

    def scenarios(self) -> list[str]:
        return [name for name, _ in self.table]

    @classmethod
    def parse(cls, path: str, data: Any) -> Checks:
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of scenario names, got {data!r}")
        table = []
        for scenario, checks in data.items():
            where = f"{path}.{scenario}"
            if not isinstance(checks, dict):
                raise ConfigError(f"{where}: expected a mapping of check ids, got {checks!r}")
            rows = []
            for cid, setting in checks.items():
                at = f"{where}.{cid}"
                if not isinstance(setting, dict):
                    raise ConfigError(
                        f"{at}: expected a mapping with required (true/false) and an optional "
                        f"bound, got {setting!r}"
                    )
                unknown = set(setting) - {"required", "bound"}
                if unknown:
                    raise ConfigError(
                        f"{at}.{sorted(unknown)[0]}: unknown key (valid keys here: required, bound)"
                    )
                req = setting.get("required")
                if not isinstance(req, bool):
                    raise ConfigError(
                        f"{at}.required: {req!r} has the wrong type (valid: true, false)"
                    )
                bound = setting.get("bound")
                if bound is not None:
                    bound = _scalar(f"{at}.bound", float, bound, _num(0))
                rows.append((str(cid), CheckSetting(req, bound)))
            table.append((str(scenario), tuple(rows)))
        return cls(tuple(table))


@dataclass(frozen=True)
class Compare:
    response_time_pct: float = _ranged(0)
    memory_growth_mb: float = _ranged(0)
    error_rate_points: float = _ranged(0)
    stability_points: float = _ranged(0)


@dataclass(frozen=True)
class Config:
    test_duration: dict[str, float] = _ranged(0, above=True)
    """Seconds of a run without ``--duration``, by the scenario's config key. Which keys
    are valid is the scenario registry's business (``scenarios.registry.check_config``)."""
    stress_levels: StressLevels = _ranged()
    performance_thresholds: PerformanceThresholds = _ranged()
    fail_on: str = _ranged()
    business_value: BusinessValue = _ranged()
    safety: Safety = _ranged()
    monitor: Monitor = _ranged()
    service: Service = _ranged()
    scenarios: Scenarios = _ranged()
    checks: Checks = _ranged()
    compare: Compare = _ranged()
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
    if tp is bool:
        return "true or false"
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
    if typing.get_origin(tp) is dict:
        return f"a mapping of names to {_type_name(typing.get_args(tp)[1]).removeprefix('a ')}s"
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
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: {value!r} has the wrong type (valid: true or false)")
        return value
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
    if tp is Checks:
        return Checks.parse(path, value)
    if dataclasses.is_dataclass(tp):
        return _build(path, tp, value)
    if typing.get_origin(tp) is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: {value!r} has the wrong type (valid: {_type_name(tp)})")
        if not value:
            raise ConfigError(f"{path}: the list is empty (valid: {_type_name(tp)})")
        inner = typing.get_args(tp)[0]
        return tuple(_scalar(f"{path}[{i}]", inner, v, meta) for i, v in enumerate(value))
    if typing.get_origin(tp) is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: {value!r} has the wrong type (valid: {_type_name(tp)})")
        inner = typing.get_args(tp)[1]
        out = {}
        for key, v in value.items():
            if not isinstance(key, str) or not key:
                raise ConfigError(f"{path}: {key!r} is not a key (valid: a name)")
            out[key] = _scalar(f"{path}.{key}", inner, v, meta)
        return out
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
    svc = cfg.service
    if not svc.aggressive_at <= svc.recover_below <= svc.emergency_at:
        raise ConfigError(
            f"service: aggressive_at {svc.aggressive_at:g}, recover_below {svc.recover_below:g}, "
            f"emergency_at {svc.emergency_at:g} are not in order "
            "(valid: aggressive_at <= recover_below <= emergency_at)"
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
