"""One memory sample: read every source at once, merge into one CSV row.

:class:`Sampler` has no clock of its own (the monitor calls :meth:`Sampler.take`
on its schedule), so tests drive it directly. Each call reads the sources
concurrently, in greenlets of their own, and waits for them at most
``deadline`` seconds: a slow endpoint never delays the psutil reading, and a
row is written every interval whatever the endpoints do.

Each source fails alone (a :class:`Feed` keeps its state):

- a source that raises :class:`SourceFailed`, does not answer within the
  deadline, or returns figures :func:`~monitors.sources.junk_values` rejects is
  *degraded* for that sample: its columns stay empty. The first failure after
  good answers reports ``source_degraded`` (the reason and an example of what
  came back); the first good answer after it, ``source_recovered``;
- :class:`SourceMissing` before the source ever answered well drops it for the
  run (``source_missing``); after that it counts as a failure, since the
  source was there;
- any other exception is a bug in the source: logged once with its
  traceback, the source is disabled for the rest of the run
  (``source_disabled``) and the sample goes on with the others.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol

import gevent
import greenlet
import psutil

from memstress.monitors.readings import (
    RSS_COLUMNS,
    SourceFailed,
    SourceMissing,
    TargetGone,
    junk_values,
)
from memstress.monitors.sources import TARGET_SOURCES

log = logging.getLogger(__name__)


class Source(Protocol):
    name: str

    def read(self) -> dict[str, Any]: ...


def is_local(source: Source) -> bool:
    """A source that reads only this machine (``local = True``: /proc, psutil). The sampler
    reads it in its own greenlet: it never waits on the network, and a gevent timeout
    could not interrupt a file read anyway, so a greenlet and a timer of its own would be
    pure cost (the monitor's CPU budget, bench ``sampler_cpu_pct_of_core``)."""
    return getattr(source, "local", False) is True


RSS_ORDER = (
    ("proc_rss_bytes", "psutil"),
    ("metrics_rss_bytes", "metrics_url"),
    ("prom_rss_bytes", "prometheus"),
    ("stats_rss_bytes", "stats"),
    ("custom_rss_bytes", "custom"),  # a registered source's rss_bytes (monitors.registry)
)
"""Where the target RSS of a row comes from, best first (the ``rss_source`` value)."""

OK, DEGRADED = "ok", "degraded"

Report = Callable[[str, str, dict[str, Any]], None]
"""``report(kind, source name, detail)``: a source_* event for the run's events.csv."""


@dataclass
class Feed:
    """One source and how it has been answering."""

    source: Source
    state: str = OK
    answered: bool = False  # has answered well at least once
    since: float = 0.0  # time.time() of the failure that degraded it
    failed_reads: int = 0  # in the current degraded spell
    busy: gevent.Greenlet | None = None  # a read still running from an earlier sample

    @property
    def name(self) -> str:
        return self.source.name


@dataclass
class Outcome:
    """What one read of one source gave."""

    reading: dict[str, Any] | None = None  # None: failed, missing or disabled
    gone: bool = False  # the source said the target process is gone


@dataclass
class Sample:
    """A row for ``memory_samples.csv`` plus what the safety guard needs."""

    row: dict[str, Any]
    process_alive: bool | None  # the target process by PID; None when no PID is read
    memory_read: bool | None  # some source read the target's RSS; None: no source reads it
    failures: list[str] = field(default_factory=list)  # sources that read nothing this time
    late: list[str] = field(default_factory=list)  # sources that did not answer in time

    @property
    def rss(self) -> float | None:
        value = self.row.get("rss_bytes")
        return None if value is None else float(value)


class Sampler:
    """Reads its sources concurrently, each failing alone; see the module doc.

    :param report: called for each source_* event (kind, source, detail).
    :param deadline: seconds a sample waits for its sources; one still reading
        then has its columns left empty (and is not asked again until it ends).
        None: wait for every source.
    :param host_total_bytes: the host's memory, the bound of any RSS; default psutil's.
    """

    def __init__(
        self,
        sources: Sequence[Source],
        report: Report = lambda kind, name, detail: None,
        *,
        deadline: float | None = None,
        host_total_bytes: float | None = None,
    ) -> None:
        self.feeds = [Feed(s) for s in sources]
        self.report = report
        self.deadline = deadline
        self.host_total_bytes = (
            psutil.virtual_memory().total if host_total_bytes is None else host_total_bytes
        )
        self.missing: dict[str, str] = {}
        self.disabled: dict[str, str] = {}

    @property
    def sources(self) -> list[Source]:
        """The sources still in use (not missing, not disabled)."""
        return [f.source for f in self.feeds]

    def answered(self, name: str) -> bool:
        """Whether the source ``name`` is in use and has answered well at least once."""
        return any(f.answered for f in self.feeds if f.name == name)

    def take(self, meter: GreenletCpuMeter | None = None) -> Sample:
        """One sample; ``meter`` also counts the CPU of the reading greenlets."""
        now = time.time()
        feeds = list(self.feeds)  # a read may drop its feed (missing, disabled)
        reads: dict[str, gevent.Greenlet] = {}
        late: list[str] = []
        for feed in feeds:
            if is_local(feed.source):
                continue
            if feed.busy is not None and not feed.busy.dead:
                late.append(feed.name)
                continue
            g = gevent.spawn(self._read, feed, now)
            if meter is not None:
                meter.add(g)
            feed.busy = reads[feed.name] = g
        # The network reads are under way; the local ones meanwhile, in this greenlet.
        outcomes = {f.name: self._read(f, now, timed=False) for f in feeds if is_local(f.source)}
        gevent.joinall(list(reads.values()), timeout=self.deadline)
        row: dict[str, Any] = {}
        failures: list[str] = []
        for feed in feeds:
            name = feed.name
            g = reads.get(name)
            if g is not None and not g.dead:
                late.append(name)
                failures.append(name)
                continue
            if g is not None:  # a read that raised all the same (a bug in reporting): logged
                outcomes[name] = g.value if g.successful() else Outcome()
            outcome = outcomes.get(name)
            if outcome is None:
                continue  # still reading from an earlier sample
            if outcome.reading is not None:
                row.update(outcome.reading)
            elif name not in self.missing and name not in self.disabled:
                failures.append(name)
        row["rss_bytes"], row["rss_source"] = None, None
        for key, label in RSS_ORDER:
            if row.get(key) is not None:
                row["rss_bytes"], row["rss_source"] = row[key], label
                break
        process = outcomes.get("process")
        active = {f.name for f in self.feeds}
        alive = None if process is None or "process" not in active else not process.gone
        reads_memory = bool(active & TARGET_SOURCES)
        memory = any(row.get(k) is not None for k in RSS_COLUMNS) if reads_memory else None
        return Sample(row, alive, memory, failures, late)

    def close(self) -> None:
        """Stop the reads still running (a slow source's), so none reports after the run."""
        gevent.killall([f.busy for f in self.feeds if f.busy is not None], block=True)

    def _read(self, feed: Feed, now: float, *, timed: bool = True) -> Outcome:
        """Read one source and move its state; never raises. ``timed``: within the deadline
        (a network source, in a greenlet of its own); a local source is read as it is."""
        timer = gevent.Timeout(self.deadline) if self.deadline is not None and timed else None
        try:
            if timer is not None:
                timer.start()
            reading = feed.source.read()
            bad = junk_values(reading, self.host_total_bytes)
            if bad:
                raise SourceFailed(f"figures that cannot be true: {bad[0]}", "; ".join(bad))
        except gevent.Timeout as t:
            if t is not timer:
                raise
            assert self.deadline is not None
            self._failed(feed, now, f"no answer within {self.deadline:g} s", "")
            return Outcome()
        except SourceMissing as exc:
            if feed.answered:  # it was there: gone now is a failure, not "not available"
                self._failed(feed, now, str(exc), "")
            else:
                self._drop(feed, self.missing, str(exc))
                self.report("source_missing", feed.name, {"reason": str(exc)})
            return Outcome()
        except SourceFailed as exc:
            self._failed(feed, now, str(exc), exc.example)
            return Outcome(gone=isinstance(exc, TargetGone))
        except Exception as exc:  # a bug in the source: off for the rest of the run
            error = f"{type(exc).__name__}: {exc}"[:300]
            log.exception(
                "memory monitor: source %s failed with a bug; it is off for the rest of the run",
                feed.name,
            )
            self._drop(feed, self.disabled, error)
            self.report("source_disabled", feed.name, {"error": error})
            return Outcome()
        finally:
            if timer is not None:
                timer.close()
        if feed.state == DEGRADED:
            self.report(
                "source_recovered",
                feed.name,
                {"degraded_s": round(now - feed.since, 3), "failed_reads": feed.failed_reads},
            )
            feed.state, feed.failed_reads = OK, 0
        feed.answered = True
        return Outcome(reading)

    def _failed(self, feed: Feed, now: float, reason: str, example: str) -> None:
        feed.failed_reads += 1
        if feed.state == OK:
            feed.state, feed.since = DEGRADED, now
            self.report("source_degraded", feed.name, {"reason": reason, "example": example})

    def _drop(self, feed: Feed, into: dict[str, str], why: str) -> None:
        if feed in self.feeds:
            self.feeds.remove(feed)
        into[feed.name] = why


class GreenletCpuMeter:
    """CPU seconds spent *in the current greenlet* (and those :meth:`add`-ed) between
    enter and exit.

    ``time.process_time`` around a sample would also count every user greenlet
    that runs while the sample waits on HTTP; this meter installs a greenlet
    switch tracer for the duration and adds up thread CPU time only while one
    of its greenlets runs. The tracer is removed on exit (a chained previous
    tracer keeps working), so it costs nothing between samples.
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        self._mine: set[Any] = set()
        self._since: float | None = None
        self._prev: Any = None

    def add(self, g: Any) -> None:
        """Count this greenlet's CPU too (the sampler's source reads)."""
        self._mine.add(g)

    def _trace(self, event: str, args: tuple[Any, Any]) -> None:
        if event in ("switch", "throw"):
            origin, target = args
            now = time.thread_time()
            if self._since is not None and origin in self._mine:
                self.seconds += now - self._since
                self._since = None
            if target in self._mine:
                self._since = now
        if self._prev is not None:
            self._prev(event, args)

    def __enter__(self) -> GreenletCpuMeter:
        self.seconds = 0.0
        self._mine = {greenlet.getcurrent()}
        self._prev = greenlet.settrace(self._trace)
        self._since = time.thread_time()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._since is not None:
            self.seconds += time.thread_time() - self._since
            self._since = None
        greenlet.settrace(self._prev)
        self._prev = None
        self._mine = set()
