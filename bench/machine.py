"""What machine a result came from: cores, CPU model, memory, Python and package versions."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from importlib import metadata
from typing import Any

import psutil

from bench.procs import ROOT, wrk_path

PACKAGES = (
    "locust",
    "gevent",
    "geventhttpclient",
    "fastapi",
    "uvicorn",
    "numpy",
    "scipy",
    "pandas",
    "matplotlib",
    "psutil",
)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def git_state() -> tuple[str | None, bool | None]:
    """(short commit, whether the work tree has no uncommitted change) of the checkout."""
    commit = _git_commit()
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return commit, None
    if out.returncode != 0:
        return commit, None
    # results.json and RESULTS.md are what a benchmark writes: not a change it ran with.
    changed = [
        line
        for line in out.stdout.splitlines()
        if not line.endswith(("bench/results.json", "bench/RESULTS.md"))
    ]
    return commit, not changed


def _wrk_version() -> str | None:
    exe = wrk_path()
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "-v"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    first = (out.stdout or out.stderr).strip().splitlines()
    return first[0].split(" Copyright")[0] if first else None


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def machine_info() -> dict[str, Any]:
    return {
        "cores": os.cpu_count() or 0,
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu_model(),
        "memory_bytes": int(psutil.virtual_memory().total),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "packages": {p: _version(p) for p in PACKAGES},
        "wrk": _wrk_version(),
        "git_commit": _git_commit(),
        "date": now_iso(),
    }
