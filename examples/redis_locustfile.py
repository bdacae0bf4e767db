"""A redis-py locustfile: no memstress import at all (tests/test_own_load.py runs it).

Each user SETs 16 KiB values under random keys (far more keys than fit in the
64 MB maxmemory, so Redis fills and then evicts) and GETs some back, reporting
each call to Locust as a request of type REDIS. When a user stops (the
recovery stage, or the end) it flushes the database: what the recovery is
measured after.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from typing import Any

import redis
from locust import User, constant, task

VALUE = os.urandom(16 * 1024)
KEYS = 100_000


class RedisUser(User):
    wait_time = constant(0.001)

    def on_start(self) -> None:
        self.db = redis.Redis.from_url(self.host or "redis://127.0.0.1:6379")

    def call(self, name: str, fn: Callable[..., Any], *args: Any) -> None:
        start = time.perf_counter()
        error: Exception | None = None
        try:
            fn(*args)
        except redis.RedisError as exc:
            error = exc
        self.environment.events.request.fire(
            request_type="REDIS",
            name=name,
            response_time=1000 * (time.perf_counter() - start),
            response_length=0,
            exception=error,
            context={},
        )

    @task(3)
    def put(self) -> None:
        self.call("SET", self.db.set, f"k{random.randrange(KEYS)}", VALUE)

    @task(1)
    def get(self) -> None:
        self.call("GET", self.db.get, f"k{random.randrange(KEYS)}")

    def on_stop(self) -> None:
        self.call("FLUSHDB", self.db.flushdb)
        self.db.close()
