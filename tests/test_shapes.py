"""The stage player and the stage record, as pure functions of run time (no sleeping)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from memstress.common.config import load_config
from memstress.common.context import RunContext, Stage
from memstress.common.runfiles import STAGE_COLUMNS
from memstress.scenarios.options import resolve_settings
from memstress.shapes.plan import (
    MIN_STAGE_S,
    PLAN_COMPLETE,
    PlanError,
    StagePlayer,
    StageSpec,
    check_plan,
    plan_length,
    split,
    stage_at,
    stage_starts,
)


def plan_of(*durations: float) -> list[StageSpec]:
    return [
        StageSpec(f"s{i}", d, users=i + 1, spawn_rate=10, params={"i": i})
        for i, d in enumerate(durations)
    ]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_stage_at_boundaries() -> None:
    plan = plan_of(0.3, 0.2, 0.5)
    assert stage_starts(plan) == [0.0, 0.3, 0.5]
    assert [stage_at(plan, t) for t in (0.0, 0.29, 0.3, 0.49, 0.5, 0.99)] == [0, 0, 1, 1, 2, 2]
    assert stage_at(plan, 1.0) is None
    assert plan_length(plan) == pytest.approx(1.0)


def test_player_walks_the_plan_then_ends() -> None:
    player = StagePlayer(plan_of(0.3, 0.2, 0.5))
    ticks = [player.advance(t) for t in (0.0, 0.1, 0.35, 0.6, 0.99)]
    assert [entered for entered, _ in ticks] == [[0], [], [1], [2], []]
    assert [spec.name if spec else None for _, spec in ticks] == ["s0", "s0", "s1", "s2", "s2"]
    assert player.advance(1.0) == ([], None)
    assert player.end_reason == PLAN_COMPLETE and not player.capped
    assert player.advance(0.1) == ([], None), "an ended player stays ended"


def test_player_never_skips_a_stage_silently() -> None:
    """A late tick (Locust ticks about once a second) reports every stage it passed."""
    player = StagePlayer(plan_of(0.2, 0.2, 0.2, 0.4))
    assert player.advance(0.0) == ([0], player.plan[0])
    entered, spec = player.advance(0.65)
    assert entered == [1, 2, 3] and spec is player.plan[3]
    player2 = StagePlayer(plan_of(0.2, 0.2))
    assert player2.advance(5.0) == ([0, 1], None), "the stages still get recorded at the end"


def test_player_caps_the_run_time() -> None:
    player = StagePlayer(plan_of(0.5, 10.0), cap_s=0.8)
    assert player.advance(0.1)[1] is player.plan[0]
    assert player.advance(0.6)[1] is player.plan[1]
    assert player.advance(0.8) == ([], None)
    assert player.capped
    assert "max_test_duration" in player.end_reason and "0.8" in player.end_reason


def test_check_plan_refusals_are_one_line() -> None:
    with pytest.raises(PlanError, match="empty"):
        check_plan([])
    with pytest.raises(PlanError, match="used twice"):
        check_plan([StageSpec("a", 1, 1, 1), StageSpec("a", 1, 1, 1)])
    with pytest.raises(PlanError, match=r"'b' would last 0\.50 s") as exc:
        check_plan([StageSpec("a", 2, 1, 1), StageSpec("b", 0.5, 1, 1)])
    assert "\n" not in str(exc.value)
    check_plan([StageSpec("a", MIN_STAGE_S, 0, 1)])
    check_plan(plan_of(0.3, 0.2), min_stage_s=0.1)  # sub-second stages for tests


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "", "duration_s": 1, "users": 1, "spawn_rate": 1}, "needs a name"),
        ({"name": "x", "duration_s": 0, "users": 1, "spawn_rate": 1}, "duration"),
        ({"name": "x", "duration_s": 1, "users": -1, "spawn_rate": 1}, "users"),
        ({"name": "x", "duration_s": 1, "users": 1, "spawn_rate": 0}, "spawn rate"),
    ],
)
def test_stage_spec_refuses_nonsense(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(PlanError, match=match):
        StageSpec(**kwargs)  # type: ignore[arg-type]


def test_split_adds_up_exactly() -> None:
    for total in (7.0, 10.0, 123.45, 600.0):
        parts = split(total, [1, 1.5, 1.5, 4, 2])
        assert sum(parts) == pytest.approx(total, abs=1e-9)
        assert parts[3] == pytest.approx(total * 4 / 10, abs=0.01)
    with pytest.raises(PlanError):
        split(0, [1])


def make_context(run_dir: Path | None) -> RunContext:
    settings = resolve_settings(None)
    return RunContext.from_settings(
        settings, run_id="mstest", host="http://127.0.0.1:1", run_dir=run_dir
    )


def test_entering_stages_writes_stages_csv_and_events(tmp_path: Path) -> None:
    ctx = make_context(tmp_path)
    player = StagePlayer(plan_of(0.3, 0.2))
    clock = 1_000.0
    for t in (0.0, 0.31, 0.6):
        entered, _ = player.advance(t)
        for i in entered:
            spec = player.plan[i]
            ctx.enter_stage(
                i,
                spec.name,
                duration_s=spec.duration_s,
                users=spec.users,
                spawn_rate=spec.spawn_rate,
                params=dict(spec.params),
                elapsed_s=t,
                now=clock + t,
            )
    ctx.close()
    with open(tmp_path / "stages.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == STAGE_COLUMNS
        rows = list(reader)
    assert [r["name"] for r in rows] == ["s0", "s1"]
    assert [float(r["elapsed_s"]) for r in rows] == [0.0, 0.31]
    assert json.loads(rows[1]["params"]) == {"i": 1}
    with open(tmp_path / "events.csv", newline="") as fh:
        events = list(csv.DictReader(fh))
    assert [e["kind"] for e in events] == ["stage", "stage"]
    assert json.loads(events[1]["detail"])["name"] == "s1"
    assert ctx.stage.name == "s1" and ctx.stage.started == pytest.approx(1_000.31)


def test_a_worker_context_writes_nothing(tmp_path: Path) -> None:
    ctx = make_context(None)
    ctx.enter_stage(0, "a", duration_s=1, users=1, spawn_rate=1, params={}, elapsed_s=0)
    assert ctx.stage.name == "a"
    assert list(tmp_path.iterdir()) == []


def test_stage_message_round_trip_and_remaining_time() -> None:
    stage = Stage(2, "hold", {"pressure_target": 80.0}, started=50.0, duration_s=10, users=3)
    back = Stage.from_message(json.loads(json.dumps(stage.to_message())))
    assert back == stage
    assert back.remaining_s(now=54.0) == pytest.approx(6.0)
    assert back.remaining_s(now=70.0) == 0.0
    assert Stage().remaining_s(now=0) == 0.0


def test_every_stage_of_the_shipped_plans_outlasts_a_locust_tick() -> None:
    from memstress.scenarios.registry import all_scenarios

    config = load_config()
    for scenario in all_scenarios():
        for level in range(config.stress_levels.count()):
            stress = config.stress(level)
            total = scenario.shortest_duration(config, stress)
            plan = scenario.build_plan(config, stress, total)
            assert min(s.duration_s for s in plan) >= MIN_STAGE_S - 1e-9
            with pytest.raises(PlanError, match=r"valid: [\d.]+ s or more"):
                scenario.build_plan(config, stress, total - 0.1)
