"""Which memory cgroup a process is in, from its ``/proc/PID/cgroup`` (and mountinfo),
and what its limit file says.

One lookup for the monitor (the target's cgroup figures and limit) and the reference
service (its ``--budget-mb auto`` limit): the process's own cgroup found through
mountinfo, and the tightest limit from there up to the mount's top. Standard library
only: ``common`` imports nothing of the suite, so the service stays importable on its
own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
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


@dataclass(frozen=True)
class MemoryCgroup:
    """A process's memory cgroup: its directory, the cgroup version and the mount it is under."""

    path: Path
    version: int
    mount: Path

    @property
    def limit_file(self) -> str:
        return "memory.max" if self.version == 2 else "memory.limit_in_bytes"

    def limit(self) -> tuple[int, Path] | None:
        """The tightest limit from this cgroup up to its mount's top, and the file it is in.

        A parent's limit binds its children too, so a service in a container or a systemd
        slice is held by whichever of its ancestors is tightest. None for no limit anywhere.
        """
        found: list[tuple[int, Path]] = []
        d = self.path
        while True:
            try:
                value = parse_limit((d / self.limit_file).read_text())
            except (OSError, ValueError):
                value = None
            if value is not None:
                found.append((value, d / self.limit_file))
            if d == self.mount or self.mount not in d.parents:
                break
            d = d.parent
        return min(found) if found else None


def find_memory_cgroup(cgroups: str, mountinfo: str) -> MemoryCgroup | None:
    """The memory cgroup of a process, preferring v2.

    ``cgroups`` is ``/proc/PID/cgroup``, ``mountinfo`` ``/proc/PID/mountinfo``;
    the cgroup path is taken relative to the mount's root (as in a container).
    """
    mounts = _mount_points(mountinfo)
    v2_path, v1_path = own_cgroup_paths(cgroups)
    candidates: list[MemoryCgroup] = []
    for fstype, root, point, opts in mounts:
        if fstype == "cgroup2" and v2_path is not None:
            candidates.append(MemoryCgroup(_join(point, root, v2_path), 2, Path(point)))
        elif fstype == "cgroup" and v1_path is not None and "memory" in opts.split(","):
            candidates.append(MemoryCgroup(_join(point, root, v1_path), 1, Path(point)))
    candidates.sort(key=lambda c: -c.version)
    for found in candidates:
        probe = "memory.current" if found.version == 2 else "memory.usage_in_bytes"
        if os.access(found.path / probe, os.R_OK):
            return found
    return None


def process_cgroup(proc: Path = Path("/proc"), who: str = "self") -> MemoryCgroup | None:
    """:func:`find_memory_cgroup` for process ``who`` (a PID or ``self``); OSError when its
    ``cgroup`` or ``mountinfo`` file cannot be read."""
    cgroups = (proc / who / "cgroup").read_text()
    mountinfo = (proc / who / "mountinfo").read_text()
    return find_memory_cgroup(cgroups, mountinfo)


def _join(point: str, root: str, path: str) -> Path:
    rel = os.path.relpath(path, root) if path.startswith(root) else path.lstrip("/")
    return Path(point) / ("" if rel == "." else rel)
