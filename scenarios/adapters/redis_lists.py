"""The ``redis`` adapter: agent conversation memory in Redis lists (redis-py).

Each agent is one list, ``memstress:<agent id>`` (the agent id starts with the
run id): a message is an ``LPUSH`` of its JSON trimmed to :data:`HISTORY_MAX`
with ``LTRIM``, in one pipeline, and the key's TTL is set to outlive the run
by :data:`TTL_MARGIN_S` (so data a failed cleanup leaves behind ages out).
Context and history are ``LRANGE`` reads; forgetting an agent is ``DEL``.

Redis's ``maxmemory`` policy is the memory manager: stats come from
``INFO memory`` (pressure = ``used_memory`` / ``maxmemory``, budget =
``maxmemory``) and an optimization is ``MEMORY PURGE``. Redis has no
management cycle and no fault injection; vectors need the query engine, which
Debian's ``redis-server`` lacks, so they are no capability here. An ``OOM``
answer (``maxmemory`` reached under ``noeviction``) is Redis shedding a write:
counted apart, like a 503 with ``Retry-After``.

Pressure comes by Redis's own means (the ``pressure`` capability): ballast is
filler keys ``memstress:<run id>-ballast-<connection>-<n>`` of at most
:data:`BALLAST_CHUNK` bytes, set with a TTL of the ballast's ttl, so
``used_memory`` rises toward ``maxmemory``; the release deletes them
(``UNLINK``), and so does the sweep at test stop, with the rest of the run's
keys. Under an evicting policy (``allkeys-lru`` ...) Redis evicts keys as it
nears ``maxmemory``: its memory manager at work, counted in ``evicted_keys``.
A Redis without ``maxmemory`` has no pressure to drive:
:meth:`RedisAdapter.target_lacks` says so before any load.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis
from redis.exceptions import OutOfMemoryError

from memstress.common.config import ConfigError
from memstress.common.target import TargetError
from memstress.common.units import MB
from memstress.scenarios import api, target
from memstress.scenarios.target import Reply

HISTORY_MAX = 200
"""Messages kept per agent (``LTRIM``)."""

TTL_MARGIN_S = 600
"""Seconds an agent's list outlives the run's planned length."""

KEY_PREFIX = "memstress:"
REQUEST_TYPE = "REDIS"

BALLAST_CHUNK = MB // 4
"""Largest value of one ballast key (a step of ballast is several keys in one pipeline).
Small enough that under ``noeviction`` the keys before the first ``OOM`` still fill:
Redis counts the value being written against ``maxmemory`` (1 MB keys stopped a 32 MB
Redis at 94.7 % when the stage asked 99 %)."""


NAMES = {
    "remember": "LPUSH+LTRIM memstress:[agent]",
    "context": "LRANGE memstress:[agent] (context)",
    "history": "LRANGE memstress:[agent] (history)",
    "forget": "DEL memstress:[agent]",
    "optimize": "MEMORY PURGE",
    "stats": "INFO memory",
    "ballast": "SET memstress:[run]-ballast-[n] PX",
    "reset_faults": "UNLINK memstress:[run]-ballast-*",
}
"""Each operation's Locust request name."""


def key_of(agent: str) -> str:
    return f"{KEY_PREFIX}{agent}"


def ballast_pattern(run_id: str) -> str:
    """What every ballast key of the run matches (``SCAN MATCH``)."""
    return f"{KEY_PREFIX}{run_id}-ballast-*"


def chunks(n_bytes: int, size: int = BALLAST_CHUNK) -> list[int]:
    """``n_bytes`` as values of at most ``size`` bytes each."""
    whole, rest = divmod(max(0, n_bytes), size)
    return [size] * whole + ([rest] if rest else [])


