"""The sampler of a run: which sources it reads, for which PID, within which time.

:func:`assemble_sampler` turns the source names a run asks for (``--monitor-sources``)
into a :class:`~monitors.sampler.Sampler`:

- the target's PID: the one the run was given, else, on loopback and without a
  ``--metrics-url``, the process listening on the target's port (on another host, the
  local process on the same port is not the target);
- with ``auto``, every source a user registered too, and ``redis`` for a ``redis://``
  target of a user's own load test;
- the HTTP sources only for an HTTP target: for any other they are missing, noted once;
- a note in ``events.csv`` when the host sources read the load generator, not the
  target's host;
- the run's stored vectors, counted through its adapter, in a scenario that needs a
  vector store (:mod:`monitors.stored`).

:func:`read_timeouts` keeps both an HTTP source's timeout and a sample's deadline below
the interval, so a slow target never delays the next sample.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from memstress.common.context import RunContext
from memstress.common.target import TargetClient
from memstress.monitors.exporter import MetricsUrlSource
from memstress.monitors.options import TargetProfile
from memstress.monitors.readings import SourceMissing
from memstress.monitors.redis_source import REDIS_SCHEMES
from memstress.monitors.registry import REGISTRY, SourceTarget
from memstress.monitors.sampler import Report, Sampler, Source
from memstress.monitors.sources import (
    HTTP_SOURCES,
    SOURCE_NAMES,
    build_sources,
    find_listening_pid,
    host_scope_note,
)
from memstress.monitors.stored import stored_vectors_sources

log = logging.getLogger(__name__)

HTTP_SHARE = 0.6
"""An HTTP source's timeout, as a share of the interval (at most monitor.http_timeout)."""

DEADLINE_SHARE = 0.8
"""How long a sample waits for its sources, as a share of the interval."""


def read_timeouts(interval: float, http_timeout: float) -> tuple[float, float]:
    """(HTTP timeout of a source, deadline of a sample): both below the interval."""
    return min(http_timeout, HTTP_SHARE * interval), DEADLINE_SHARE * interval


@dataclass(frozen=True)
class Assembled:
    sampler: Sampler
    pid: int | None
    """The PID the process sources read, when known."""
    extra_columns: tuple[str, ...]
    """The sample columns of registered sources, after :data:`common.runfiles.SAMPLE_COLUMNS`."""


def assemble_sampler(
    context: RunContext,
    host: str,
    source_names: Sequence[str],
    profile: TargetProfile,
    interval: float,
    report: Report,
) -> Assembled:
    """The sampler for ``host`` reading ``source_names``; ``report`` gets its source_* events."""
    ctx = context
    pid = ctx.target_pid
    # A PID is looked for only on loopback and when no --metrics-url says where the
    # memory is: on another host, the local process on the same port is not the target.
    look = pid is None and not ctx.remote and ctx.metrics is None
    if look and {"process", "smaps", "cgroup"} & set(source_names):
        pid = find_listening_pid(host) if host else None
        if pid == os.getpid():
            pid = None
        if pid is not None:
            log.info("memory monitor: target PID %d found listening at %s", pid, host)
    timeout, deadline = read_timeouts(interval, ctx.config.monitor.http_timeout)
    names = list(source_names)
    scheme = urlsplit(host).scheme if host else ""
    auto = set(names) >= set(SOURCE_NAMES)
    if auto:  # every source a user registered; redis for a redis:// host
        names += [n for n in REGISTRY.users() if n not in names]
        if profile.own_load and scheme in REDIS_SCHEMES:
            names.append("redis")
    skipped = []
    if scheme not in ("http", "https"):  # redis://..., or no --host at all
        skipped = [n for n in names if n in HTTP_SOURCES]
        names = [n for n in names if n not in HTTP_SOURCES]
    metrics = ctx.metrics
    sources: list[Source] = build_sources(
        [n for n in names if n in SOURCE_NAMES],
        pid,
        lambda: TargetClient(host, timeout=timeout),
        (lambda: MetricsUrlSource(metrics, timeout)) if metrics is not None else None,
    )
    note = host_scope_note(names, host, ctx.remote, socket.gethostname())
    if note is not None:
        log.warning("memory monitor: %s", note)
        ctx.record("source_scope", note)
    registered = []
    for name in names:
        if name in SOURCE_NAMES:
            continue
        try:
            registered.append(REGISTRY.make(name, SourceTarget(host, pid, timeout)))
        except SourceMissing as exc:
            report("source_missing", name, {"reason": str(exc)})
    # Another machine's RSS is not bounded by this host's memory (junk_values' check).
    bound = math.inf if ctx.remote else None
    counted = stored_vectors_sources(ctx, host, timeout)  # a vector scenario's stored vectors
    sampler = Sampler(
        [*sources, *registered, *counted], report, deadline=deadline, host_total_bytes=bound
    )
    for name in skipped:  # noted once, never a lost target
        sampler.missing[name] = f"--host {host or '(none)'} is not an HTTP URL"
        report("source_missing", name, {"reason": sampler.missing[name]})
    extra = tuple(c for src in registered for c in src.columns)
    return Assembled(sampler, pid, extra)
