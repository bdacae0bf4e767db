"""Installed, memstress is one name on a project's path: ``memstress``.

The wheel is built from this checkout and installed into a folder of its own; a user's
project beside it has packages named like the suite's folders (``common``, ``service``).
Both must import, each its own, and the installed suite must find its default config and
its results schema without the checkout around it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import json, sys
import common, service
import memstress.common.config as config
import memstress.common.runfiles as runfiles
import memstress.reports.results as results
from memstress.scenarios import registry
print(json.dumps({
    "user_common": common.WHO,
    "user_service": service.WHO,
    "config_file": str(config.__file__),
    "default_config": str(config.DEFAULT_CONFIG_PATH),
    "default_config_is_file": config.DEFAULT_CONFIG_PATH.is_file(),
    "schema_is_file": results.SCHEMA_PATH.is_file(),
    "results_dir": str(runfiles.RESULTS_DIR),
    "scenarios": len(registry.names()),
    "bare_suite_names": sorted(
        m for m in sys.modules
        if m.split(".")[0] in ("runner", "scenarios", "shapes", "monitors", "reports")
    ),
}))
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this checkout, built offline and installed into a folder of its own."""
    return build_and_install(tmp_path_factory.mktemp("installed"))


def build_and_install(tmp_path: Path) -> Path:
    # Built from a copy: setuptools writes build/ and *.egg-info into the tree it builds,
    # and other tests (tests/test_layers.py) read this checkout meanwhile.
    source = tmp_path / "source"
    shutil.copytree(
        ROOT, source, symlinks=True,
        ignore=shutil.ignore_patterns(".*", "results", "build", "*.egg-info", "tests", "bench"),
    )  # fmt: skip
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(wheels), str(source)],
        check=True, capture_output=True, timeout=180,
    )  # fmt: skip
    (wheel,) = wheels.glob("memstress-*.whl")
    with zipfile.ZipFile(wheel) as z:
        top = {name.split("/")[0] for name in z.namelist()}
    assert {t for t in top if not t.endswith(".dist-info")} == {"memstress"}, top
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
         "--target", str(site), str(wheel)],
        check=True, capture_output=True, timeout=180,
    )  # fmt: skip
    return site


def test_a_users_own_common_package_still_imports_beside_installed_memstress(
    site: Path, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    for name in ("common", "service"):
        (project / name).mkdir(parents=True)
        (project / name / "__init__.py").write_text(f"WHO = 'the user project\\'s {name}'\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(project), str(site)])}
    p = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=project, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    got = json.loads(p.stdout)
    assert got["user_common"] == "the user project's common"
    assert got["user_service"] == "the user project's service"
    assert Path(got["config_file"]).is_relative_to(site), got["config_file"]
    assert Path(got["default_config"]).is_relative_to(site / "memstress")
    assert got["default_config_is_file"] and got["schema_is_file"]
    assert got["results_dir"] == "results"  # under the user's working directory
    assert got["scenarios"] == 10
    assert got["bare_suite_names"] == []


def test_the_installed_suite_runs_its_own_commands(site: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(site)}
    p = subprocess.run(
        [sys.executable, "-m", "memstress.scenarios", "--checks"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    assert "baseline" in p.stdout and "memory_leak" in p.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "memstress.reports", "build", str(tmp_path / "nope")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2, bad.stderr
    assert bad.stderr.startswith("python -m memstress.reports build: error: ")
