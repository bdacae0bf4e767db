"""``python -m memstress.reports``: build, compare and analyze; bad input is one line, exit 2."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from memstress.common.config import load_config
from memstress.reports.__main__ import main
from memstress.reports.compare import compare
from memstress.reports.results import RESULTS_NAME, SCHEMA_PATH, load_results, summary
from memstress.reports.synthetic import Synthetic, small_run, write_run

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "memstress.reports", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# --- bad input: a real subprocess for the first two, in process for the rest ------------


def test_missing_folder_is_one_line_exit_2(tmp_path: Path) -> None:
    p = run_cli("build", str(tmp_path / "nope"))
    assert p.returncode == 2
    line = one_line_error(p.stderr)
    assert line == (
        f"python -m memstress.reports build: error: {tmp_path / 'nope'}: no such folder "
        "(valid: a run folder or a session folder)"
    )
    assert p.stdout == ""


def test_bad_grade_lists_the_valid_ones(tmp_path: Path) -> None:
    p = run_cli("build", str(tmp_path), "--fail-on", "great")
    assert p.returncode == 2
    line = one_line_error(p.stderr)
    assert "argument --fail-on: 'great' is not a grade" in line
    assert "(valid: excellent, good, acceptable, marginal, poor)" in line


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["build", "{tmp}/empty"],
            "not a run folder and holds no run folders (valid: a folder with",
        ),
        (["build", "{run}", "--config", "{tmp}/none.yml"], "config file not found"),
        (["compare", "{tmp}/a", "{run}"], "no such file or folder (valid: a run folder"),
        (["compare", "{tmp}/bad.json", "{run}"], "not a memstress results file"),
        (["analyze", "{tmp}/prefix"], "prefix_stats.csv: no such file (valid: the --csv PREFIX"),
    ],
)
def test_bad_input_in_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    run = small_run(tmp_path / "run")
    (tmp_path / "bad.json").write_text('{"hello": 1}')
    (tmp_path / "empty").mkdir()
    args = [a.format(tmp=tmp_path, run=run) for a in argv]
    assert main(args) == 2
    out = capsys.readouterr()
    line = one_line_error(out.err)
    assert line.startswith(f"python -m memstress.reports {argv[0]}: error: ")
    assert expected in line


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["build"], ["compare", "x"]])
def test_usage_errors_are_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    one_line_error(capsys.readouterr().err)


# --- build and compare -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("pair")
    a = write_run(root / "old", Synthetic(duration_s=120))
    b = write_run(root / "new", Synthetic(duration_s=120))
    return a, b


def test_build_cli_prints_one_line_and_returns_the_verdict(pair: tuple[Path, Path]) -> None:
    p = run_cli("build", str(pair[0]))
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("memory_leak: grade excellent, verdict passed, exit 0 -> ")
    assert "Traceback" not in p.stderr
    assert (pair[0] / RESULTS_NAME).is_file()


def test_build_cli_session_folder(
    pair: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["build", str(pair[0].parent), "--fail-on", "excellent"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and out[-1].startswith("session: grade excellent, exit 0 -> ")


def test_compare_identical_runs_passes(
    pair: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compare", str(pair[0]), str(pair[1])]) == 0
    out = capsys.readouterr().out
    assert "No regression: no new leak" in out


def test_compare_catches_an_injected_regression(
    pair: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["build", str(pair[0])])
    doc = load_results(pair[0] / RESULTS_NAME)
    doc["metrics"]["cycle"]["mean_s"] *= 1.5  # +50% against a 20% tolerance
    worse = tmp_path / "worse.json"
    worse.write_text(json.dumps(doc))
    capsys.readouterr()
    assert main(["compare", str(pair[0] / RESULTS_NAME), str(worse)]) == 1
    out = capsys.readouterr().out
    assert "memory_leak: mean cycle time 0.0404 s -> 0.0606 s (+50.0%) > +20% allowed" in out
    assert "REGRESSION" in out


def test_compare_rules(tmp_path: Path) -> None:
    cfg = load_config()
    base = summary(load_results(_built(small_run(tmp_path / "run"))))
    cases = {
        "memory_growth_mb": (base["memory_growth_mb"] or 0) + 26,  # > 25 MB
        "error_rate_pct": (base["error_rate_pct"] or 0) + 1.5,  # > 1 point
        "stability": (base["stability"] or 0) - 6,  # > 5 points down
    }
    for metric, value in cases.items():
        result = compare({"s": base}, {"s": {**base, metric: value}}, cfg)
        assert [d.metric for d in result.regressions] == [metric]
    within = {**base, "memory_growth_mb": (base["memory_growth_mb"] or 0) + 24}
    assert compare({"s": base}, {"s": within}, cfg).exit_code == 0
    # better is never a regression
    assert compare({"s": base}, {"s": {**base, "stability": 100.0}}, cfg).exit_code == 0


def _built(run: Path) -> Path:
    assert main(["build", str(run)]) in (0, 1)
    return run / RESULTS_NAME


# --- analyze on a real Locust export ----------------------------------------------------------

LOCUSTFILE = """
from locust import HttpUser, constant, task


