"""The scenario side of the load benchmark: vector_store's real ``VectorClient``, search only.

    locust -f bench/scenario_locustfile.py --headless --host http://127.0.0.1:PORT -u 10 -t 20s

The user class is the scenario's own (``scenarios/vector_store.py``), with its
request path untouched: :meth:`MemstressUser.active` and the stage lookups,
the body built from the run's namespace, :meth:`MemstressUser.call` with
``catch_response``, shed handling and the JSON parse of every answer. Two
things are set for the benchmark, and only these:

- the stage is fixed (no shape): ``upsert_share`` 0, one namespace, one doc id,
  so after its first upsert (one per user, the scenario's own warm-up) every
  request is ``POST /vectors/search``, the endpoint the plain side hits;
- ``wait_time = constant(0)`` on both sides: the scenario's think time is its
  load model, not the cost of generating load, which is what is compared.

``BENCH_RUN_ID`` is the run id, so the namespace is ``<run id>-ns-0``, the one
the benchmark seeded and the plain side searches.
"""

from __future__ import annotations

import os
import time
from typing import Any

from locust import constant, events

from memstress.common.config import load_config
from memstress.common.context import RunContext, Stage
from memstress.scenarios.registry import get_scenario

RUN_ID = os.environ.get("BENCH_RUN_ID", "bench")
DOCUMENT_BYTES = int(os.environ.get("BENCH_DOCUMENT_BYTES", "2048"))
STAGE = {"namespaces": 1, "docs": 1, "upsert_share": 0.0, "document_bytes": DOCUMENT_BYTES}


def _bench_user() -> type:
    """``VectorClient`` with no think time (made here so the module binds no other user class:
    Locust runs every user class it finds among a locustfile's names)."""
    base = next(
        c for c in get_scenario("vector_store").user_classes if c.__name__ == "VectorClient"
    )
    return type("BenchVectorClient", (base,), {"wait_time": constant(0), "__module__": __name__})


BenchVectorClient = _bench_user()


@events.init.add_listener
def on_init(environment: Any, **_: Any) -> None:
    config = load_config()
    ctx = RunContext(
        config=config,
        scenario="vector_store",
        stress=config.stress(config.stress_levels.default_level),
        duration_s=0.0,
        run_id=RUN_ID,
        host=environment.host or "",
    )
    ctx.set_stage(Stage(0, "bench", dict(STAGE), time.time(), 1e9, 0))
    environment.memstress = ctx
