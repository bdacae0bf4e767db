"""Which memstress this process runs: every worker of a run must run the master's.

A worker on another machine runs its own copy of the suite. A copy that
differs (another commit, an uncommitted edit, another Locust) plays the
master's scenario with other user code, and the run's figures mix the two.
:func:`identity` names the copy by a digest of the code itself, so it needs no
git metadata (a container image has none) and an uncommitted edit counts.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from importlib import metadata
from typing import Any

from memstress.common.config import ROOT
from memstress.common.exitcodes import ExitCode

log = logging.getLogger("memstress")

CODE_DIRS = ("common", "monitors", "reports", "runner", "scenarios", "service", "shapes")
"""Packages whose modules make up the digest, with the locustfile and pyproject.toml."""


@functools.cache
def code_digest() -> str:
    """12 hex digits of SHA-256 over the suite's Python files and pyproject.toml."""
    files = [p for p in (ROOT / "locustfile.py", ROOT / "pyproject.toml") if p.is_file()]
    for d in CODE_DIRS:
        files += (ROOT / d).rglob("*.py")  # nothing for a folder that is not there
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(path.relative_to(ROOT).as_posix().encode())
        h.update(b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()[:12]


def identity() -> dict[str, str]:
    """``{"memstress": version, "code": digest, "locust": version}`` of this process."""
    try:
        own = metadata.version("memstress")
    except metadata.PackageNotFoundError:
        own = "unknown"
    return {"memstress": own, "code": code_digest(), "locust": metadata.version("locust")}


def describe(ident: dict[str, str]) -> str:
    """``memstress 0.1.0 (code 1a2b3c4d5e6f, Locust 2.47.0)``."""
    return (
        f"memstress {ident.get('memstress', '?')} (code {ident.get('code', '?')}, "
        f"Locust {ident.get('locust', '?')})"
    )


HELLO = "memstress_hello"
"""Custom Locust message: a worker tells the master which memstress it runs."""

REFUSED = "memstress_refused"
"""Custom Locust message: the master tells a worker of another version why it is refused."""


class VersionCheck:
    """A listener object: every worker runs the master's memstress, or is refused.

    On a worker it sends :func:`identity` once, at start. On the master a worker
    whose identity differs is logged in one line, dropped from the runner's
    workers (nothing is dispatched to it) and told why; it logs the same line
    and quits with exit code 2.
    """

    def __init__(self, environment: Any) -> None:
        from locust.runners import MasterRunner, WorkerRunner

        self.environment = environment
        self.own = identity()
        self.refused: dict[str, str] = {}  # worker id -> why (on the master)
        runner = environment.runner
        if isinstance(runner, MasterRunner):
            runner.register_message(HELLO, self.on_hello)
        elif isinstance(runner, WorkerRunner):
            runner.register_message(REFUSED, self.on_refused)
            runner.send_message(HELLO, self.own)

    def on_hello(self, environment: Any, msg: Any, **_: Any) -> None:
        """On the master: compare a worker's identity with its own."""
        theirs = msg.data if isinstance(msg.data, dict) else {}
        if all(theirs.get(k) == v for k, v in self.own.items()):
            log.info("memstress: worker %s runs %s, as the master", msg.node_id, describe(theirs))
            return
        reason = (
            f"memstress: worker {msg.node_id} refused: it runs {describe(theirs)}, the master "
            f"{describe(self.own)} (valid: every worker on the master's checkout and Locust)"
        )
        log.error("%s", reason)
        self.refused[msg.node_id] = reason
        runner = environment.runner
        node = runner.clients.get(msg.node_id)
        if node is not None:
            del runner.clients[msg.node_id]
            dispatcher = getattr(runner, "_users_dispatcher", None)
            if dispatcher is not None:
                dispatcher.remove_worker(node)
        runner.send_message(REFUSED, {"reason": reason}, client_id=msg.node_id)

    def on_refused(self, environment: Any, msg: Any, **_: Any) -> None:
        """On a worker: say why, and quit with exit code 2."""
        reason = msg.data.get("reason") if isinstance(msg.data, dict) else None
        log.error("%s", reason or "memstress: refused by the master (another version)")
        environment.process_exit_code = int(ExitCode.USAGE)
        import gevent

        # Not from this greenlet: quit() kills the runner's group, the handler's included.
        gevent.spawn(environment.runner.quit)
