"""``python -m memstress.service`` refuses bad flags with one line naming the flag (exit 2)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import PYTHON, ROOT

BAD_FLAGS = [
    (["--budget-mb", "lots"], "--budget-mb", "auto"),
    (["--budget-mb", "4"], "--budget-mb", "16"),
    (["--port", "70000"], "--port", "65535"),
    (["--port", "http"], "--port", "1 to 65535"),
    (["--log-level", "loud"], "--log-level", "debug"),
    (["--bind", "my-laptop"], "--bind", "127.0.0.1"),
    (["--cycle-interval", "0"], "--cycle-interval", "0.05"),
    (["--config", "/nonexistent/cfg.yml"], "--config", "not found"),
    (["--frobnicate"], "--frobnicate", "--help"),
]


@pytest.mark.parametrize(("args", "flag", "valid"), BAD_FLAGS)
def test_bad_flag_is_one_line_naming_it_and_exit_2(
    tmp_path: Path, args: list[str], flag: str, valid: str
) -> None:
    p = subprocess.run(
        [PYTHON, "-m", "memstress.service", "--data-dir", str(tmp_path / "d"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert flag in lines[0] and valid in lines[0]
    assert not (tmp_path / "d").exists()  # refused before touching the data dir


def test_data_dir_is_required(tmp_path: Path) -> None:
    p = subprocess.run(
        [PYTHON, "-m", "memstress.service", "--port", "8123"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert p.returncode == 2 and "--data-dir" in p.stderr and len(p.stderr.splitlines()) == 1


def test_a_bad_config_file_names_the_key(tmp_path: Path) -> None:
    text = (ROOT / "stress_test_config.yml").read_text()
    bad = tmp_path / "bad.yml"
    bad.write_text(text.replace("budget_mb: 512", "budget_mb: 2"))
    p = subprocess.run(
        [
            PYTHON,
            "-m",
            "memstress.service",
            "--data-dir",
            str(tmp_path / "d"),
            "--config",
            str(bad),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert p.returncode == 2
    assert "service.budget_mb" in p.stderr and len(p.stderr.splitlines()) == 1
