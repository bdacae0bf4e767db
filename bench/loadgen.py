"""Load generation: a scenario's real user class against a plain FastHttpUser, same endpoint.

Side A is ``bench/scenario_locustfile.py`` (vector_store's ``VectorClient``,
stage fixed to searches only), side B is ``bench/plain_locustfile.py`` (one
``self.client.post``). Same service, same namespace, same body shape, same
users, same run time, no think time on either side, one Locust process each,
pinned to the CPU the service is not on; run A B A B A B. Requests/s are
Locust's per-second counts over the steady seconds (ramp-up and the last
second cut). The generator's CPU per request (from its process CPU time over
the same seconds) says what the scenario's request path costs even when the
service, not the generator, sets the rate. wrk on the same endpoint, from the
same CPU, is the ceiling.
"""

from __future__ import annotations

import random
import statistics
import time
from pathlib import Path
from typing import Any

from bench.procs import (
    BENCH_DIR,
    BenchError,
    CpuWatch,
    LocustRun,
    Service,
    cpus,
    run_locust,
    run_wrk,
    service,
    start_locust,
    steady_rate,
    wrk_path,
)
from bench.profiling import py_spy_path, py_spy_record, summarize_collapsed
from bench.results import BenchResult, Goal, Table

ENDPOINT = "POST /vectors/search"
RUN_ID = "benchload"
NAMESPACE = f"{RUN_ID}-ns-0"
DOCUMENT_BYTES = 2048
GOAL_RATIO = 0.95

WRK_SCRIPT = """\
-- POST /vectors/search with six random words per request, as both Locust sides send.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local words = {%(words)s}
request = function()
  local q = {}
  for i = 1, 6 do q[i] = words[math.random(#words)] end
  local body = '{"namespace":"%(ns)s","query":"' .. table.concat(q, " ") .. '","k":10}'
  return wrk.format(nil, "/vectors/search", nil, body)
end
"""


def _seed(svc: Service) -> int:
    from scenarios.api import text_of

    text = text_of(random.Random(7), DOCUMENT_BYTES)
    reply = svc.post(
        "/vectors/documents", {"namespace": NAMESPACE, "doc_id": "doc-0", "text": text}
    )
    return int(reply["chunks"])


def _side(
    side: str,
    svc: Service,
    workdir: Path,
    tag: str,
    *,
    users: int,
    seconds: float,
    cpu: int | None,
    watch: CpuWatch,
) -> dict[str, Any]:
    locustfile = BENCH_DIR / f"{side}_locustfile.py"
    args = ["--headless", "-u", str(users), "-r", str(users), "-t", f"{seconds:g}s"]
    args += ["--only-summary", "--loglevel", "WARNING", "--stop-timeout", "2"]
    env = {
        "BENCH_RUN_ID": RUN_ID,
        "BENCH_NAMESPACE": NAMESPACE,
        "BENCH_DOCUMENT_BYTES": str(DOCUMENT_BYTES),
    }
    run: LocustRun = run_locust(
        locustfile,
        workdir / tag,
        args,
        host=svc.url,
        timeout=seconds + 60,
        env=env,
        cpu=cpu,
        watch=watch,
        watch_as=tag,
    )
    entry = run.entry(ENDPOINT)
    if entry is None:
        raise BenchError(f"{side}: no {ENDPOINT} requests (exit {run.exit_code}): {run.log_tail()}")
    rps, n, t0, t1 = steady_rate(entry)
    gen_cpu = watch.between(tag, t0, t1)
    svc_cpu = watch.between("service", t0, t1)
    span = t1 - t0
    mean_rt = float(entry["total_response_time"]) / max(1, int(entry["num_requests"]))
    failures = sum(int(e["num_failures"]) for e in run.entries)
    return {
        "side": side,
        "run": tag,
        "rps": rps,
        "requests": n,
        "window_s": span,
        "failures": failures,
        "all_requests": sum(int(e["num_requests"]) for e in run.entries),
        "generator_cpu_s": gen_cpu,
        "generator_cpu_util": None if gen_cpu is None else gen_cpu / span,
        "generator_cpu_ms_per_request": None if gen_cpu is None or not n else 1000 * gen_cpu / n,
        "service_cpu_util": None if svc_cpu is None else svc_cpu / span,
        "service_cpu_ms_per_request": None if svc_cpu is None or not n else 1000 * svc_cpu / n,
        "mean_response_ms": mean_rt,
        "exit_code": run.exit_code,
    }


