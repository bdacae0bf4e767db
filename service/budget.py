"""The memory budget: a number of MB, or ``auto`` from the cgroup limit.

``auto`` takes the cgroup memory limit (v2 ``memory.max``, v1
``memory.limit_in_bytes``, the tightest of the process's cgroup and its ancestors)
when one is set below host RAM; otherwise it falls back to a share of host RAM and
says so. The ``/proc`` root is a parameter so the lookup can be tested against a
fake tree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from memstress.common.cgroup import process_cgroup
from memstress.common.units import MB

AUTO_HOST_SHARE = 0.5
"""Without a cgroup limit, ``auto`` budgets this share of host RAM."""


@dataclass(frozen=True)
class Budget:
    bytes: int
    source: str  # "flag", "config", "cgroup v2 <file>", "cgroup v1 <file>", "host RAM"
    note: str = ""  # the log line that explains an auto budget


def cgroup_limit(proc: Path = Path("/proc")) -> tuple[int, str] | None:
    """The tightest cgroup memory limit that holds this process, and the file it came from.

    The same lookup as the monitor's cgroup source (:mod:`memstress.common.cgroup`): the
    process's own cgroup through mountinfo, then its ancestors up to the mount's top.
    """
    try:
        found = process_cgroup(proc)
    except OSError:
        return None
    limit = None if found is None else found.limit()
    if found is None or limit is None:
        return None
    return limit[0], f"cgroup v{found.version} {limit[1]}"


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
