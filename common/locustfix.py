"""Workarounds for Locust bugs the suite runs into, each to be dropped when Locust fixes it.

**The --processes CSV race (Locust 2.47).** With ``--processes N`` and ``--csv``,
the parent process closes its CSV files in ``shutdown()`` and then, in an
``atexit`` handler, waits for its children with a patched ``time.sleep``. That
sleep lets Locust's CSV writer greenlet run once more, against closed files: a
``ValueError`` traceback in the log of a run that otherwise went well. The fix
here stops that greenlet at ``quit``, just before the files are closed; its rows
are as complete as in any other run (Locust writes none at shutdown).

**Workers left behind by a refused --processes run (Locust 2.47).** The parent forks
its workers before the ``init`` listeners run, and when one of them refuses the
options (exit code 2), Locust's exit handler waits up to 3 s for the workers but
drops one still alive from its list without signalling it. On a loaded machine a
worker can still be connecting then: it outlives its parent, retrying the master's
port for a minute and holding the terminal (or a caller's pipe) open.
:func:`stop_forked_workers` ends them at the refusal.

**Per-second counts kept in dicts all run (Locust 2.47).** Each request name's
``StatsEntry.num_reqs_per_sec`` and ``num_fail_per_sec`` on the master are dicts
keyed by epoch second, never trimmed: an int key and a dict slot, some 45 B per name
per second (tracemalloc), up to about 1 MB an hour for endurance's six names and the
total when every one sees requests each second (0.5 MB an hour measured on an endurance
master; bench ``self_rss_slope_mb_per_hour``). Locust reads only the last dozen seconds
while running (``current_rps``, ``current_fail_per_sec``) and the whole of them
once, in ``--json``/``--json-file`` at shutdown. :class:`PerSecondArchive` moves
the older seconds every minute into one ``array('I')`` per dict, indexed by
second from the first one archived (4 B a second, gaps included) and puts them
back at ``quitting``, before Locust writes them: every figure it shows is the
same.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from array import array
from typing import Any

import gevent
import psutil

log = logging.getLogger(__name__)


def stop_csv_writer_at_quit(environment: Any) -> None:
    """In a ``--processes`` parent writing ``--csv``, stop the CSV writer greenlet at quit."""
    opts = environment.parsed_options
    if not (getattr(opts, "processes", None) and getattr(opts, "csv_prefix", None)):
        return
    if getattr(opts, "worker", False):
        return
    environment.events.quit.add_listener(_stop_csv_writer)


def _stop_csv_writer(**_: Any) -> None:
    from locust.stats import StatsCSV  # here: importing Locust patches the process

    for obj in gc.get_objects():
        if not isinstance(obj, gevent.Greenlet) or obj.dead:
            continue
        run = getattr(obj, "_run", None)
        if getattr(run, "__name__", "") == "stats_writer" and isinstance(
            getattr(run, "__self__", None), StatsCSV
        ):
            obj.kill(block=True, timeout=2)
            log.debug("stopped Locust's CSV writer before it sees its files closed")


def stop_forked_workers(opts: Any) -> None:
    """In a ``--processes`` parent that is about to exit, end the workers it forked."""
    if not getattr(opts, "processes", None) or getattr(opts, "worker", False):
        return
    me = psutil.Process()
    try:
        mine = me.cmdline()
        children = me.children()
    except psutil.Error:
        return
    for child in children:
        with contextlib.suppress(psutil.Error):  # a child already gone needs no ending
            if child.cmdline() == mine:  # a fork of this process: one of its workers
                child.terminate()


class PerSecondArchive:
    """On a master or local runner: each stats entry's per-second counts older than
    ``keep_s`` (Locust reads the last 12 s) kept in arrays, not dicts, until ``quitting``.

    :meth:`trim` moves them out (every ``every_s`` from a greenlet in the runner's group),
    :meth:`restore` puts them back, summed with any that arrived late (a slow worker's
    report), so the dicts at shutdown hold what Locust alone would have held. Seconds
    archived from a dict Locust has since replaced (``--reset-stats``, the web UI's reset,
    a new test's entries) are dropped, as Locust dropped that dict.
    """

    def __init__(self, environment: Any, every_s: float = 60.0, keep_s: int = 30) -> None:
        self.environment = environment
        self.every_s = every_s
        self.keep_s = keep_s
        # (id(entry), attribute) -> the dict trimmed and its archived seconds
        self._old: dict[tuple[int, str], _Seconds] = {}
        self._greenlet: Any = None
        environment.events.quitting.add_listener(self.on_quitting)

    def start(self) -> None:
        """Trim every ``every_s`` in the runner's greenlet group (a bug fails the run)."""
        from locust.runners import locust_exception_handler  # here: importing Locust patches

        self._greenlet = self.environment.runner.greenlet.spawn(self._loop)
        self._greenlet.link_exception(locust_exception_handler(self.environment))

    def _loop(self) -> None:
        while True:
            gevent.sleep(self.every_s)
            self.trim()

    def _current(self) -> dict[tuple[int, str], dict[int, int]]:
        stats = self.environment.runner.stats
        return {
            (id(e), attr): getattr(e, attr)
            for e in [stats.total, *stats.entries.values()]
            for attr in ("num_reqs_per_sec", "num_fail_per_sec")
        }

    def trim(self) -> int:
        """Move the seconds before ``last request - keep_s`` out of the dicts; how many."""
        stats = self.environment.runner.stats
        current = self._current()
        for key in [k for k, v in self._old.items() if current.get(k) is not v.of]:
            del self._old[key]  # Locust replaced that dict (a reset): its seconds go with it
        last = stats.total.last_request_timestamp
        if last is None:
            return 0
        cut = int(last) - self.keep_s
        moved = 0
        for key, counts in current.items():
            old = [t for t in counts if t < cut]
            if not old:
                continue
            if key not in self._old:
                self._old[key] = _Seconds(counts, min(old))
            moved += self._old[key].take(old)
        return moved

    def restore(self) -> None:
        """Put every archived second back into its dict (summed with any there), when
        that dict is still its entry's."""
        current = self._current()
        for key, archived in self._old.items():
            if current.get(key) is archived.of:
                archived.put_back()
        self._old.clear()

    def on_quitting(self, **_: Any) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=True)
            self._greenlet = None
        self.restore()


class _Seconds:
    """One per-second dict's archived seconds: ``slots[t - first]`` is second ``t``'s count
    plus one, 0 where the dict had no such second (Locust never stores a 0, but a 0 it
    was given comes back as one)."""

    LIMIT = 2**32 - 2  # the largest count a slot holds; a larger one stays in the dict

    def __init__(self, of: dict[int, int], first: int) -> None:
        self.of = of
        self.first = first
        self.slots: array[int] = array("I")

    def take(self, seconds: list[int]) -> int:
        """Move these seconds out of the dict (summed with any already archived); how many."""
        moved = 0
        for t in sorted(seconds):
            n = self.of[t]
            if not 0 <= n <= self.LIMIT:
                continue
            if t < self.first:  # a late report for a second before the first archived
                self.slots[0:0] = array("I", [0]) * (self.first - t)
                self.first = t
            i = t - self.first
            if i >= len(self.slots):
                self.slots.extend(array("I", [0]) * (i + 1 - len(self.slots)))
            held = self.slots[i] - 1 if self.slots[i] else 0
            if held + n > self.LIMIT:
                continue
            self.slots[i] = held + n + 1
            del self.of[t]
            moved += 1
        return moved

    def put_back(self) -> None:
        """Every archived second back into the dict, summed with any count there now."""
        for i, slot in enumerate(self.slots):
            if slot:
                t = self.first + i
                self.of[t] = self.of.get(t, 0) + slot - 1
