"""Which memory cgroup a process is in, from its ``/proc/PID/cgroup`` (and mountinfo),
and what its limit file says.

Used by the monitor (the target's cgroup figures) and by the reference service (its
``--budget-mb auto`` limit). Standard library only: ``common`` imports nothing of the
suite, so the service stays importable on its own.
"""

from __future__ import annotations

import os
from pathlib import Path

UNLIMITED = 1 << 62
"""cgroup limits at or above this are "no limit" (v1 writes 9223372036854771712)."""


def parse_limit(text: str) -> int | None:
    """A ``memory.max`` (v2) or ``memory.limit_in_bytes`` (v1) value in bytes; None for no
    limit: ``max``, v1's huge number, nothing, 0. ValueError for text that is no number."""
    text = text.strip()
    if text in ("", "max"):
        return None
    value = int(text)
    return value if 0 < value < UNLIMITED else None


def own_cgroup_paths(proc_cgroup: str) -> tuple[str | None, str | None]:
    """(v2 path, v1 memory-controller path) from ``/proc/PID/cgroup`` text; None when absent."""
    v2 = v1 = None
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            v2 = path
        elif "memory" in controllers.split(","):
            v1 = path
    return v2, v1


def _mount_points(mountinfo: str) -> list[tuple[str, str, str, str]]:
    """(fstype, root, mount point, super options) of each cgroup mount."""
    out = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) >= 5 and len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
            out.append((tail[0], fields[3], fields[4], tail[2]))
    return out


def find_memory_cgroup(cgroups: str, mountinfo: str) -> tuple[Path, int] | None:
    """The directory and version of a process's memory cgroup, preferring v2.

    ``cgroups`` is ``/proc/PID/cgroup``, ``mountinfo`` ``/proc/PID/mountinfo``;
    the cgroup path is taken relative to the mount's root (as in a container).
    """
    mounts = _mount_points(mountinfo)
    v2_path, v1_path = own_cgroup_paths(cgroups)
    candidates: list[tuple[Path, int]] = []
    for fstype, root, point, opts in mounts:
        if fstype == "cgroup2" and v2_path is not None:
            candidates.append((_join(point, root, v2_path), 2))
        elif fstype == "cgroup" and v1_path is not None and "memory" in opts.split(","):
            candidates.append((_join(point, root, v1_path), 1))
    candidates.sort(key=lambda c: -c[1])
    for d, version in candidates:
        probe = "memory.current" if version == 2 else "memory.usage_in_bytes"
        if os.access(d / probe, os.R_OK):
            return d, version
    return None


def _join(point: str, root: str, path: str) -> Path:
    rel = os.path.relpath(path, root) if path.startswith(root) else path.lstrip("/")
    return Path(point) / ("" if rel == "." else rel)
