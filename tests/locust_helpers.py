"""Running real Locust processes from tests: the locustfile, on loopback, into tmp_path.

Locust runs as its own process, never inside pytest: ``import locust``
monkey-patches the whole process with gevent, and after ``requests`` (hence
``ssl``) is imported that patch fails with a RecursionError.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from memstress.runner.service import clean_env, spawn

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = ROOT / "locustfile.py"


def locust_env() -> dict[str, str]:
    """The test's environment without any MEMSTRESS_* option or proxy settings."""
    return clean_env()


@dataclass
class LocustRun:
    """One Locust process and its run folder."""

    proc: subprocess.Popen[bytes]
    run_dir: Path
    log_path: Path
    started: float

    def wait(self, timeout: float) -> int:
        try:
            return int(self.proc.wait(timeout))
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"Locust did not end within {timeout:g} s; log:\n{self.log()[-4000:]}"
            ) from None

    def kill(self) -> None:
        """Stop this process and the children it forked (its own process group)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stats(self) -> dict[tuple[str, str], dict[str, Any]]:
        """``(method, name) -> entry`` from Locust's --json-file (exact totals)."""
        data = json.loads((self.run_dir / "locust.json").read_text())
        return {(e["method"], e["name"]): e for e in data}

    def requests(self, name: str, method: str | None = None) -> int:
        method = method or name.split(" ", 1)[0]
        entry = self.stats().get((method, name))
        return int(entry["num_requests"]) if entry else 0

    def failures(self) -> int:
        return sum(int(e["num_failures"]) for e in self.stats().values())

    def failure_rows(self) -> str:
        path = self.run_dir / "locust_failures.csv"
        if path.exists():
            return path.read_text()
        return json.dumps({k: e["num_failures"] for k, e in self.stats().items()})

    def stages(self) -> list[dict[str, str]]:
        with open(self.run_dir / "stages.csv", newline="") as fh:
            return list(csv.DictReader(fh))

    def events(self) -> list[dict[str, str]]:
        with open(self.run_dir / "events.csv", newline="") as fh:
            return list(csv.DictReader(fh))


def start_locust(
    run_dir: Path,
    *args: str,
    host: str | None = None,
    outputs: bool = True,
    csv_files: bool = True,
    log_name: str = "locust.log",
    locustfile: Path = LOCUSTFILE,
) -> LocustRun:
    """Start ``locust -f locustfile.py ARGS`` with its files in ``run_dir``.

    ``locustfile``: another checkout's (run from its folder, so its packages load).

    ``csv_files=False`` leaves out ``--csv`` (``--json-file`` has the exact totals
    anyway). With ``--processes`` the CSV files stay on: the Locust exit race they
    used to hit is worked around in the product (``common/locustfix.py``).
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "locust", "-f", str(locustfile), *args]
    if host:
        cmd += ["--host", host]
    if outputs:
        cmd += ["--run-dir", str(run_dir), "--json-file", str(run_dir / "locust")]
        if csv_files:
            cmd += ["--csv", str(run_dir / "locust")]
    log_path = run_dir / log_name
    proc = spawn(cmd, log_path, env=locust_env(), mode="w", cwd=locustfile.parent)
    run = LocustRun(proc, run_dir, log_path, time.monotonic())
    STARTED.append(run)
    return run


STARTED: list[LocustRun] = []
"""Every run this process started, in order: a test that fails mid-run leaves its
Locust running, and ``tests/conftest.py`` ends the runs the test itself started."""


def run_cli(
    *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``locust -f locustfile.py ARGS`` to the end, output captured (for quick refusals)."""
    cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), *args]
    return run_to_end(cmd, cwd=ROOT, timeout=timeout, env={**locust_env(), **(env or {})})


def run_stress(cwd: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """``run_stress_test.py ARGS`` to the end in folder ``cwd`` (as in a user's project),
    output captured."""
    return run_to_end(
        [sys.executable, str(ROOT / "run_stress_test.py"), *args], cwd=cwd, timeout=timeout
    )


def run_to_end(
    cmd: list[str], *, cwd: Path, timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``cmd`` to the end in ``cwd``, no stdin, output captured as text; ``env`` defaults
    to the test's environment without MEMSTRESS_* options or proxies (:func:`clean_env`)."""
    return subprocess.run(
        cmd,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env() if env is None else env,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def config_copy(path: Path, **changes: Any) -> Path:
    """The shipped config with ``section.key=value`` changes (keys as ``section__key``)."""
    data = yaml.safe_load((ROOT / "stress_test_config.yml").read_text())
    for key, value in changes.items():
        node = data
        *parents, leaf = key.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = value
    path.write_text(yaml.safe_dump(data))
    return path


def assert_no_traceback(text: str) -> None:
    assert "Traceback" not in text, text[-4000:]


def assert_on_schedule(log: str, samples: list[dict[str, str]], interval: float) -> None:
    """Every slot of the sampler's own schedule, from its first sample to its last, was
    either sampled or counted as skipped (a slow or late sample skips the slots it
    overran). Counted in the sampler's slots, so a loaded machine cannot fail it; only a
    sampler that loses slots without counting them can.

    The monitor's closing log line says how many samples it took and how many slots it
    skipped; the last sample's own lateness is not counted yet, hence one second of slack.
    """
    match = re.search(r"memory monitor: (\d+) samples \((\d+) slots skipped\)", log)
    assert match, log[-3000:]
    taken, skipped = int(match.group(1)), int(match.group(2))
    assert taken == len(samples), "every sample taken is in memory_samples.csv"
    span = float(samples[-1]["elapsed_s"]) - float(samples[0]["elapsed_s"])
    slots = span / interval + 1
    assert taken + skipped >= slots - 1 / interval, (taken, skipped, slots)
