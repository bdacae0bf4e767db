"""The memory budget: a number of MB, or ``auto`` from the cgroup limit.

``auto`` takes the cgroup memory limit (v2 ``memory.max``, v1
``memory.limit_in_bytes``) when one is set below host RAM; otherwise it falls
back to a share of host RAM and says so. The sysfs root is a parameter so the
lookup can be tested against a fake tree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from memstress.common.cgroup import own_cgroup_paths, parse_limit
from memstress.common.units import MB

AUTO_HOST_SHARE = 0.5
"""Without a cgroup limit, ``auto`` budgets this share of host RAM."""


@dataclass(frozen=True)
class Budget:
    bytes: int
    source: str  # "flag", "config", "cgroup v2 <file>", "cgroup v1 <file>", "host RAM"
    note: str = ""  # the log line that explains an auto budget


def _read_limit(path: Path) -> int | None:
    """A limit file's value in bytes; None when missing, unreadable or no limit."""
    try:
        return parse_limit(path.read_text())
    except (OSError, ValueError):
        return None


def cgroup_limit(
    sys_root: Path = Path("/"), proc_cgroup: str | None = None
) -> tuple[int, str] | None:
    """The tightest cgroup memory limit visible to this process, and the file it came from."""
    if proc_cgroup is None:
        try:
            proc_cgroup = (sys_root / "proc/self/cgroup").read_text()
        except OSError:
            proc_cgroup = ""
    v2_path, v1_path = own_cgroup_paths(proc_cgroup)
    base = sys_root / "sys/fs/cgroup"
    candidates: list[tuple[Path, str]] = []
    # Inside a container the cgroup namespace root is mounted at the top, so the
    # top-level file is tried as well as the process's own path.
    if v2_path is not None:
        candidates.append((base / v2_path.lstrip("/") / "memory.max", "cgroup v2"))
    candidates.append((base / "memory.max", "cgroup v2"))
    if v1_path is not None:
        candidates.append(
            (base / "memory" / v1_path.lstrip("/") / "memory.limit_in_bytes", "cgroup v1")
        )
    candidates.append((base / "memory" / "memory.limit_in_bytes", "cgroup v1"))
    found: list[tuple[int, str]] = []
    for path, kind in candidates:
        value = _read_limit(path)
        if value is not None:
            found.append((value, f"{kind} {path.relative_to(sys_root)}"))
    return min(found) if found else None


def auto_budget(host_ram: int, limit: tuple[int, str] | None) -> Budget:
    """The ``auto`` budget given host RAM and the cgroup limit (if any)."""
    if limit is not None and limit[0] < host_ram:
        value, where = limit
        return Budget(value, where, f"budget auto: {value / MB:.0f} MB from the {where} limit")
    value = int(host_ram * AUTO_HOST_SHARE)
    why = (
        "no cgroup memory limit"
        if limit is None
        else f"the cgroup limit ({limit[0] / MB:.0f} MB) is not below host RAM"
    )
    note = (
        f"budget auto: {why}; using {AUTO_HOST_SHARE:.0%} of host RAM "
        f"({host_ram / MB:.0f} MB) = {value / MB:.0f} MB"
    )
    return Budget(value, "host RAM", note)
