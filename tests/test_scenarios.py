"""The ten scenarios' declarations and stage plans, and the controllers' arithmetic (pure)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from memstress.common.config import Config, ConfigError, load_config
from memstress.common.units import MB
from memstress.scenarios import api, concurrent_agents, high_memory, memory_pressure_crisis
from memstress.scenarios.control import ballast_step, leak_bytes, within
from memstress.scenarios.registry import all_scenarios, get_scenario, names
from memstress.scenarios.spec import MAX_SPAWN_RATE, Scenario
from memstress.shapes.plan import MIN_STAGE_S, PlanError, StageSpec
from tests.conftest import ROOT

REQUEST_NAMES = {
    "POST /memory/cycle",
    "POST /memory/optimize",
    "GET /memory/stats",
    "POST /agents/[id]/messages",
    "GET /agents/[id]/messages",
    "GET /agents/[id]/context",
    "DELETE /agents/[id]",
    "POST /vectors/documents",
    "POST /vectors/search",
    "DELETE /vectors/namespaces/[ns]",
    "POST /faults/leak",
    "POST /faults/ballast",
    "POST /faults/reset",
}


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config()


def stage(plan: list[StageSpec], name: str) -> StageSpec:
    return next(s for s in plan if s.name == name)


def default_plan(config: Config, name: str, level: int | None = None) -> list[StageSpec]:
    s = get_scenario(name)
    stress = config.stress(config.stress_levels.default_level if level is None else level)
    return s.build_plan(config, stress, s.default_duration(config))


DESIGN_TEN = {
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
"""The design's ten scenarios in its order, with the seed's config key of each."""


def test_the_registry_holds_the_ten_in_the_designs_order() -> None:
    assert names()[: len(DESIGN_TEN)] == tuple(DESIGN_TEN), "added scenarios go after the ten"
    for s in all_scenarios()[: len(DESIGN_TEN)]:
        assert s.seed_key == DESIGN_TEN[s.name]
        assert get_scenario(s.seed_key) is s, "a seed key names the same scenario"
        assert s.purpose and s.expected


def test_request_names_are_exactly_the_contracts() -> None:
    assert {e.name for e in api.ALL} == REQUEST_NAMES
    assert api.MESSAGE_ADD.url(id="ms1-agent-0") == "/agents/ms1-agent-0/messages"
    assert api.NAMESPACE_DELETE.url(ns="a/b") == "/vectors/namespaces/a%2Fb"
    assert api.SEARCH.url() == "/vectors/search" and str(api.CONTEXT) == "GET /agents/[id]/context"
    assert api.CONTEXT.name is api.CONTEXT.name, "made once, not on every request"
    for s in all_scenarios():
        assert set(s.endpoints) <= set(api.ALL), s.name
        assert len(set(s.endpoints)) == len(s.endpoints), s.name


@pytest.mark.parametrize("name", names())
def test_every_plan_is_playable_at_every_level(config: Config, name: str) -> None:
    s: Scenario = get_scenario(name)
    for level in range(config.stress_levels.count()):
        plan = default_plan(config, name, level)
        assert sum(st.duration_s for st in plan) == pytest.approx(s.default_duration(config))
        assert min(st.duration_s for st in plan) >= MIN_STAGE_S
        assert len({st.name for st in plan}) == len(plan)
        last = plan[-1]
        assert last.name == "cleanup" and last.params["cleanup"] is True and last.users == 1
        uses_faults = any(e.path.startswith("/faults/") for e in s.endpoints)
        assert last.params["reset_faults"] is uses_faults
        json.dumps([dict(st.params) for st in plan])  # plain data: it travels to workers
        before = 0
        for st in plan:  # every change of users takes about a second at most
            assert min(MAX_SPAWN_RATE, abs(st.users - before)) <= st.spawn_rate <= MAX_SPAWN_RATE
            before = st.users


def test_too_short_a_duration_is_refused_in_one_line(config: Config) -> None:
    with pytest.raises(PlanError) as exc:
        get_scenario("memory_leak").build_plan(config, config.stress(1), 3)
    text = str(exc.value)
    assert text.startswith("--duration: 3 s is too short for memory_leak")
    assert "valid: 6 s or more" in text and "\n" not in text


def test_memory_leak_leaks_at_the_configured_rate_then_stops_and_resets(config: Config) -> None:
    for level in range(config.stress_levels.count()):
        plan = default_plan(config, "memory_leak", level)
        factor = config.stress(level).memory_factor
        names = [s.name for s in plan]
        assert names == ["baseline", "leak", "stop_leak", "cleanup"]
        assert stage(plan, "leak").params["leak_mb_per_min"] == pytest.approx(30 * factor)
        assert stage(plan, "baseline").params["leak_mb_per_min"] == 0
        stop = stage(plan, "stop_leak").params
        assert stop["leak_mb_per_min"] == 0 and stop["reset_faults"] is True


def test_pressure_targets_follow_the_stress_level(config: Config) -> None:
    targets = config.stress_levels.memory_pressure_targets
    assert stage(default_plan(config, "high_memory"), "hold").params["pressure_target"] == 80
    assert (
        stage(default_plan(config, "memory_pressure_crisis"), "crisis").params["pressure_target"]
        == 95
    )
    for level in range(5):
        stress = config.stress(level)
        assert high_memory.target_of(config, stress) == targets[level]
        assert memory_pressure_crisis.target_of(config, stress) == targets[min(level + 2, 4)]


def test_pressure_ballast_outlives_the_pressure_stages_only(config: Config) -> None:
    plan = default_plan(config, "high_memory")
    assert [s.name for s in plan] == ["baseline", "ramp_1", "ramp_2", "hold", "release", "cleanup"]
    ramp_1, ramp_2, hold = (stage(plan, n) for n in ("ramp_1", "ramp_2", "hold"))
    assert ramp_1.params["pressure_target"] < ramp_2.params["pressure_target"] < 80
    assert ramp_1.params["hold_after_s"] == pytest.approx(ramp_2.duration_s + hold.duration_s)
    assert hold.params["hold_after_s"] == 0
    assert stage(plan, "release").params["reset_faults"] is True
    assert "pressure_target" not in stage(plan, "release").params
    assert hold.params["tolerance"] == config.scenarios.pressure_tolerance


def test_rapid_growth_spikes_scale_with_the_stress_factor(config: Config) -> None:
    for level in range(5):
        plan = default_plan(config, "rapid_growth", level)
        spikes = stage(plan, "spikes")
        factor = config.stress(level).memory_factor
        assert spikes.params["spike_bytes"] == int(50 * factor * MB)
        assert 1 <= spikes.params["interval_s"] <= 10
        assert stage(plan, "settle").params["spike_bytes"] == 0


def test_vector_documents_scale_and_stay_under_the_body_limit(config: Config) -> None:
    plan = default_plan(config, "vector_store")
    assert [s.name for s in plan] == ["load", "mixed", "search_heavy", "cleanup"]
    assert plan[0].params["document_bytes"] == 8 * 1024
    assert plan[0].params["namespaces"] >= 2
    shares = [s.params["upsert_share"] for s in plan[:3]]
    assert shares == sorted(shares, reverse=True)
    big = dataclasses.replace(
        config, scenarios=dataclasses.replace(config.scenarios, document_kb=512)
    )
    capped = default_plan(big, "vector_store", level=4)
    assert capped[0].params["document_bytes"] < config.service.max_body_bytes


def test_concurrent_agents_runs_the_levels_agent_count(config: Config) -> None:
    for level, n in enumerate(config.stress_levels.concurrent_agents):
        plan = default_plan(config, "concurrent_agents", level)
        converse = stage(plan, "converse")
        assert converse.users == 1 + n and converse.params["agents"] == n
        assert stage(plan, "join").users == 1 + math.ceil(n / 2)
    assert concurrent_agents.SCENARIO.endpoints[0] is api.MESSAGE_ADD


def test_optimization_overload_ramps_to_the_levels_requests(config: Config) -> None:
    for level, n in enumerate(config.stress_levels.optimization_requests_per_cycle):
        plan = default_plan(config, "optimization_overload", level)
        per_cycle = [s.params["optimize_per_cycle"] for s in plan[:-1]]
        assert per_cycle == [1, max(1, math.ceil(n / 2)), n, 0]


def test_recovery_stresses_then_goes_idle(config: Config) -> None:
    plan = default_plan(config, "recovery")
    assert [s.name for s in plan] == ["baseline", "stress", "idle", "cleanup"]
    stress = stage(plan, "stress")
    assert stress.params["object_bytes"] == 20 * MB
    assert stress.params["pressure_cap"] == 80
    assert stress.users > stage(plan, "baseline").users
    idle = stage(plan, "idle")
    assert idle.users == 1 and idle.params["traffic"] is False and idle.params["watch"] is True


def test_endurance_steps_users_up(config: Config) -> None:
    plan = default_plan(config, "endurance")
    steps = plan[:-1]
    assert [s.name for s in steps] == [f"step_{k}" for k in range(1, 6)]
    users = [s.users for s in steps]
    assert users == sorted(users) and len(set(users)) == 5


def test_baseline_cycles_every_second(config: Config) -> None:
    plan = default_plan(config, "baseline")
    assert [s.name for s in plan] == ["warmup", "steady", "cleanup"]
    assert all(s.params["cycle_interval_s"] == 1.0 for s in plan)


# --- the controllers' arithmetic ------------------------------------------------------


def simulate_pressure(
    target: float, *, start: float, steps: int, drift: float = 0.0
) -> list[float]:
    """A target whose pressure moves by exactly the ballast added (plus a drift per step)."""
    budget = 192 * MB
    pressure, seen = start, []
    for _ in range(steps):
        n = ballast_step(pressure, target, budget_bytes=budget, tolerance=3)
        pressure += 100 * n / budget + drift
        seen.append(pressure)
    return seen


def test_the_pressure_controller_reaches_and_holds_its_target() -> None:
    for target in (70, 80, 95, 99):
        seen = simulate_pressure(target, start=30, steps=40)
        reached = next(i for i, p in enumerate(seen) if within(p, target, 3))
        assert reached < 12
        assert all(within(p, target, 3) for p in seen[reached:])
        assert seen[-1] >= target, "a threshold at the target is crossed"
    # memory falling away under it (ttl, optimizations): it keeps topping up
    seen = simulate_pressure(80, start=30, steps=60, drift=-0.5)
    assert all(within(p, 80, 3) for p in seen[20:])


def test_ballast_steps_are_proportional_and_bounded() -> None:
    budget = 100 * MB
    step = lambda p: ballast_step(p, 80, budget_bytes=budget, tolerance=3)  # noqa: E731
    assert step(80) == 0 and step(90) == 0
    assert step(79.5) == 1 * MB, "at least the minimum step"
    assert step(0) == 10 * MB, "at most a tenth of the budget"
    assert step(70) > step(75) > step(78)
    assert ballast_step(10, 80, budget_bytes=0, tolerance=3) == 0


def test_leak_bytes_follow_the_rate() -> None:
    assert leak_bytes(30, 1.0) == int(30 * MB / 60)
    assert leak_bytes(30, 2.0) == 2 * leak_bytes(30, 1.0)
    assert leak_bytes(30, 60.0) == leak_bytes(30, 5.0), "a stall does not dump a minute at once"
    assert leak_bytes(0, 1.0) == 0 and leak_bytes(30, 0) == 0


def test_readme_scenario_table_shows_exactly_the_checks_the_verdict_makes() -> None:
    """The README's "what the verdict checks" column is `python -m memstress.scenarios --checks`."""
    import re

    from memstress.reports.checks import CATALOGUE
    from memstress.scenarios.spec import checks_text

    config = load_config()
    readme = (ROOT / "README.md").read_text()
    rows = {
        m.group(1): m.group(2)
        for m in re.finditer(r"^\| `(\w+)` \|(?:[^|\n]*\|){3} ([^|\n]*) \|$", readme, re.M)
    }
    for s in all_scenarios():
        assert rows.get(s.name) == checks_text(s, config), s.name
        for e in s.expected:
            assert e.id in CATALOGUE, f"{s.name}: no check named {e.id} in reports/checks.py"
            assert e.id in config.checks.of(s.name), f"checks.{s.name}.{e.id} missing in config"


