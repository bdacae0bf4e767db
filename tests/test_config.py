"""The config loader: the shipped file passes; every bad file is one line naming the key."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from memstress.common.config import DEFAULT_CONFIG_PATH, ConfigError, load_config, parse_config
from memstress.scenarios.registry import check_config, get_scenario, scenario_name

SHIPPED: dict[str, Any] = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())


def test_shipped_file_is_the_documented_default() -> None:
    cfg = check_config(load_config())
    assert get_scenario("baseline").default_duration(cfg) == 300
    assert get_scenario("endurance_limits").default_duration(cfg) == 600
    assert cfg.test_duration["memory_leak_simulation"] == 180
    assert cfg.stress_levels.memory_pressure_targets == (70, 80, 90, 95, 99)
    assert cfg.stress(3).concurrent_agents == 10
    assert cfg.stress(4).optimization_requests == 50
    assert cfg.performance_thresholds.response_time.good == 1.0
    assert cfg.safety.emergency_shutdown_threshold == 99
    assert cfg.service.budget_mb == 512
    assert (cfg.service.aggressive_at, cfg.service.emergency_at) == (80, 95)
    assert cfg.business_value.memory_optimization_per_mb == pytest.approx(0.10)


def test_seed_keys_and_names_both_resolve() -> None:
    assert scenario_name("recovery_capabilities") == "recovery"
    assert scenario_name("recovery") == "recovery"
    with pytest.raises(ConfigError, match=r"unknown scenario 'nope'.*valid: baseline"):
        scenario_name("nope")


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(d: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = d
        for p in parents:
            node = node[p]
        node[last] = value

    return mutate


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(d: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = d
        for p in parents:
            node = node[p]
        del node[last]

    return mutate


BAD: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("unknown top key", _set("bogus", 1), r"^bogus: unknown key \(valid keys here: test_duration"),
    ("unknown nested key", _set("safety.max_duration", 5), r"^safety.max_duration: unknown key"),
    ("missing key", _drop("monitor.interval"), r"^monitor.interval: missing"),
    ("wrong type", _set("monitor.interval", "fast"), r"^monitor.interval: 'fast' has the wrong"),
    ("bool is no number", _set("safety.max_test_duration", True), r"wrong type"),
    ("negative duration", _set("test_duration.baseline_performance", -5), r"out of range"),
    (
        "unknown duration key",
        _set("test_duration.warp_drive", 60),
        r"^test_duration.warp_drive: unknown key \(valid keys here: baseline_performance, ",
    ),
    (
        "missing duration key",
        _drop("test_duration.endurance_limits"),
        r"^test_duration.endurance_limits: missing",
    ),
    ("durations not a mapping", _set("test_duration", [300]), r"valid: a mapping of names"),
    ("zero duration", _set("safety.max_test_duration", 0), r"valid: above 0"),
    ("percent over 100", _set("safety.emergency_shutdown_threshold", 140), r"valid: 1 to 100"),
    (
        "list item out of range",
        _set("stress_levels.memory_pressure_targets", [70, 80, 190]),
        r"memory_pressure_targets\[2\]: 190",
    ),
    (
        "empty list",
        _set("stress_levels.concurrent_agents", []),
        r"concurrent_agents: the list is empty",
    ),
    ("list expected", _set("stress_levels.concurrent_agents", 5), r"valid: a non-empty list"),
    (
        "fraction for a count",
        _set("stress_levels.concurrent_agents", [1, 2.5, 3, 4, 5]),
        r"whole number",
    ),
    (
        "lists of unequal length",
        _set("stress_levels.concurrent_agents", [1, 2]),
        r"lists differ in length",
    ),
    (
        "default level past the lists",
        _set("stress_levels.default_level", 7),
        r"^stress_levels.default_level: 7 is out of range",
    ),
    ("unknown grade", _set("fail_on", "meh"), r"^fail_on: 'meh' is not a grade"),
    (
        "thresholds out of order",
        _set("performance_thresholds.memory_growth.good", 600),
        r"not in order",
    ),
    ("section not a mapping", _set("safety", [1, 2]), r"^safety: expected a mapping"),
    (
        "unknown quick scenario",
        _set("scenarios.quick", ["baseline", "warp"]),
        r"^scenarios.quick\[1\]: unknown scenario",
    ),
    (
        "strategy thresholds out of order",
        _set("service.recover_below", 97),
        r"^service: aggressive_at 80, recover_below 97, emergency_at 95 are not in order",
    ),
    (
        "significance over 0.5",
        _set("monitor.leak_detection.significance", 0.9),
        r"leak_detection.significance",
    ),
    (
        "unknown profiling mode",
        _set("monitor.leak_profiling.mode", "sometimes"),
        r"^monitor.leak_profiling.mode: 'sometimes' is not a mode \(valid: off, auto, on\)",
    ),
    (
        "bare off read as false",
        _set("monitor.leak_profiling.mode", False),
        r"^monitor.leak_profiling.mode: False has the wrong type .*quote it",
    ),
    (
        "capture window too short",
        _set("monitor.leak_profiling.window_s", 1),
        r"^monitor.leak_profiling.window_s: 1 is out of range \(valid: 2 to 600\)",
    ),
    (
        "a staircase of one step",
        _set("monitor.leak_detection.staircase_steps", 1),
        r"^monitor.leak_detection.staircase_steps: 1 is out of range \(valid: 2 to 100\)",
    ),
    (
        "no change-point penalty",
        _set("monitor.leak_detection.penalty", 0),
        r"^monitor.leak_detection.penalty: 0 is out of range",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "pattern"), [(m, p) for _, m, p in BAD], ids=[b[0] for b in BAD]
)
def test_bad_values_are_one_line_naming_the_key(
    tmp_path: Path, mutate: Callable[[dict[str, Any]], None], pattern: str
) -> None:
    data = copy.deepcopy(SHIPPED)
    mutate(data)
    path = tmp_path / "bad.yml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        check_config(load_config(path))  # the scenario keys are the registry's to check
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("bad.yml: ")
    assert re.search(pattern, message.removeprefix("bad.yml: ")), message


def test_default_level_4_is_valid_with_five_levels() -> None:
    data = copy.deepcopy(SHIPPED)
    data["stress_levels"]["default_level"] = 4
    assert parse_config(data).stress_levels.default_level == 4
    data["stress_levels"]["default_level"] = 5
    with pytest.raises(ConfigError, match=r"default_level: 5 is out of range \(valid: 0 to 4\)"):
        parse_config(data)


def test_bad_yaml_names_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yml"
    path.write_text("safety:\n  max_test_duration: [1, 2\n")
    with pytest.raises(ConfigError, match=r"broken.yml: bad YAML at line \d+"):
        load_config(path)


def test_missing_file_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yml")
    empty = tmp_path / "empty.yml"
    empty.write_text("")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(empty)


def test_stress_level_out_of_range_lists_valid() -> None:
    with pytest.raises(ConfigError, match=r"--stress-level: 7 is out of range \(valid: 0 to 4\)"):
        load_config().stress(7)


def test_wrong_type_message_is_exact(tmp_path: Path) -> None:
    data = copy.deepcopy(SHIPPED)
    data["service"]["budget_mb"] = "lots"
    path = tmp_path / "svc.yml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == (
        "svc.yml: service.budget_mb: 'lots' has the wrong type (valid: a number)"
    )
