"""The reference service: management-cycle latency, search latency at 10k and 100k chunks,
resident bytes per stored vector.

One service (budget 4 GiB, so the strategy stays ``normal`` and nothing is
spilled), pinned to one CPU; this process, the client, to the other. The
vector store is filled through the API, one document of about 500 chunks per
``POST /vectors/documents`` (a bounded number of requests, each under the body
limit), every chunk new text, so every chunk is embedded and stored. At each
mark (10k, 50k, 100k stored chunks in full mode) the benchmark runs a cycle,
reads RSS from the process (lowest of five readings 0.2 s apart), then times
sequential searches (six random words, k=10) from the client.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import requests

from bench.procs import BenchError, Service, cpus, service
from bench.results import BenchResult, Goal, Table

NAMESPACE = "bench-vectors"
DOC_CHARS = 200_000  # about 500 chunks of ~500 chars (100 overlap)
FLOOR_BYTES = 1536  # 384 float32
GOAL_BYTES = 2000.0
FILL_DEADLINE_S = 900.0


@contextlib.contextmanager
def _pinned(cpu: int | None) -> Iterator[None]:
    """Run this process (the client) on one CPU for a while."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _pcts(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms, dtype=float)
    return {
        "n": float(len(a)),
        "p50_ms": float(np.percentile(a, 50)),
        "p95_ms": float(np.percentile(a, 95)),
        "p99_ms": float(np.percentile(a, 99)),
        "mean_ms": float(a.mean()),
        "max_ms": float(a.max()),
    }


def _cycles(svc: Service, n: int) -> dict[str, Any]:
    client: list[float] = []
    server: list[float] = []
    optimized = 0
    for _ in range(n):
        t0 = time.perf_counter()
        r = svc.session.post(svc.url + "/memory/cycle", timeout=30)
        client.append(1000 * (time.perf_counter() - t0))
        if r.status_code != 200:
            raise BenchError(f"POST /memory/cycle: HTTP {r.status_code}")
        body = r.json()
        server.append(float(body["duration_ms"]))
        optimized += bool(body.get("optimized"))
    return {"client": _pcts(client), "server": _pcts(server), "optimized": optimized}


def _searches(svc: Service, n: int, rng: random.Random) -> dict[str, Any]:
    from memstress.scenarios.api import WORDS

    ms: list[float] = []
    sources: dict[str, int] = {}
    for _ in range(n):
        body = {"namespace": NAMESPACE, "query": " ".join(rng.choices(WORDS, k=6)), "k": 10}
        t0 = time.perf_counter()
        r = svc.session.post(svc.url + "/vectors/search", json=body, timeout=60)
        ms.append(1000 * (time.perf_counter() - t0))
        if r.status_code != 200:
            raise BenchError(f"POST /vectors/search: HTTP {r.status_code}: {r.text[:200]}")
        src = r.json().get("source", "?")
        sources[src] = sources.get(src, 0) + 1
    return {**_pcts(ms), "sources": sources}


def _settled_rss(svc: Service) -> int:
    svc.post("/memory/cycle")
    readings = []
    for _ in range(5):
        time.sleep(0.2)
        readings.append(svc.rss())
    return min(readings)


def _fill_to(svc: Service, target: int, stored: int, rng: random.Random, deadline: float) -> int:
    from memstress.scenarios.api import text_of

    doc = stored // 400  # document numbers keep counting up across marks
    while stored < target:
        if time.monotonic() > deadline:
            raise BenchError(
                f"filling stopped at {stored} chunks: past the {FILL_DEADLINE_S:g} s cap"
            )
        doc += 1
        want = min(DOC_CHARS, max(600, (target - stored) * 400))
        body = {"namespace": NAMESPACE, "doc_id": f"doc-{doc}", "text": text_of(rng, want)}
        try:
            reply = svc.post("/vectors/documents", body, timeout=120)
        except requests.RequestException as exc:
            raise BenchError(f"POST /vectors/documents: {exc}") from None
        if reply.get("replaced"):
            raise BenchError(f"doc-{doc} replaced an earlier document: ids overlap")
        stored += int(reply["chunks"])
    return stored


