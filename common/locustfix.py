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
"""

from __future__ import annotations

import contextlib
import gc
import logging
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