class RedisTarget:
    capabilities = frozenset({target.CONVERSATION, target.OPTIMIZE, target.STATS, target.PRESSURE})

    def __init__(self, user: Any) -> None:
        self.user = user
        self.db = redis.Redis.from_url(user.host, socket_timeout=10, socket_connect_timeout=5)
        self.ttl_s = int(user.ctx.duration_s) + TTL_MARGIN_S
        self.run_id: str = user.ctx.run_id
        self.ballast_keys = 0  # filler keys this connection wrote (their numbers)
        self.ballast_prefix = f"{KEY_PREFIX}{self.run_id}-ballast-{secrets.token_hex(3)}-"

    def _run(self, name: str, fn: Callable[[], Any]) -> Reply:
        """One Redis call as one Locust request named ``name``; OOM is shed."""
        events = self.user.environment.events
        start = time.perf_counter()
        error: Exception | None = None
        data: Any = None
        try:
            data = fn()
        except redis.ResponseError as exc:
            if isinstance(exc, OutOfMemoryError):  # also inside a pipeline, whose error
                # message starts "Command # 1 (...) of pipeline caused error: OOM ..."
                elapsed = 1000 * (time.perf_counter() - start)
                for kind in (REQUEST_TYPE, api.SHED_TYPE):
                    events.request.fire(
                        request_type=kind,
                        name=name,
                        response_time=elapsed,
                        response_length=0,
                        exception=None,
                        context={},
                    )
                return Reply(False, True, 0)
            error = exc
        except redis.RedisError as exc:
            error = exc
        events.request.fire(
            request_type=REQUEST_TYPE,
            name=name,
            response_time=1000 * (time.perf_counter() - start),
            response_length=0,
            exception=None if error is None else RuntimeError(f"{name}: {error}"),
            context={},
        )
        return Reply(error is None, False, 0 if error else 200, data)

    def remember(self, agent: str, role: str, content: str) -> Reply:
        key = key_of(agent)
        message = json.dumps({"role": role, "content": content, "time": time.time()})

        def push() -> Any:
            pipe = self.db.pipeline(transaction=False)
            pipe.lpush(key, message)
            pipe.ltrim(key, 0, HISTORY_MAX - 1)
            pipe.expire(key, self.ttl_s)
            return pipe.execute()

        return self._run(NAMES["remember"], push)

    def context(self, agent: str, query: str, k: int) -> Reply:
        return self._run(NAMES["context"], lambda: self.db.lrange(key_of(agent), 0, k - 1))

    def history(self, agent: str, offset: int, limit: int) -> Reply:
        key = key_of(agent)
        return self._run(
            NAMES["history"],
            lambda: self.db.lrange(key, offset, offset + limit - 1),
        )

    def forget(self, agent: str) -> Reply:
        return self._run(NAMES["forget"], lambda: self.db.delete(key_of(agent)))

    def optimize(self, priority: str, reason: str) -> Reply:
        return self._run(NAMES["optimize"], lambda: self.db.execute_command("MEMORY PURGE"))

    def stats(self) -> Reply:
        reply = self._run(NAMES["stats"], lambda: self.db.info("memory"))
        if not reply.ok:
            return reply
        return Reply(True, False, 200, stats_of(reply.data))

    def _lacks(self, what: str) -> Reply:  # never called: the scenarios check capabilities
        raise NotImplementedError(f"the redis adapter has no {what}")

    def add_document(self, namespace: str, doc_id: str, text: str) -> Reply:
        return self._lacks(target.VECTORS)

    def search(self, namespace: str, query: str, k: int) -> Reply:
        return self._lacks(target.VECTORS)

    def drop_namespace(self, namespace: str) -> Reply:
        return self._lacks(target.VECTORS)

    def cycle(self) -> Reply:
        return self._lacks(target.CYCLE)

    def leak(self, n_bytes: int) -> Reply:
        return self._lacks(target.FAULTS)

    def ballast(self, n_bytes: int, ttl_s: float) -> Reply:
        """``n_bytes`` of filler keys living ``ttl_s`` seconds (``SET ... PX``, one pipeline)."""
        ttl_ms = max(1, round(1000 * ttl_s))
        sizes = chunks(n_bytes)

        def fill() -> Any:
            pipe = self.db.pipeline(transaction=False)
            for size in sizes:
                self.ballast_keys += 1
                pipe.set(f"{self.ballast_prefix}{self.ballast_keys}", b"b" * size, px=ttl_ms)
            return pipe.execute()

        return self._run(NAMES["ballast"], fill)

    def reset_faults(self) -> Reply:
        """``UNLINK`` every ballast key of the run (whichever user wrote it)."""
        return self._run(
            NAMES["reset_faults"], lambda: unlink_matching(self.db, ballast_pattern(self.run_id))
        )


