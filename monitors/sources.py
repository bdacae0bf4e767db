"""Where a memory sample's figures come from: the sources, by name.

Each source fills some of the columns of ``memory_samples.csv``
(:data:`common.runfiles.SAMPLE_COLUMNS`) and nothing else. ``read()`` returns
its figures, or raises :class:`SourceMissing` (not there at all) or
:class:`SourceFailed` (not answering well this time); :mod:`monitors.readings`
says what each means and which figures cannot be true (:func:`junk_values`).
The sources themselves live by where they read:

- :mod:`monitors.local_sources`: this machine's ``/proc`` and psutil (process,
  smaps, host, psi, cgroup);
- :mod:`monitors.http_sources`: the target over HTTP (prometheus, stats);
- :mod:`monitors.exporter`: Prometheus text at ``--metrics-url`` (metrics_url);
- :mod:`monitors.registry`: sources registered by name (redis, a user's own).

This module names them (:data:`SOURCE_NAMES` is what ``--monitor-sources``
accepts), makes them (:func:`build_sources`) and exports every public name of the
modules above, so ``from monitors.sources import ...`` reaches any of them.
Sources are plain objects: no greenlets, no clocks, no Locust; see
:class:`monitors.sampler.Sampler`, which reads them and bounds how long a read may take.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import psutil

from memstress.common.target import TargetClient
from memstress.monitors.http_sources import (
    MAX_BODY_BYTES,
    TIERS,
    PrometheusSource,
    StatsSource,
    fetch_text,
    parse_prometheus_rss,
    stats_row,
)
from memstress.monitors.local_sources import (
    SMAPS_SHARE,
    CgroupSource,
    HostSource,
    ProcessSource,
    PsiSource,
    SmapsSource,
    parse_psi,
    parse_smaps_rollup,
)
from memstress.monitors.readings import (
    Reading,
    SourceFailed,
    SourceMissing,
    TargetGone,
    example_of,
    junk_values,
)

__all__ = [
    "HOST_SOURCES",
    "HTTP_SOURCES",
    "MAX_BODY_BYTES",
    "SMAPS_SHARE",
    "SOURCE_NAMES",
    "TARGET_SOURCES",
    "TIERS",
    "CgroupSource",
    "HostSource",
    "ProcessSource",
    "PrometheusSource",
    "PsiSource",
    "Reading",
    "SmapsSource",
    "SourceFailed",
    "SourceMissing",
    "StatsSource",
    "TargetGone",
    "build_sources",
    "check_source_names",
    "example_of",
    "fetch_text",
    "find_listening_pid",
    "host_scope_note",
    "junk_values",
    "parse_prometheus_rss",
    "parse_psi",
    "parse_smaps_rollup",
    "parse_source_names",
    "stats_row",
]

SOURCE_NAMES = ("process", "smaps", "metrics_url", "prometheus", "stats", "host", "psi", "cgroup")
"""Every source, in the order a sample reads them (``metrics_url``: monitors/exporter.py)."""

HOST_SOURCES = frozenset({"host", "psi", "cgroup"})
"""Sources that read the machine the monitor runs on: the target's only when it is there."""

TARGET_SOURCES = frozenset({"process", "prometheus", "stats"})
# smaps is left out on purpose: the process source already says whether the PID is there.
"""Sources that read the target itself (their failures count toward ``target_lost``)."""

HTTP_SOURCES = frozenset({"prometheus", "stats"})


def host_scope_note(names: Iterable[str], target: str, remote: bool, here: str) -> str | None:
    """For a remote target, the line saying whose host the host/PSI/cgroup sources read.

    They read the machine the monitor runs on (``here``); with the target on
    another machine, that is the load generator's, never the target's host.
    """
    local = sorted(HOST_SOURCES & set(names))
    if not remote or not local:
        return None
    return (
        f"{', '.join(local)}: not this target's host: they read the load generator {here}, "
        f"and the target {target} is on another machine"
    )


def find_listening_pid(url: str) -> int | None:
    """PID of the local process listening on the URL's port, when this user may see it."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError):
        return None
    for c in conns:
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
            return int(c.pid)
    return None


def build_sources(
    names: Iterable[str],
    pid: int | None,
    client_factory: Callable[[], TargetClient],
    metrics_url: Callable[[], Any] | None = None,
) -> list[Any]:
    """Source objects for the given built-in names, in :data:`SOURCE_NAMES` order
    (registered ones are made by :mod:`monitors.registry`).

    ``metrics_url`` makes the ``--metrics-url`` source; without it that source is left out.
    """
    wanted = set(check_source_names(names))
    if metrics_url is None:
        wanted.discard("metrics_url")
    make: dict[str, Callable[[], Any]] = {
        "process": lambda: ProcessSource(pid),
        "metrics_url": metrics_url or (lambda: None),
        "prometheus": lambda: PrometheusSource(client_factory()),
        "stats": lambda: StatsSource(client_factory()),
        "smaps": lambda: SmapsSource(pid, share=SMAPS_SHARE),
        "host": HostSource,
        "psi": PsiSource,
        "cgroup": lambda: CgroupSource(pid),
    }
    return [make[n]() for n in SOURCE_NAMES if n in wanted]


def parse_source_names(spec: str | None) -> tuple[str, ...]:
    """``auto``/empty -> every source; else a comma-separated subset."""
    if not spec or spec.strip() == "auto":
        return SOURCE_NAMES
    return check_source_names(n.strip() for n in spec.split(",") if n.strip())


def check_source_names(names: Iterable[str]) -> tuple[str, ...]:
    """The names, or ValueError naming the first unknown one and the valid ones."""
    from memstress.monitors.registry import REGISTRY  # registered sources (redis, a user's own)

    out = tuple(names)
    valid = SOURCE_NAMES + REGISTRY.names()
    for n in out:
        if n not in valid:
            raise ValueError(
                f"--monitor-sources: unknown source {n!r} "
                f"(valid: auto, or a comma-separated list of {', '.join(valid)})"
            )
    if not out:
        raise ValueError("--monitor-sources: no source named (valid: auto, or e.g. process,host)")
    return out