def run(workdir: Path, small: bool) -> BenchResult:
    marks = (500, 1000, 2000) if small else (10_000, 50_000, 100_000)
    search_n = 30 if small else 300
    cycle_n = 30 if small else 300
    cores = cpus()
    svc_cpu, client_cpu = (cores[0], cores[1]) if len(cores) >= 2 else (None, None)
    result = BenchResult(
        name="service",
        title="The reference service: cycle and search latency, RSS per stored vector",
        mode="small" if small else "full",
        what=(
            f"`POST /memory/cycle` latency ({cycle_n} sequential cycles, timed by the client and "
            "by the service's own `duration_ms`) on the empty service and with "
            f"{marks[-1]:,} chunks stored; `POST /vectors/search` latency ({search_n} sequential "
            f"searches, six random words, k=10) with {marks[0]:,} and {marks[-1]:,} chunks "
            "stored in one namespace; resident memory per stored vector from the service "
            "process's RSS (after a cycle, lowest of five readings) as the store fills through "
            "the API (one ~500-chunk document per request). Service and client each on one CPU."
        ),
    )
    rng = random.Random(42)
    marks_out: list[dict[str, Any]] = []
    with _pinned(client_cpu), service(workdir, budget_mb=4096, cpu=svc_cpu) as svc:
        for _ in range(20):  # warm up the request path
            svc.post("/memory/cycle")
        rss0 = _settled_rss(svc)
        stats0 = svc.get("/memory/stats")
        cyc_empty = _cycles(svc, cycle_n)
        stored = 0
        deadline = time.monotonic() + FILL_DEADLINE_S
        fill_s = 0.0
        for mark in marks:
            t0 = time.monotonic()
            stored = _fill_to(svc, mark, stored, rng, deadline)
            fill_s += time.monotonic() - t0
            rss = _settled_rss(svc)
            st = svc.get("/memory/stats")
            tiers = st["tiers"]
            entry: dict[str, Any] = {
                "stored": stored,
                "rss_bytes": rss,
                "vectors_items": tiers["vectors"]["items"],
                "vectors_bytes": tiers["vectors"]["bytes"],
                "embedding_cache_items": tiers["embedding_cache"]["items"],
                "embedding_cache_bytes": tiers["embedding_cache"]["bytes"],
                "embedding_cache_limit_bytes": tiers["embedding_cache"]["limit_bytes"],
                "strategy": st["strategy"],
                "fill_s_so_far": fill_s,
            }
            if mark in (marks[0], marks[-1]):
                svc.post("/vectors/search", {"namespace": NAMESPACE, "query": "warm", "k": 10})
                entry["search"] = _searches(svc, search_n, rng)
            marks_out.append(entry)
        cyc_full = _cycles(svc, cycle_n)
    _aggregate(result, rss0, stats0, cyc_empty, cyc_full, marks_out, small)
    result.setup = {
        "marks": list(marks),
        "cycles": cycle_n,
        "searches": search_n,
        "budget_mb": 4096,
        "doc_chars": DOC_CHARS,
        "service_cpu": svc_cpu,
        "client_cpu": client_cpu,
    }
    return result


def _per_vector(a: dict[str, Any], b: dict[str, Any], net_of_cache: bool = False) -> float:
    d_rss = b["rss_bytes"] - a["rss_bytes"]
    if net_of_cache:
        d_rss -= b["embedding_cache_bytes"] - a["embedding_cache_bytes"]
    return d_rss / max(1, b["stored"] - a["stored"])


