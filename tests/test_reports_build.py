"""Building reports: JSON against its schema, broken folders, sessions, a 60-minute run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pandas as pd
import pytest

from memstress.common.config import Config, load_config
from memstress.reports import build_run_report, build_session_report
from memstress.reports.build import RunReport
from memstress.reports.collect import read_csv
from memstress.reports.markdown import render_run
from memstress.reports.results import (
    CHARTS_DIR,
    REPORT_NAME,
    RESULTS_NAME,
    SCHEMA_PATH,
    load_results,
)
from memstress.reports.synthetic import SMALL_START as T0
from memstress.reports.synthetic import Synthetic, small_run, write_run

SCHEMA = json.loads(SCHEMA_PATH.read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def assert_valid(doc: dict[str, Any]) -> None:
    errors = sorted(VALIDATOR.iter_errors(doc), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message[:200]}" for e in errors)


@pytest.fixture(scope="module")
def cfg() -> Config:
    return load_config()


@pytest.fixture(scope="module")
def small_report(tmp_path_factory: pytest.TempPathFactory, cfg: Config) -> RunReport:
    return build_run_report(small_run(tmp_path_factory.mktemp("b") / "run"), cfg)


def test_schema_is_a_valid_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_build_writes_json_first_then_charts_and_markdown(small_report: RunReport) -> None:
    run = small_report.results_path.parent
    assert small_report.results_path == run / RESULTS_NAME
    assert small_report.report_path == run / REPORT_NAME
    assert {p.name for p in (run / CHARTS_DIR).iterdir()} == {
        "memory.png",
        "latency.png",
        "throughput.png",
        "pressure.png",
    }
    assert small_report.results_path.stat().st_mtime <= small_report.report_path.stat().st_mtime
    doc = load_results(small_report.results_path)
    assert_valid(doc)
    assert doc["schema_version"] == 2 and doc["kind"] == "run"
    assert doc["partial"] is False and doc["missing_inputs"] == []
    assert doc["metrics"]["memory"]["growth_mb"] == 5.0
    assert doc["metrics"]["cycle"]["p95_s"] == 0.9
    assert [g["metric"] for g in doc["grades"]] == [
        "response_time",
        "stability_score",
        "memory_growth",
        "error_rate",
        "leak",
    ]
    assert doc["exit_code"] == small_report.exit_code


def test_markdown_has_every_section_and_shows_definitions(small_report: RunReport) -> None:
    md = small_report.report_path.read_text()
    for heading in (
        "## Executive summary",
        "## Detailed results",
        "## Performance analysis",
        "## System limits found",
        "## Recommendations",
        "## Business impact",
    ):
        assert heading in md
    assert "| memory growth | 5.0 MB | end memory minus start memory |" in md
    assert "mean response time (POST /memory/cycle) 0.196 s <= 0.5 s (Excellent bound)" in md
    assert "stability = 100 - errors - latency_spread - leak - pressure - stop" in md
    assert "![memory](stress_test_charts/memory.png)" in md
    assert "| error_reduction |" in md and "requests = 400" in md


def test_markdown_rebuilds_from_the_json_alone(small_report: RunReport) -> None:
    doc = json.loads(small_report.results_path.read_text())
    charts = ["stress_test_charts/memory.png", "stress_test_charts/latency.png"]
    again = render_run(doc, charts)
    assert again.split("\n## Executive summary")[1][:400] in small_report.report_path.read_text()


def test_fail_on_override_and_recorded_stop_code(tmp_path: Path, cfg: Config) -> None:
    run = small_run(tmp_path / "run")
    clean = build_run_report(run, cfg)
    # stability 76 = 100 - 10 (2.5% errors) - 14 (0.7 s spread); no leak held at the end
    assert clean.overall_grade == "acceptable"
    assert clean.exit_code == 0
    assert clean.results["metrics"]["leak"]["verdict"] == "no leak"
    # The detector called a leak and still held it at the end: the run fails on it.
    figures = {"slope_mb_min": 4.6, "ci_low_mb_min": 4.1, "ci_high_mb_min": 5.0}
    episode = {"kind": "trend", "series": "memory", "called_at": T0 + 40, **figures}
    (run / "leak_verdict.json").write_text(
        json.dumps(
            {
                "verdict": "leak",
                "reason": "rising",
                "series": "memory",
                "called_at": T0 + 40,
                **figures,
                "episodes": [episode],
            }
        )
    )
    default = build_run_report(run, cfg)
    assert default.results["metrics"]["leak"]["verdict"] == "leak"
    assert default.overall_grade == "poor"
    assert default.exit_code == 1  # poor is below the config's fail_on: acceptable
    reason = default.results["verdict"]["reason"]
    assert "leak 4.60 MB/min (CI 4.10–5.00) detected at 40 s -> Poor" in reason
    assert "false alarm" not in json.dumps(default.results["verdict"])
    lenient = build_run_report(run, cfg, fail_on="Poor")
    assert lenient.exit_code == 0
    assert lenient.results["verdict"]["fail_on"] == "poor"
    stopped = build_run_report(small_run(tmp_path / "stopped", exit_code=3), cfg)
    assert stopped.exit_code == 3  # target lost wins over the verdict
    assert stopped.results["stop"]["kind"] == "target_lost"


def _kill_mid_row(path: Path, partial_row: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(partial_row)  # no newline: the writer died mid-row


def test_truncated_files_of_a_killed_run(tmp_path: Path, cfg: Config) -> None:
    run = small_run(tmp_path / "run", ended=None, exit_code=None)
    _kill_mid_row(run / "memory_samples.csv", "1000100.0,100.0,idle,1,9")
    _kill_mid_row(run / "events.csv", "1000099.0,leak_det")
    text = (run / "locust.json").read_text()
    (run / "locust.json").write_text(text[: len(text) // 2])
    (run / "locust_stats_history.csv").unlink()
    rep = build_run_report(run, cfg)
    doc = rep.results
    assert_valid(doc)
    assert rep.partial and doc["partial"]
    assert doc["stop"]["reason"] == "unknown: the run did not record its end (killed?)"
    assert "locust.json: unreadable (not valid JSON" in " ".join(doc["missing_inputs"])
    assert "locust_stats_history.csv: missing" in doc["missing_inputs"]
    assert "memory_samples.csv: dropped a truncated last line" in doc["notes"]
    assert doc["metrics"]["memory"]["samples"] == 100  # the half row is not a sample
    assert doc["metrics"]["cycle"]["source"] == "locust_stats.csv"  # the fallback
    assert doc["stages"][1]["requests"] is None  # no history: no per-stage counts
    md = rep.report_path.read_text()
    assert "**PARTIAL RESULTS.**" in md
    assert "locust_stats_history.csv: missing" in md


def test_a_folder_of_empty_and_garbage_files(tmp_path: Path, cfg: Config) -> None:
    run = tmp_path / "run"
    run.mkdir()
    for name in ("stages.csv", "events.csv", "locust_stats.csv", "locust.json"):
        (run / name).write_bytes(b"")
    (run / "memory_samples.csv").write_bytes(b"\x00\xff\xfe garbage\x01\n\x02,,\n")
    (run / "run_meta.json").write_text('{"scenario": "baseline", "started": 17')
    rep = build_run_report(run, cfg)
    doc = rep.results
    assert_valid(doc)
    assert doc["partial"]
    missing = " ".join(doc["missing_inputs"])
    for name in (
        "run_meta.json: unreadable",
        "stages.csv: empty",
        "memory_samples.csv: unreadable",
    ):
        assert name in missing
    assert doc["overall_grade"] == "n/a" and doc["exit_code"] == 1  # nothing measured: no pass
    assert doc["metrics"]["memory"]["growth_mb"] is None
    assert not (run / CHARTS_DIR / "memory.png").exists()
    assert "n/a" in rep.report_path.read_text()


def test_only_run_meta(tmp_path: Path, cfg: Config) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "run_meta.json").write_text(
        json.dumps(
            {
                "scenario": "recovery",
                "started": 5.0,
                "ended": None,
                "exit_code": 130,
                "interrupted": True,
                "stop_reason": "interrupted by SIGINT",
            }
        )
    )
    rep = build_run_report(run, cfg)
    assert_valid(rep.results)
    assert rep.exit_code == 130
    assert rep.results["interrupted"] and rep.partial
    assert rep.results["stop"]["reason"] == "interrupted by SIGINT"
    assert "**Exit code 130: interrupted by SIGINT.** The verdict on what was measured" in (
        rep.report_path.read_text()
    )


def test_scenario_from_the_folder_name_without_run_meta(tmp_path: Path, cfg: Config) -> None:
    run = small_run(tmp_path / "20270101T000000Z_vector_store-1", meta=False)
    rep = build_run_report(run, cfg)
    assert rep.results["run"]["scenario"] == "vector_store"
    assert rep.partial and "run_meta.json: missing" in rep.results["missing_inputs"]
    assert rep.results["stop"]["reason"] == "unknown: run_meta.json is missing or unreadable"


def test_session_report_compares_runs_and_takes_the_worst_exit(tmp_path: Path, cfg: Config) -> None:
    session = tmp_path / "session"
    good = write_run(
        session / "20270101T000000Z_baseline", Synthetic(duration_s=120, scenario="baseline")
    )
    bad = write_run(
        session / "20270101T000500Z_memory_leak",
        Synthetic(duration_s=120, fail_every=5),  # 20% of one name of three: 6.7% errors
    )
    rep = build_session_report(session, [good, bad], cfg)
    doc = rep.results
    assert_valid(doc)
    assert doc["kind"] == "session"
    assert [r["scenario"] for r in doc["runs"]] == ["baseline", "memory_leak"]
    assert [r["exit_code"] for r in doc["runs"]] == [0, 1]
    assert rep.exit_code == 1
    assert doc["verdict"]["failed_runs"] == ["memory_leak"]
    assert rep.overall_grade == "marginal"
    assert doc["runs"][1]["summary"]["error_rate_pct"] == pytest.approx(100 / 5 / 3)
    for r in (good, bad):
        assert_valid(load_results(r / RESULTS_NAME))
    md = rep.report_path.read_text()
    assert "## Scenarios compared" in md
    assert "[memory_leak](20270101T000500Z_memory_leak/stress_test_report.md)" in md
    # a recorded stop code wins over every verdict
    meta = json.loads((good / "run_meta.json").read_text())
    (good / "run_meta.json").write_text(json.dumps({**meta, "exit_code": 130}))
    assert build_session_report(session, [good, bad], cfg).exit_code == 130


def test_session_with_a_run_that_cannot_be_built(tmp_path: Path, cfg: Config) -> None:
    session = tmp_path / "s"
    session.mkdir()
    rep = build_session_report(session, [session / "gone_baseline"], cfg)
    assert_valid(rep.results)
    assert rep.exit_code == 1 and rep.partial
    assert "no such folder" in rep.results["runs"][0]["stop_reason"]


def test_a_60_minute_run_folder_builds(tmp_path: Path, cfg: Config) -> None:
    run = write_run(tmp_path / "long", Synthetic(duration_s=3600, workers=2))
    assert len(pd.read_csv(run / "memory_samples.csv")) == 3600
    rep = build_run_report(run, cfg)
    doc = rep.results
    assert_valid(doc)
    assert not rep.partial
    assert doc["metrics"]["duration_s"] == 3600
    leak_stage = doc["stages"][1]
    assert leak_stage["leak"] and leak_stage["leak_slope_mb_min"] == pytest.approx(6.0)
    assert doc["metrics"]["leak"]["detection_delay_s"] == 60.0
    assert doc["metrics"]["recovery"]["recovery_time_s"] == 30.0
    assert len(rep.charts) == 5  # workers too
    assert rep.exit_code == 0


def test_csv_reader_repairs(tmp_path: Path) -> None:
    p = tmp_path / "x.csv"
    p.write_text("time,kind\n1,stage\n2,stage,extra\n3,leak_detected\n4,sta")
    df, status = read_csv(p, ("time", "kind", "detail"))
    assert df["time"].tolist() == [1.0, 3.0]
    assert df["detail"].tolist() == ["", ""]  # a column the header lacks is added, empty
    assert status.describe() == (
        "x.csv: dropped a truncated last line; skipped 1 malformed line; "
        "columns missing from its header: detail"
    )
    p.write_text("time,kind\n")
    assert read_csv(p, ("time", "kind"))[1].describe() == "x.csv: empty (header only)"
    p.write_text("1,2,3")
    assert read_csv(p, ("time", "kind"))[1].describe() == "x.csv: empty (no complete line)"


def test_report_says_not_recovered(tmp_path: Path, cfg: Config) -> None:
    run = small_run(tmp_path / "run")
    s = pd.read_csv(run / "memory_samples.csv")
    s.loc[s["elapsed_s"] >= 70, "rss_bytes"] = 150 * 2**20
    s.to_csv(run / "memory_samples.csv", index=False)
    md = build_run_report(run, cfg).report_path.read_text()
    assert "| recovery time | not recovered (memory watched for 29 s after the stress) |" in md
    assert "Memory did not come back within 10% of the pre-stress level (100 MB)" in md


def test_a_killed_load_generator_fails_the_run(tmp_path: Path, cfg: Config) -> None:
    reason = "Locust was killed by SIGKILL; its figures are partial"
    run = small_run(tmp_path / "run", exit_code=-9, stop_reason=reason)
    rep = build_run_report(run, cfg, fail_on="poor")  # the grades alone would pass
    assert_valid(rep.results)
    assert rep.results["stop"] == {
        "kind": "crashed",
        "reason": reason,
        "meta_exit_code": -9,
        "events": [],
    }
    assert rep.results["verdict"]["passed"] and rep.exit_code == 1
    assert rep.partial
    assert f"**Exit code 1: {reason}.**" in rep.report_path.read_text()
