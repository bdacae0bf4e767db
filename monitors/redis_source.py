"""The ``redis`` memory source: Redis's own view from ``INFO memory`` (redis-py).

- ``used_memory`` is the accounted bytes: what Redis holds on purpose (keys,
  values, buffers). The leak detector judges RSS less this, so a cache filling
  to ``maxmemory`` is not a leak, while memory Redis cannot account for is.
- ``maxmemory`` is the budget when one is set, and ``used_memory`` /
  ``maxmemory`` Redis's own pressure (the redis adapter's, which the pressure
  scenarios drive). With an evicting policy (``allkeys-lru`` ...) Redis keeps
  itself under it: the budget is marked as enforced, so a full cache is no
  safety stop, and its pressure is kept only in a run that drives pressure
  (``MemoryMonitor._enforced_pressure``).
- ``used_memory_rss`` stands in for RSS when psutil cannot read the process.
- figures kept as columns: ``used_memory``, ``used_memory_rss``, ``maxmemory``,
  ``mem_fragmentation_ratio``, ``used_pct`` (of maxmemory) and ``evicted_keys``;
  and, where the server has ``MEMORY STATS``, where ``used_memory`` goes:
  ``dataset_bytes`` (the keys and values), ``overhead_bytes`` (Redis's own
  structures, buffers, replication) and ``startup_bytes`` (allocated at start).

Chosen automatically for a ``redis://``, ``rediss://`` or ``unix://`` ``--host``,
or with ``--monitor-sources redis``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import redis

from memstress.monitors.readings import SourceFailed, SourceMissing

if TYPE_CHECKING:
    from memstress.monitors.registry import SourceTarget

REDIS_SCHEMES = ("redis", "rediss", "unix")


class RedisSource:
    name = "redis"
    figures: tuple[str, ...] = (
        "used_memory",
        "used_memory_rss",
        "maxmemory",
        "mem_fragmentation_ratio",
        "used_pct",
        "evicted_keys",
        "dataset_bytes",
        "overhead_bytes",
        "startup_bytes",
    )

    def __init__(self, target: SourceTarget) -> None:
        scheme = target.host.split("://", 1)[0] if "://" in target.host else ""
        if scheme not in REDIS_SCHEMES:
            raise SourceMissing(
                f"--host {target.host!r} is not a Redis URL (valid: redis://HOST:PORT)"
            )
        self.client = redis.Redis.from_url(
            target.host, socket_timeout=target.timeout, socket_connect_timeout=target.timeout
        )

    def read(self) -> dict[str, Any]:
        try:
            mem = self.client.info("memory")
            stats = self.client.info("stats")
        except (redis.AuthenticationError, redis.ResponseError) as exc:
            raise SourceMissing(f"INFO refused: {exc}") from None
        except redis.RedisError as exc:
            raise SourceFailed(f"INFO memory: {type(exc).__name__}: {exc}") from None
        try:
            breakdown = self.client.memory_stats()
        except redis.RedisError:  # an old or restricted server: no breakdown, not a failure
            breakdown = {}
        used = mem.get("used_memory")
        maxmemory = mem.get("maxmemory") or None
        policy = str(mem.get("maxmemory_policy", ""))
        used_pct = 100.0 * used / maxmemory if maxmemory and used is not None else None
        return {
            "pressure": used_pct,
            "accounted_bytes": used,
            "rss_bytes": mem.get("used_memory_rss"),
            "budget_bytes": maxmemory,
            "budget_enforced": maxmemory is not None and policy != "noeviction",
            "used_memory": used,
            "used_memory_rss": mem.get("used_memory_rss"),
            "maxmemory": maxmemory,
            "mem_fragmentation_ratio": mem.get("mem_fragmentation_ratio"),
            "used_pct": used_pct,
            "evicted_keys": stats.get("evicted_keys"),
            "dataset_bytes": breakdown.get("dataset.bytes"),
            "overhead_bytes": breakdown.get("overhead.total"),
            "startup_bytes": breakdown.get("startup.allocated"),
        }