def _aggregate(
    result: BenchResult,
    rss0: int,
    stats0: dict[str, Any],
    cyc_empty: dict[str, Any],
    cyc_full: dict[str, Any],
    marks: list[dict[str, Any]],
    small: bool,
) -> None:
    first, mid, last = marks[0], marks[1], marks[-1]
    empty = {
        "stored": 0,
        "rss_bytes": rss0,
        "embedding_cache_bytes": stats0["tiers"]["embedding_cache"]["bytes"],
    }
    marginal = _per_vector(mid, last)
    overall = _per_vector(empty, last)
    net = _per_vector(empty, last, net_of_cache=True)
    cache_full = mid["embedding_cache_bytes"] >= 0.95 * mid["embedding_cache_limit_bytes"]
    accounted = last["vectors_bytes"] / max(1, last["vectors_items"])
    short_kib = (FLOOR_BYTES - marginal) * (last["stored"] - mid["stored"]) / 2**10
    s_lo, s_hi = first["search"], last["search"]
    result.raw = {
        "rss_empty_bytes": rss0,
        "marks": marks,
        "cycles_empty": cyc_empty,
        "cycles_full": cyc_full,
    }
    result.ratios = {
        "rss_per_vector_marginal_over_floor": marginal / FLOOR_BYTES,
        "search_p50_100k_over_10k": s_hi["p50_ms"] / s_lo["p50_ms"] if s_lo["p50_ms"] else None,
        "stored_ratio": last["stored"] / max(1, first["stored"]),
    }
    lo_k, hi_k = f"{first['stored']:,}", f"{last['stored']:,}"
    result.goals = [
        Goal(
            f"RSS per stored vector, {mid['stored']:,} -> {last['stored']:,} chunks "
            "(embedding cache at its limit)",
            marginal,
            "<",
            GOAL_BYTES,
            "B",
            id="service_bytes_per_vector",
        )
    ]
    result.tables = [
        Table(
            "Management cycle, POST /memory/cycle",
            [
                "state",
                "client p50 ms",
                "client p95 ms",
                "client p99 ms",
                "service p50 ms",
                "service p95 ms",
                "optimized",
            ],
            [
                [
                    "empty",
                    cyc_empty["client"]["p50_ms"],
                    cyc_empty["client"]["p95_ms"],
                    cyc_empty["client"]["p99_ms"],
                    cyc_empty["server"]["p50_ms"],
                    cyc_empty["server"]["p95_ms"],
                    cyc_empty["optimized"],
                ],
                [
                    f"{last['stored']:,} chunks",
                    cyc_full["client"]["p50_ms"],
                    cyc_full["client"]["p95_ms"],
                    cyc_full["client"]["p99_ms"],
                    cyc_full["server"]["p50_ms"],
                    cyc_full["server"]["p95_ms"],
                    cyc_full["optimized"],
                ],
            ],
        ),
        Table(
            "Vector search, POST /vectors/search (client-timed, sequential)",
            ["stored chunks", "p50 ms", "p95 ms", "p99 ms", "mean ms", "answered from"],
            [
                [
                    m["stored"],
                    m["search"]["p50_ms"],
                    m["search"]["p95_ms"],
                    m["search"]["p99_ms"],
                    m["search"]["mean_ms"],
                    ", ".join(f"{k} {v}" for k, v in m["search"]["sources"].items()),
                ]
                for m in marks
                if "search" in m
            ],
        ),
        Table(
            "Resident memory as the store fills",
            [
                "stored chunks",
                "RSS MB",
                "vector tier MB (accounted)",
                "embedding cache MB",
                "cache entries",
                "fill s (cumulative)",
            ],
            [[0, rss0 / 2**20, 0.0, empty["embedding_cache_bytes"] / 2**20, None, 0.0]]
            + [
                [
                    m["stored"],
                    m["rss_bytes"] / 2**20,
                    m["vectors_bytes"] / 2**20,
                    m["embedding_cache_bytes"] / 2**20,
                    m["embedding_cache_items"],
                    m["fill_s_so_far"],
                ]
                for m in marks
            ],
        ),
        Table(
            "RSS bytes per stored vector (floor: 1,536 B of float32)",
            ["measure", "bytes per vector"],
            [
                [f"marginal, {mid['stored']:,} -> {last['stored']:,} (goal)", marginal],
                [f"overall, 0 -> {last['stored']:,}, RSS growth / chunks", overall],
                ["overall net of the embedding cache's own growth", net],
                ["the vector tier's own accounting (stats)", accounted],
            ],
        ),
    ]
    reading = [
        f"Searching {hi_k} chunks took {s_hi['p50_ms']:.1f} ms at the median "
        f"({s_hi['p95_ms']:.1f} ms p95) against {s_lo['p50_ms']:.1f} ms ({s_lo['p95_ms']:.1f} "
        f"ms p95) for {lo_k}: {s_hi['p50_ms'] / s_lo['p50_ms']:.1f} x the time for "
        f"{last['stored'] / first['stored']:.0f} x the chunks (a brute-force scan of one "
        "float32 matrix plus a fixed per-request cost).",
        f"A management cycle answered in {cyc_empty['client']['p50_ms']:.2f} ms p50 / "
        f"{cyc_empty['client']['p95_ms']:.2f} ms p95 on the empty service and "
        f"{cyc_full['client']['p50_ms']:.2f} / {cyc_full['client']['p95_ms']:.2f} ms with "
        f"{hi_k} chunks stored; the service's own timing is {cyc_full['server']['p50_ms']:.2f} ms "
        "p50, so the HTTP round trip through uvicorn and FastAPI is nearly all of it. No cycle "
        "needed an optimization at this pressure"
        + ("." if not cyc_full["optimized"] else f" but {cyc_full['optimized']} did."),
        f"Each stored vector costs {marginal:,.0f} B of RSS at the margin "
        f"({marginal / FLOOR_BYTES:.2f} x the 1,536 B floor"
        + (
            f"; under it by {short_kib:,.0f} KiB over the span, which other memory "
            "moving between the two RSS readings (allocator trims, the full embedding "
            "cache turning over) accounts for: read it as the floor"
            if marginal < FLOOR_BYTES
            else ""
        )
        + "); the vector tier accounts "
        f"{accounted:,.0f} B per vector for itself (the float32 row, 13 B of row bookkeeping, "
        "the per-document entry)"
        + (
            ", so next to nothing is spent outside it."
            if marginal - accounted < 0.05 * FLOOR_BYTES
            else f", so {marginal - accounted:,.0f} B per vector go elsewhere."
        )
        + (
            ""
            if cache_full
            else " The embedding cache was not yet at its limit at the middle mark, so this "
            "figure still includes some cache growth."
        ),
        f"Over the whole fill RSS grew {overall:,.0f} B per vector, {net:,.0f} B net of the "
        "embedding cache, which caches each chunk's embedding until its soft limit "
        f"({last['embedding_cache_limit_bytes'] / 2**20:.0f} MB, "
        f"{last['embedding_cache_items']:,} entries here) and then stops growing.",
    ]
    if small:
        reading.append("Small mode: too few chunks for the per-vector figures to mean much.")
    result.reading = reading