def _profile_side(
    side: str, svc: Service, workdir: Path, *, users: int, seconds: float, cpu: int | None
) -> dict[str, Any] | None:
    """An extra, uncounted run of one side under py-spy (non-blocking sampling)."""
    if py_spy_path() is None:
        return None
    locustfile = BENCH_DIR / f"{side}_locustfile.py"
    args = ["--headless", "-u", str(users), "-r", str(users), "-t", f"{seconds + 3:g}s"]
    args += ["--only-summary", "--loglevel", "WARNING"]
    env = {"BENCH_RUN_ID": RUN_ID, "BENCH_NAMESPACE": NAMESPACE}
    out = workdir / f"profile-{side}"
    proc = start_locust(locustfile, out, args, host=svc.url, env=env, cpu=cpu)
    try:
        time.sleep(2.5)  # past Locust's imports and the ramp-up
        raw = py_spy_record(proc.pid, seconds, out / "py-spy.txt")
        proc.wait(seconds + 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    return None if raw is None else summarize_collapsed(raw, top=14)


def run(workdir: Path, small: bool) -> BenchResult:
    users = 10
    seconds = 4.0 if small else 10.0
    pairs = 1 if small else 6
    wrk_s = 2.0 if small else 5.0
    cores = cpus()
    svc_cpu, gen_cpu = (cores[0], cores[1]) if len(cores) >= 2 else (None, None)
    result = BenchResult(
        name="load",
        title="Load generation: scenario user vs plain FastHttpUser",
        mode="small" if small else "full",
        what=(
            f"Requests/s of `{ENDPOINT}` from vector_store's real `VectorClient` (side A, "
            "`bench/scenario_locustfile.py`: the scenario's request path, i.e. `active()` and "
            "stage lookups, the body built from the run's namespace, `MemstressUser.call` with "
            "`catch_response`, shed handling and a JSON parse of every answer; stage fixed to "
            "`upsert_share` 0 so after one warm-up upsert per user it only searches) against a "
            "bare FastHttpUser posting the same body shape (side B, `bench/plain_locustfile.py`)."
            f" Same service and namespace, {users} users, {seconds:g} s per run, no think time "
            "on either side (the scenario's `between(0.2, 0.8)` is its load model, not the cost "
            "of generating load), one Locust process each, alternated A B A B A B. Rates are "
            "Locust's per-second counts over the steady seconds. Generator CPU per request is "
            "its process CPU over the same seconds. wrk (1 thread, same connections, same "
            "endpoint, random six-word queries from Lua) is the ceiling."
        ),
    )
    result.setup = {
        "endpoint": ENDPOINT,
        "users": users,
        "seconds_per_run": seconds,
        "pairs": pairs,
        "order": "A B" * pairs,
        "service_cpu": svc_cpu,
        "generator_cpu": gen_cpu,
        "document_bytes": DOCUMENT_BYTES,
        "wrk_seconds": wrk_s,
    }
    runs: list[dict[str, Any]] = []
    wrk_runs: list[dict[str, Any]] = []
    profiles: dict[str, Any] = {}
    with service(workdir, budget_mb=4096, cpu=svc_cpu) as svc:
        result.setup["namespace_chunks"] = _seed(svc)
        with CpuWatch({"service": svc.pid}) as watch:
            # One uncounted run first: the service's first requests (imports, caches) warm up.
            _side("plain", svc, workdir, "warmup", users=users, seconds=2, cpu=gen_cpu, watch=watch)
            for i in range(pairs):
                for side in ("scenario", "plain"):
                    runs.append(
                        _side(
                            side,
                            svc,
                            workdir,
                            f"{side}-{i}",
                            users=users,
                            seconds=seconds,
                            cpu=gen_cpu,
                            watch=watch,
                        )
                    )
                if wrk_path() is not None:
                    script = workdir / "search.lua"
                    if not script.exists():
                        from scenarios.api import WORDS

                        words = ", ".join(f'"{w}"' for w in WORDS)
                        script.write_text(WRK_SCRIPT % {"words": words, "ns": NAMESPACE})
                    t0 = time.time()
                    w: dict[str, Any] = run_wrk(
                        svc.url, connections=users, seconds=wrk_s, script=script, cpu=gen_cpu
                    )
                    t1 = time.time()
                    c = watch.between("service", t0 + 0.5, t1 - 0.5)
                    w["service_cpu_util"] = None if c is None else c / max(0.1, t1 - t0 - 1)
                    wrk_runs.append(w)
        if not small:
            for side in ("scenario", "plain"):
                p = _profile_side(side, svc, workdir, users=users, seconds=8, cpu=gen_cpu)
                if p is not None:
                    profiles[side] = p
    _aggregate(result, runs, wrk_runs, profiles)
    return result


def _med(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def _aggregate(
    result: BenchResult,
    runs: list[dict[str, Any]],
    wrk_runs: list[dict[str, Any]],
    profiles: dict[str, Any],
) -> None:
    a = [r for r in runs if r["side"] == "scenario"]
    b = [r for r in runs if r["side"] == "plain"]
    pair_ratios = [
        ra["rps"] / rb["rps"] if rb["rps"] else None for ra, rb in zip(a, b, strict=True)
    ]
    rps_a, rps_b = _med([r["rps"] for r in a]), _med([r["rps"] for r in b])
    # Pairs ran back to back, so each pair shares the machine's conditions; the headline
    # is the median of the pair ratios (a neighbour's burst spoils one pair, not the lot).
    ratio = _med(list(pair_ratios))
    cpu_a = _med([r["generator_cpu_ms_per_request"] for r in a])
    cpu_b = _med([r["generator_cpu_ms_per_request"] for r in b])
    util_a = _med([r["generator_cpu_util"] for r in a])
    util_b = _med([r["generator_cpu_util"] for r in b])
    svc_util = _med([r["service_cpu_util"] for r in runs])
    wrk_rps = _med([w["rps"] for w in wrk_runs]) if wrk_runs else None
    result.raw = {"runs": runs, "wrk": wrk_runs}
    result.ratios = {
        "rps_scenario_over_plain": ratio,
        "rps_medians_scenario_over_plain": rps_a / rps_b if rps_a is not None and rps_b else None,
        "rps_scenario_over_plain_per_pair": pair_ratios,  # type: ignore[dict-item]
        "generator_cpu_per_request_scenario_over_plain": (
            cpu_a / cpu_b if cpu_a is not None and cpu_b else None
        ),
        "rps_plain_over_wrk": rps_b / wrk_rps if rps_b is not None and wrk_rps else None,
        "rps_scenario_over_wrk": rps_a / wrk_rps if rps_a is not None and wrk_rps else None,
    }
    result.goals = [
        Goal(
            "requests/s, scenario user / plain FastHttpUser (median of pair ratios)",
            ratio,
            ">=",
            GOAL_RATIO,
        )
    ]
    result.tables = [
        Table(
            "Runs in the order they ran (A = scenario, B = plain)",
            [
                "run",
                "requests/s",
                "requests",
                "failures",
                "generator CPU %",
                "generator CPU ms/request",
                "mean response ms",
                "service CPU %",
                "service CPU ms/request",
            ],
            [
                [
                    r["run"],
                    r["rps"],
                    r["requests"],
                    r["failures"],
                    None if r["generator_cpu_util"] is None else 100 * r["generator_cpu_util"],
                    r["generator_cpu_ms_per_request"],
                    r["mean_response_ms"],
                    None if r["service_cpu_util"] is None else 100 * r["service_cpu_util"],
                    r["service_cpu_ms_per_request"],
                ]
                for r in runs
            ],
        ),
        Table(
            "Medians and ratios",
            ["figure", "scenario (A)", "plain (B)", "A / B", "wrk"],
            [
                [
                    "requests/s",
                    rps_a,
                    rps_b,
                    result.ratios["rps_medians_scenario_over_plain"],
                    wrk_rps,
                ],
                [
                    "generator CPU ms per request",
                    cpu_a,
                    cpu_b,
                    result.ratios["generator_cpu_per_request_scenario_over_plain"],
                    None,
                ],
                [
                    "generator CPU % of one core",
                    None if util_a is None else 100 * util_a,
                    None if util_b is None else 100 * util_b,
                    None,
                    None,
                ],
                [
                    "requests/s, pair ratios A/B (median is the goal's figure)",
                    None,
                    None,
                    ", ".join(f"{x:.3f}" for x in pair_ratios if x),
                    None,
                ],
            ],
        ),
    ]
    if wrk_runs:
        result.tables.append(
            Table(
                "wrk ceiling runs (1 thread, same connections, same CPU as Locust)",
                ["run", "requests/s", "p50 ms", "p90 ms", "p99 ms", "non-2xx", "service CPU %"],
                [
                    [
                        i,
                        w["rps"],
                        w.get("p50_ms"),
                        w.get("p90_ms"),
                        w.get("p99_ms"),
                        w.get("non_2xx", 0.0),
                        None if w.get("service_cpu_util") is None else 100 * w["service_cpu_util"],
                    ]
                    for i, w in enumerate(wrk_runs)
                ],
            )
        )
    else:
        result.notes.append("wrk is not installed: no ceiling run (apt-get install -y wrk).")
    reading = []
    spread = [x for x in pair_ratios if x is not None]
    if ratio is not None:
        reading.append(
            f"The scenario user reached {ratio:.3f} of the plain user's requests/s, the median "
            f"of {len(spread)} back-to-back pairs ranging {min(spread):.3f} to "
            f"{max(spread):.3f} ({'meets' if ratio >= GOAL_RATIO else 'misses'} the "
            f"{GOAL_RATIO} goal); the ratio of the two sides' median rates is "
            f"{result.ratios['rps_medians_scenario_over_plain'] or 0:.3f}."
        )
    if svc_util is not None and util_a is not None and util_b is not None:
        if max(util_a, util_b) < 0.8:
            reading.append(
                f"Neither Locust process came near its core ({100 * util_a:.0f}% for A, "
                f"{100 * util_b:.0f}% for B) while the service used {100 * svc_util:.0f}% of "
                "its own (less than 100% when other work shared that core), so the service set "
                "the rate, and how fast it answered moved with whatever else ran on the machine: "
                "that is the spread of the pair ratios. Here the ratio says whether the "
                "scenario's request path holds the load back; what the path costs is the "
                "generator CPU per request below."
            )
        else:
            reading.append(
                f"The generators ran at {100 * util_a:.0f}% (A) and {100 * util_b:.0f}% (B) of "
                "their core, so the generator set the rate and the ratio is the cost of the "
                "scenario's request path."
            )
    if cpu_a is not None and cpu_b is not None and cpu_b:
        reading.append(
            f"Per request the scenario side spends {cpu_a:.3f} ms of generator CPU against "
            f"{cpu_b:.3f} ms for the plain user ({cpu_a / cpu_b:.2f} x): one generator core "
            f"would saturate at about {1000 / cpu_a:,.0f} requests/s with the scenario user and "
            f"{1000 / cpu_b:,.0f} with the plain one."
        )
    if wrk_rps is not None and rps_b is not None:
        reading.append(
            f"wrk reached {wrk_rps:,.0f} requests/s on the same endpoint (median of "
            f"{len(wrk_runs)}); the plain Locust user got {rps_b / wrk_rps:.2f} of that."
        )
    result.reading = reading
    if profiles:
        lines: list[str] = []
        for side, p in profiles.items():
            lines.append(f"--- {side} side ({'A' if side == 'scenario' else 'B'}) ---")
            lines += p["top"]
        result.profile = {
            "tool": "py-spy record --nonblocking, 100 Hz, 8 s of an extra uncounted run per side",
            "of": "the Locust process: where its busy samples go, per function",
            "top": lines,
        }
