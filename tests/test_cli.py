"""run_stress_test.py: bad usage and an unreachable target fail fast, in one line, no traceback."""

from __future__ import annotations

import contextlib
import copy
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, free_port
from tests.test_config import BAD, SHIPPED

CLI = [sys.executable, str(ROOT / "run_stress_test.py")]


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--scenario", "warp_drive"], "unknown scenario 'warp_drive'"),
        (
            ["--scenario", "baseline", "--stress-level", "7"],
            "--stress-level: 7 is out of range (valid: 0 to 4)",
        ),
        (["--scenario", "baseline", "--duration", "-5"], "'-5' is not positive"),
        (["--scenario", "baseline", "--duration", "soon"], "'soon' is not a number of seconds"),
        (["--scenario", "baseline", "--processes", "0"], "0 is out of range (valid: 1 or more)"),
        (["--scenario", "baseline", "--fail-on", "meh"], "invalid choice: 'meh'"),
        (
            ["--scenario", "baseline", "--host", "http://10.1.2.3:80"],
            "10.1.2.3 is not on this machine",
        ),
        (["--scenario", "baseline", "--host", "not a url"], "is not a URL"),
        (["--quick", "--comprehensive"], "not allowed with argument"),
        ([], "say what to run"),
        (["--quick", "--duration", "5"], "5 s is too short for baseline"),
        (["--scenario", "baseline", "--config", "/nonexistent.yml"], "config file not found"),
        (["--scenario", "baseline", "--target-pid", "5"], "--target-pid goes with --host"),
    ],
)
def test_bad_usage_is_one_line_exit_2(args: list[str], needle: str) -> None:
    out = run_cli(*args)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, out.stderr
    assert needle in lines[0]


def test_bad_config_file_is_one_line_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(
        (ROOT / "stress_test_config.yml").read_text().replace("fail_on: acceptable", "fail_on: 3")
    )
    out = run_cli("--scenario", "baseline", "--config", str(bad))
    assert out.returncode == 2
    assert (
        out.stderr.strip()
        == "run_stress_test.py: error: bad.yml: fail_on: 3 has the wrong type (valid: a string)"
    )


def test_out_dir_under_a_file_fails_before_any_load(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    out = run_cli("--scenario", "baseline", "--out", str(blocker / "results"))
    assert out.returncode == 2
    assert "cannot create the folder" in out.stderr
    assert "Traceback" not in out.stderr


@contextlib.contextmanager
def tmpfs(where: Path, options: str) -> Iterator[Path]:
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ("size=64k", "MB free (valid: a folder with at least 50 MB free)"),
        ("ro,size=1m", "not a writable folder"),
    ],
    ids=["disk-full", "read-only"],
)
def test_out_dir_full_or_read_only_fails_before_any_load(
    tmp_path: Path, options: str, needle: str
) -> None:
    with tmpfs(tmp_path / "mnt", options) as mnt:
        out = run_cli("--scenario", "baseline", "--out", str(mnt))
        assert out.returncode == 2, out.stderr
        assert needle in out.stderr
        assert "Traceback" not in out.stderr
        assert list(mnt.iterdir()) == []  # nothing was started, nothing written


def test_unreachable_target_exit_3_before_load(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    out = run_cli(
        "--scenario", "baseline", "--host", f"http://127.0.0.1:{port}", "--out", str(tmp_path)
    )
    assert out.returncode == 3, out.stdout + out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    assert f"127.0.0.1:{port} did not become healthy" in out.stderr
    (run_dir,) = tmp_path.iterdir()
    # No Locust process was started, so no load was sent and no Locust files exist.
    assert not (run_dir / "locust.log").exists()
    assert (run_dir / "run_meta.json").exists()


@pytest.mark.parametrize(
    ("mutate", "pattern"), [(m, p) for _, m, p in BAD], ids=[b[0] for b in BAD]
)
def test_every_bad_config_file_is_one_line_exit_2_through_the_cli(
    tmp_path: Path, mutate: Callable[[dict[str, Any]], None], pattern: str
) -> None:
    data = copy.deepcopy(SHIPPED)
    mutate(data)
    bad = tmp_path / "bad.yml"
    bad.write_text(yaml.safe_dump(data))
    out = run_cli("--scenario", "baseline", "--config", str(bad), "--out", str(tmp_path / "out"))
    assert out.returncode == 2
    assert "Traceback" not in out.stdout + out.stderr
    (line,) = out.stderr.splitlines()
    assert line.startswith("run_stress_test.py: error: bad.yml: ")
    assert re.search(pattern, line.split("bad.yml: ", 1)[1]), line
    assert not (tmp_path / "out").exists()  # refused before anything was written