def test_a_config_check_that_names_no_declared_check_is_refused(tmp_path: Path) -> None:
    import yaml

    from memstress.scenarios.registry import check_config

    data = yaml.safe_load((ROOT / "stress_test_config.yml").read_text())
    data["checks"]["baseline"]["no_such_check"] = {"required": True}
    path = tmp_path / "bad.yml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"checks\.baseline\.no_such_check: baseline has no"):
        check_config(load_config(path))
    data["checks"]["baseline"].pop("no_such_check")
    data["checks"]["baseline"]["memory_growth_max_mb"] = {"required": "yes"}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"memory_growth_max_mb\.required: 'yes' has the wrong"):
        load_config(path)


@pytest.mark.parametrize(
    "body",
    [
        b'{"ok":true,"results":[]}',
        b'[1, 2.5, "x", null]',
        b"42",
        b' {"a": 1}\n',  # whitespace around: json.loads decides
        b'{"a": 1} ',
        '{"a": "é"}'.encode("utf-8-sig"),  # a BOM
        '{"a": "é"}'.encode("utf-16"),  # another encoding json.loads reads
        '{"a": 1}'.encode("utf-32-le"),
        b'{"a": 1}{"b": 2}',  # two values: not JSON
        b'{"a": 1} x',
        b"<html>busy</html>",
        b'{"a": "\xff"}',  # not UTF-8
        b'"\x00"',  # a raw control character in a string
        b"",
    ],
)
def test_answers_parse_exactly_as_json_loads_of_their_bytes(body: bytes) -> None:
    """The two-step parse of every answer (a fast path, then json.loads) accepts and
    rejects what json.loads of the bytes does, with the same value."""
    try:
        expected: tuple[object, bool] = (json.loads(body) if body else None, False)
    except ValueError:
        expected = (None, True)
    assert api.parse_json(body) == expected