def unlink_matching(db: redis.Redis, pattern: str, batch: int = 500) -> int:
    """``UNLINK`` every key matching ``pattern``, ``batch`` at a time; how many went."""
    gone, keys = 0, []
    for key in db.scan_iter(match=pattern, count=batch):
        keys.append(key)
        if len(keys) >= batch:
            gone += int(db.unlink(*keys))
            keys.clear()
    if keys:
        gone += int(db.unlink(*keys))
    return gone


def stats_of(info: Mapping[str, Any]) -> dict[str, Any]:
    """``INFO memory`` as the scenarios read stats: pressure against ``maxmemory``."""
    used = info.get("used_memory")
    budget = info.get("maxmemory") or None
    pressure = 100.0 * float(used) / float(budget) if budget and used is not None else None
    return {
        "pressure": pressure,
        "budget_bytes": budget,
        "used_bytes": used,
        "rss_bytes": info.get("used_memory_rss"),
        "policy": info.get("maxmemory_policy"),
    }


class RedisAdapter:
    name = "redis"
    capabilities = RedisTarget.capabilities
    schemes = ("redis", "rediss", "unix")
    health_path = None
    request_names = NAMES

    def __init__(self, config_path: str | None = None) -> None:
        if config_path:
            raise ConfigError("--adapter-config goes with --adapter http-map (redis has none)")

    def connect(self, user: Any) -> RedisTarget:
        return RedisTarget(user)

    def wait_ready(self, host: str, deadline_s: float) -> None:
        db = redis.Redis.from_url(host, socket_timeout=2, socket_connect_timeout=2)
        end, last = time.monotonic() + deadline_s, "no answer"
        try:
            while time.monotonic() < end:
                try:
                    if db.ping():
                        return
                except redis.RedisError as exc:
                    last = f"{type(exc).__name__}: {exc}"
                time.sleep(0.1)
        finally:
            db.close()
        raise TargetError(f"{host} did not answer PING in {deadline_s:g} s ({last})")

    def target_lacks(self, host: str) -> dict[str, str]:
        """What this Redis cannot give although the adapter can, and why: pressure
        without ``maxmemory``. Nothing when it does not answer (``wait_ready`` says so)."""
        try:
            db = redis.Redis.from_url(host, socket_timeout=2, socket_connect_timeout=2)
        except ValueError:  # not a Redis URL: the host check names the valid forms
            return {}
        try:
            maxmemory = db.info("memory").get("maxmemory")
        except redis.RedisError:
            return {}
        finally:
            db.close()
        if maxmemory:
            return {}
        return {
            target.PRESSURE: (
                "its maxmemory is 0, so its pressure, used_memory / maxmemory, is undefined; "
                "give it one with redis-server --maxmemory 256mb or CONFIG SET maxmemory 256mb"
            )
        }

    def sweep(self, host: str, run_id: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Delete every key of the run (``memstress:<run id>-*``: agents and ballast),
        however many there are."""
        done: dict[str, Any] = {"keys": 0, "complete": False}
        db = redis.Redis.from_url(host, socket_timeout=2, socket_connect_timeout=2)
        try:
            done["keys"] = unlink_matching(db, f"{KEY_PREFIX}{run_id}-*")
            done["complete"] = True
        except redis.RedisError as exc:
            done["error"] = f"{type(exc).__name__}: {exc}"[:200]
        finally:
            db.close()
        return done
