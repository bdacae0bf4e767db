"""The plain side of the load benchmark: a bare FastHttpUser searching one namespace.

    locust -f bench/plain_locustfile.py --headless --host http://127.0.0.1:PORT -u 10 -t 20s

No memstress machinery: one task, ``self.client.post`` with the same body the
scenario side sends (six random words from the scenarios' word list, k=10),
no think time. ``BENCH_NAMESPACE`` names the (already seeded) namespace.
"""

from __future__ import annotations

import os
import random

from locust import between, constant, task
from locust.contrib.fasthttp import FastHttpUser

from memstress.scenarios.api import WORDS

NAMESPACE = os.environ.get("BENCH_NAMESPACE", "bench-ns-0")
WAIT = os.environ.get("BENCH_WAIT", "")  # "LO,HI" seconds of think time; none by default


class PlainSearchUser(FastHttpUser):
    wait_time = between(*map(float, WAIT.split(","))) if WAIT else constant(0)

    @task
    def search(self) -> None:
        query = " ".join(random.choices(WORDS, k=6))
        self.client.post(
            "/vectors/search",
            json={"namespace": NAMESPACE, "query": query, "k": 10},
            name="POST /vectors/search",
        )