class U(HttpUser):
    wait_time = constant(0.05)

    @task(3)
    def cycle(self):
        self.client.get("/", name="GET /")

    @task
    def missing(self):
        self.client.get("/no-such-file", name="GET /missing")

    @task
    def shed(self):
        self.environment.events.request.fire(
            request_type="SHED", name="POST /memory/optimize", response_time=1.0,
            response_length=0, exception=None, context={},
        )
"""


SERVER = """
import http.server, sys
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


@pytest.mark.slow
def test_analyze_a_real_locust_export(tmp_path: Path) -> None:
    if shutil.which("locust", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("the locust CLI is not installed next to this Python")
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("ok")
    # The server binds port 0 itself and says which port it got: no race for a free port.
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER],
        cwd=www,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        (tmp_path / "lf.py").write_text(LOCUSTFILE)
        prefix = tmp_path / "out" / "locust"
        prefix.parent.mkdir()
        loc = subprocess.run(
            [
                str(Path(sys.executable).parent / "locust"),
                "-f",
                "lf.py",
                "--headless",
                "-u",
                "2",
                "-r",
                "2",
                "-t",
                "3s",
                "--host",
                f"http://127.0.0.1:{port}",
                "--csv",
                str(prefix),
                "--csv-full-history",
                "--json-file",
                str(prefix),
                "--only-summary",
                "--exit-code-on-error",
                "0",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert loc.returncode == 0, loc.stderr[-2000:]
    finally:
        server.terminate()
        server.wait(10)
        if server.stdout is not None:
            server.stdout.close()
    out = tmp_path / "report"
    p = run_cli("analyze", str(prefix), "--out", str(out))
    assert "Traceback" not in p.stderr, p.stderr
    # a quarter of the non-shed requests are 404s: error rate Poor, verdict failed
    assert p.returncode == 1, p.stdout[:3000] + p.stderr
    assert "error rate" in p.stdout and "-> Poor" in p.stdout, p.stdout[:3000]
    assert "unavailable (a Locust CSV export has no memory samples)" in p.stdout
    doc = json.loads((out / RESULTS_NAME).read_text())
    jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text())).validate(doc)
    m = doc["metrics"]
    assert doc["source_kind"] == "locust" and not doc["partial"], doc["missing_inputs"]
    # No management cycles: latency is graded on every request, and nothing says "cycle".
    assert m["cycle"]["count"] == 0
    assert m["latency_basis"] == "all requests"
    assert m["latency"]["source"] == "locust.json" and m["latency"]["count"] > 10, m["latency"]
    rt = next(g for g in doc["grades"] if g["metric"] == "response_time")
    assert rt["value"] is not None and "all requests" in rt["label"]
    md = (out / "stress_test_report.md").read_text()
    shown = [x for x in md.splitlines() if "cycle" in x.lower() and "performance" not in x]
    assert not shown, shown  # no cycle figure; the n/a business term names why
    perf = next(t for t in doc["business_value"]["terms"] if t["name"] == "performance")
    assert perf["value_usd"] is None and perf["why_na"] == "no management cycles were sent"
    names = {n["name"] for n in m["latency_by_name"]}
    assert "GET /" in names, names  # p50/p95/p99 of each request name, in the text too
    assert "| GET / |" in md
    # the totals are Locust's own exact ones, with the SHED rows counted apart
    raw = json.loads(prefix.with_suffix(".json").read_text())
    ok = [e for e in raw if e["method"] != "SHED"]
    assert m["requests"]["requests"] == sum(e["num_requests"] for e in ok)
    assert m["requests"]["failures"] == sum(e["num_failures"] for e in ok) > 0
    assert m["requests"]["shed"] == sum(e["num_requests"] for e in raw if e["method"] == "SHED") > 0
    assert m["memory"]["growth_mb"] is None
    assert (out / "stress_test_charts" / "latency.png").is_file()


def test_compare_two_sessions_by_scenario(
    pair: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    session = pair[0].parent
    assert main(["build", str(session)]) == 0
    results = str(session / RESULTS_NAME)
    capsys.readouterr()
    assert main(["compare", results, results]) == 0
    out = capsys.readouterr().out
    assert "| memory_leak | mean cycle time (s) |" in out
    assert "| memory_leak#2 | mean cycle time (s) |" in out  # both runs are memory_leak
