"""Load generation where the generator, not the target, sets the rate; and a worker's RSS.

**Generator cost.** Both sides send the same requests (``POST /vectors/search``
with a six-word query, after one warm-up upsert per scenario user) to
:mod:`bench.fast_target`, which answers at once, so what limits the rate is the
Locust process's one core. Side A is ``bench/scenario_locustfile.py``
(vector_store's real ``VectorClient``: ``active()``, stage lookups,
``MemstressUser.call`` with ``catch_response``, shed handling, a JSON parse of
every answer), side B ``bench/plain_locustfile.py`` (one ``self.client.post``).
Same users, no think time, the generator pinned to one CPU and the target to
the other, in pairs whose order alternates (A B, B A, A B ...), so a drift in the
machine's load favours neither side. Requests/s are Locust's per-second counts;
generator CPU is the process's user + system time from ``/proc`` (psutil) over
the same seconds. Both figures are taken over a run's *saturated* seconds, those
in which the generator had at least :data:`SATURATED_SHARE` of its core: on a
shared machine a neighbour on that core takes a varying share of it, and a
second at 60 % measures the neighbour, not the generator (a run at 66 % of its
core sent two thirds of the requests). A run with fewer than
:data:`MIN_SATURATED_S` such seconds does not count, nor does its pair; the
goals are judged on the median of the pairs left when most pairs are left.
wrk on the generator's CPU against the same target is the ceiling: the figures
count only when it serves at least :data:`CEILING_FACTOR` times what the faster
generator sent.

**Worker footprint.** A Locust master and one worker on ``locustfile.py``
(a memstress scenario) against the fast target, then a master and worker on
the plain locustfile with the same user count; the worker's RSS (psutil) after
:data:`WORKER_SETTLE_S` seconds of load.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import psutil

from bench.procs import (
    BENCH_DIR,
    ROOT,
    BenchError,
    CpuWatch,
    FastTarget,
    LocustRun,
    cpus,
    fast_target,
    free_port,
    per_second,
    read_rows,
    run_locust,
    run_wrk,
    start_locust,
    steady_rate,
    stop_process,
    wrk_path,
)
from bench.results import BenchResult, Goal, Table

ENDPOINT = "POST /vectors/search"
RUN_ID = "benchload"
NAMESPACE = f"{RUN_ID}-ns-0"
USERS = 20
CEILING_FACTOR = 3.0
SATURATED_SHARE = 0.9
"""A second counts when the generator had at least this share of its core in it."""
MIN_SATURATED_S = 3
"""A run counts with at least this many saturated seconds."""
WORKER_SETTLE_S = 30.0
WORKER_SCENARIO = "vector_store"

WRK_SCRIPT = """\
-- the body both Locust sides send (the fast target does not read it)
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"namespace":"%(ns)s","query":"alpha beta gamma delta epsilon zeta","k":10}'
wrk.path = "/vectors/search"
"""


def _side(
    side: str,
    target: FastTarget,
    workdir: Path,
    tag: str,
    *,
    seconds: float,
    cpu: int | None,
    watch: CpuWatch,
) -> dict[str, Any]:
    locustfile = BENCH_DIR / f"{side}_locustfile.py"
    args = ["--headless", "-u", str(USERS), "-r", str(USERS), "-t", f"{seconds:g}s"]
    args += ["--only-summary", "--loglevel", "WARNING", "--stop-timeout", "2"]
    env = {"BENCH_RUN_ID": RUN_ID, "BENCH_NAMESPACE": NAMESPACE}
    run: LocustRun = run_locust(
        locustfile,
        workdir / tag,
        args,
        host=target.url,
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
    span = t1 - t0
    per_sec = per_second(entry)
    sat_s, sat_n, sat_cpu = saturated_seconds(
        per_sec, [(t, watch.between(tag, t, t + 1)) for t in range(int(t0), int(t1))]
    )
    counts = sat_s >= MIN_SATURATED_S and sat_n > 0
    return {
        "side": side,
        "run": tag,
        "rps": rps,
        "requests": n,
        "window_s": span,
        "failures": sum(int(e["num_failures"]) for e in run.entries),
        "generator_cpu_s": gen_cpu,
        "generator_cpu_util": None if gen_cpu is None else gen_cpu / span,
        "generator_cpu_ms_per_request": None if gen_cpu is None or not n else 1000 * gen_cpu / n,
        "saturated_s": sat_s,
        "saturated_rps": sat_n / sat_s if counts else None,
        "saturated_cpu_ms_per_request": 1000 * sat_cpu / sat_n if counts else None,
        "exit_code": run.exit_code,
    }


def saturated_seconds(
    per_sec: dict[int, int], cpu: list[tuple[int, float | None]]
) -> tuple[int, int, float]:
    """Of the seconds in ``cpu`` (start, generator CPU seconds in it), those with at least
    :data:`SATURATED_SHARE` of a core: how many, their requests and their CPU seconds."""
    full = [(t, c) for t, c in cpu if c is not None and c >= SATURATED_SHARE]
    return len(full), sum(per_sec.get(t, 0) for t, _ in full), sum(c for _, c in full)


def _wrk(target: FastTarget, workdir: Path, seconds: float, cpu: int | None) -> dict[str, Any]:
    script = workdir / "search.lua"
    script.write_text(WRK_SCRIPT % {"ns": NAMESPACE})
    return run_wrk(target.url, connections=USERS, seconds=seconds, script=script, cpu=cpu)


# --- the worker's footprint ------------------------------------------------------------------


def _user_count(stats_history: Path) -> int | None:
    rows = read_rows(stats_history)
    counts = [int(float(r["User Count"])) for r in rows if r.get("User Count")]
    return counts[-1] if counts else None


def _distributed(
    kind: str,
    target: FastTarget,
    workdir: Path,
    *,
    users: int | None,
    settle_s: float,
    cpu: int | None,
) -> dict[str, Any]:
    """A master and one worker; the worker's RSS after ``settle_s`` s of load."""
    out = workdir / f"worker-{kind}"
    port = free_port()
    if kind == "memstress":
        locustfile = ROOT / "locustfile.py"
        extra = ["--scenario", WORKER_SCENARIO, "--stress-level", "2"]
        extra += ["--duration", f"{settle_s + 30:g}", "--run-dir", str(out / "run")]
        extra += ["--monitor-interval", "1"]
        run_args: list[str] = []
    else:
        locustfile = BENCH_DIR / "plain_locustfile.py"
        extra = []
        run_args = ["-u", str(users), "-r", str(users)]
    master_args = ["--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port)]
    master_args += ["--headless", "--expect-workers", "1", "-t", f"{settle_s + 30:g}s"]
    master_args += ["--csv", str(out / "master"), "--loglevel", "WARNING", *run_args, *extra]
    worker_args = ["--worker", "--master-host", "127.0.0.1", "--master-port", str(port)]
    worker_args += ["--loglevel", "WARNING"]
    env = {"BENCH_RUN_ID": RUN_ID, "BENCH_NAMESPACE": NAMESPACE}
    master = start_locust(locustfile, out, master_args, host=target.url, env=env, cpu=cpu)
    worker = start_locust(
        locustfile, out, worker_args, host=target.url, env=env, cpu=cpu, log_name="worker.log"
    )
    try:
        t0 = time.monotonic()
        deadline = t0 + settle_s + 30
        started: float | None = None
        while time.monotonic() < deadline and master.poll() is None:
            if started is None and _user_count(out / "master_stats_history.csv"):
                started = time.monotonic()
            if started is not None and time.monotonic() - started >= settle_s:
                break
            time.sleep(0.25)
        if started is None or master.poll() is not None:
            tail = (out / "locust.log").read_text(errors="replace")[-1500:]
            raise BenchError(f"{kind}: the distributed run did not start load: {tail}")
        rss = psutil.Process(worker.pid).memory_info().rss
        master_rss = psutil.Process(master.pid).memory_info().rss
        n = _user_count(out / "master_stats_history.csv")
        return {
            "kind": kind,
            "worker_rss_bytes": rss,
            "master_rss_bytes": master_rss,
            "users": n,
            "seconds_under_load": time.monotonic() - started,
        }
    finally:
        stop_process(master, 10)
        stop_process(worker, 10)


# --- the benchmark -----------------------------------------------------------------------------


def run(workdir: Path, small: bool) -> BenchResult:
    seconds = 4.0 if small else 10.0
    pairs = 1 if small else 7
    wrk_s = 2.0 if small else 5.0
    settle = 3.0 if small else WORKER_SETTLE_S
    cores = cpus()
    tgt_cpu, gen_cpu = (cores[0], cores[1]) if len(cores) >= 2 else (None, None)
    result = BenchResult(
        name="load",
        title="Load generation: scenario user vs plain FastHttpUser, generator-bound; worker RSS",
        mode="small" if small else "full",
        what=(
            f"Generator cost: `{ENDPOINT}` from vector_store's real `VectorClient` (A, "
            "`bench/scenario_locustfile.py`) and from a bare FastHttpUser with the same body "
            f"(B, `bench/plain_locustfile.py`), {USERS} users, no think time, {seconds:g} s per "
            f"run, {pairs} pairs in alternating order (A B, B A, ...), against "
            "`bench/fast_target.py` (an asyncio server answering every request at once with a "
            "small JSON body), the generator pinned to one CPU and the target to the other. "
            "Generator CPU: user + system time of the Locust process from /proc (psutil), per "
            "request. Both figures are taken over each run's saturated seconds, those in which "
            f"the generator had >= {SATURATED_SHARE:.0%} of its core (a neighbour on that core "
            "otherwise sets the rate); a run with fewer than "
            f"{MIN_SATURATED_S} such seconds, and its pair, do not count, and the goals are "
            "judged on the median of the pair ratios when most pairs count. wrk "
            f"(1 thread, {USERS} connections, on the generator's CPU) against the same target "
            f"is the ceiling: the two generator goals count only when wrk serves >= "
            f"{CEILING_FACTOR:g}x the faster side's rate, which shows the generator set it. "
            f"Worker footprint: a master and one worker on `locustfile.py` (scenario "
            f"{WORKER_SCENARIO}, monitor on) vs on the plain locustfile with the same user "
            f"count, the worker's RSS after {settle:g} s under load."
        ),
    )
    result.setup = {
        "endpoint": ENDPOINT,
        "users": USERS,
        "seconds_per_run": seconds,
        "pairs": pairs,
        "target_cpu": tgt_cpu,
        "generator_cpu": gen_cpu,
        "wrk_seconds": wrk_s,
        "ceiling_factor": CEILING_FACTOR,
        "worker_settle_s": settle,
        "worker_scenario": WORKER_SCENARIO,
    }
    runs: list[dict[str, Any]] = []
    wrk_runs: list[dict[str, Any]] = []
    workers: list[dict[str, Any]] = []
    with fast_target(workdir, cpu=tgt_cpu) as target:
        with CpuWatch({"target": target.pid}) as watch:
            _side("plain", target, workdir, "warmup", seconds=2, cpu=gen_cpu, watch=watch)
            for i in range(pairs):
                for side in ("scenario", "plain") if i % 2 == 0 else ("plain", "scenario"):
                    runs.append(
                        _side(
                            side,
                            target,
                            workdir,
                            f"{side}-{i}",
                            seconds=seconds,
                            cpu=gen_cpu,
                            watch=watch,
                        )
                    )
                if wrk_path() is not None:
                    wrk_runs.append(_wrk(target, workdir, wrk_s, gen_cpu))
        try:
            mem = _distributed(
                "memstress", target, workdir, users=None, settle_s=settle, cpu=gen_cpu
            )
            workers.append(mem)
            users = mem["users"] or USERS
            workers.append(
                _distributed("plain", target, workdir, users=users, settle_s=settle, cpu=gen_cpu)
            )
        except (BenchError, psutil.Error) as exc:  # the generator figures still count
            result.notes.append(f"worker footprint not measured: {str(exc)[-600:]}")
    _aggregate(result, runs, wrk_runs, workers)
    return result


def _ratio(x: float | None, y: float | None) -> float | None:
    return x / y if x is not None and y else None


def _med(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def _aggregate(
    result: BenchResult,
    runs: list[dict[str, Any]],
    wrk_runs: list[dict[str, Any]],
    workers: list[dict[str, Any]],
) -> None:
    a = [r for r in runs if r["side"] == "scenario"]
    b = [r for r in runs if r["side"] == "plain"]
    pairs = list(zip(a, b, strict=True))
    rps_pairs = [_ratio(ra["saturated_rps"], rb["saturated_rps"]) for ra, rb in pairs]
    cpu_pairs = [
        _ratio(ra["saturated_cpu_ms_per_request"], rb["saturated_cpu_ms_per_request"])
        for ra, rb in pairs
    ]
    counted = sum(v is not None for v in cpu_pairs)
    enough = counted > len(pairs) // 2
    rps_ratio = _med(list(rps_pairs)) if enough else None
    cpu_ratio = _med(list(cpu_pairs)) if enough else None
    rps_a = _med([r["saturated_rps"] for r in a])
    rps_b = _med([r["saturated_rps"] for r in b])
    cpu_a = _med([r["saturated_cpu_ms_per_request"] for r in a])
    cpu_b = _med([r["saturated_cpu_ms_per_request"] for r in b])
    util_a = _med([r["generator_cpu_util"] for r in a])
    util_b = _med([r["generator_cpu_util"] for r in b])
    wrk_rps = min(w["rps"] for w in wrk_runs) if wrk_runs else None
    fastest = max((r["rps"] for r in runs), default=None)
    headroom = wrk_rps / fastest if wrk_rps and fastest else None
    mem = next((w for w in workers if w["kind"] == "memstress"), None)
    plain = next((w for w in workers if w["kind"] == "plain"), None)
    rss_ratio = (
        mem["worker_rss_bytes"] / plain["worker_rss_bytes"]
        if mem and plain and plain["worker_rss_bytes"]
        else None
    )
    result.raw = {"runs": runs, "wrk": wrk_runs, "workers": workers}
    result.ratios = {
        "generator_cpu_per_request_scenario_over_plain": cpu_ratio,
        "rps_scenario_over_plain": rps_ratio,
        "wrk_ceiling_over_fastest_generator": headroom,
        "worker_rss_memstress_over_plain": rss_ratio,
    }
    if headroom is None:
        why = "wrk is not installed: nothing shows the generator set the rate (apt-get install wrk)"
    elif headroom < CEILING_FACTOR:
        why = (
            f"wrk served only {headroom:.2f}x the faster generator's rate (needs "
            f">= {CEILING_FACTOR:g}x): the target may have set the rate, not the generator"
        )
    else:
        why = ""
    if not why and not enough:
        short = any(r["window_s"] < MIN_SATURATED_S for r in runs)
        why = (
            f"only {counted} of {len(pairs)} pairs had both runs saturated (>= "
            f"{MIN_SATURATED_S} s with >= {SATURATED_SHARE:.0%} of the generator's core; "
            "needs most pairs): "
            + (
                "the runs' steady windows are shorter than that"
                if short
                else "neighbours on the generator's core took part of it, so they set the rate"
            )
        )
    result.goals = [
        Goal.of("loadgen_cpu_per_request_ratio", cpu_ratio, reason=why, valid=not why),
        Goal.of("loadgen_saturated_rps_ratio", rps_ratio, reason=why, valid=not why),
        Goal.of(
            "worker_rss_ratio",
            rss_ratio,
            reason="" if rss_ratio is not None else "the distributed runs did not both run",
        ),
    ]
    result.tables = [
        Table(
            "Runs in the order they ran (A = scenario, B = plain), against the fast target",
            [
                "run",
                "requests/s",
                "requests",
                "failures",
                "generator CPU % of its core",
                "generator CPU ms/request",
                f"saturated s (>= {SATURATED_SHARE:.0%})",
                "saturated requests/s",
                "saturated CPU ms/request",
            ],
            [
                [
                    r["run"],
                    r["rps"],
                    r["requests"],
                    r["failures"],
                    None if r["generator_cpu_util"] is None else 100 * r["generator_cpu_util"],
                    r["generator_cpu_ms_per_request"],
                    r["saturated_s"],
                    r["saturated_rps"],
                    r["saturated_cpu_ms_per_request"],
                ]
                for r in runs
            ],
        ),
        Table(
            "Pair by pair, scenario (A) / plain (B), saturated seconds",
            ["pair", "order", "requests/s A / B", "CPU ms/request A / B"],
            [
                [
                    i,
                    f"{ra['run']} {rb['run']}" if i % 2 == 0 else f"{rb['run']} {ra['run']}",
                    rp,
                    cp,
                ]
                for i, ((ra, rb), rp, cp) in enumerate(
                    zip(pairs, rps_pairs, cpu_pairs, strict=True)
                )
            ],
        ),
        Table(
            "The setup that makes the figures mean what they say",
            ["figure", "value"],
            [
                ["wrk ceiling, requests/s (lowest of its runs)", wrk_rps],
                ["fastest generator run, requests/s", fastest],
                [f"ceiling / generator (must be >= {CEILING_FACTOR:g})", headroom],
                [
                    "generator CPU % of its core, A (median)",
                    None if util_a is None else 100 * util_a,
                ],
                [
                    "generator CPU % of its core, B (median)",
                    None if util_b is None else 100 * util_b,
                ],
                ["CPU source", "/proc/<pid>/stat user+system (psutil), sampled every 0.2 s"],
            ],
        ),
        Table(
            "Medians and ratios",
            ["figure", "scenario (A)", "plain (B)", "A / B (median of pairs)"],
            [
                ["requests/s, saturated seconds", rps_a, rps_b, rps_ratio],
                ["generator CPU ms per request, saturated seconds", cpu_a, cpu_b, cpu_ratio],
                ["pairs counted", None, None, counted],
            ],
        ),
        Table(
            "Worker footprint (master + one worker, same users)",
            ["locustfile", "users", "worker RSS MB", "master RSS MB", "s under load"],
            [
                [
                    w["kind"],
                    w["users"],
                    w["worker_rss_bytes"] / 2**20,
                    w["master_rss_bytes"] / 2**20,
                    w["seconds_under_load"],
                ]
                for w in workers
            ],
        ),
    ]
    if wrk_runs:
        result.tables.append(
            Table(
                "wrk ceiling runs (1 thread, same connections, the generator's CPU)",
                ["run", "requests/s", "p50 ms", "p99 ms"],
                [[i, w["rps"], w.get("p50_ms"), w.get("p99_ms")] for i, w in enumerate(wrk_runs)],
            )
        )
    reading = []
    if headroom is not None and fastest is not None and wrk_rps is not None:
        reading.append(
            f"wrk got {wrk_rps:,.0f} requests/s from the target on the generator's core, "
            f"{headroom:.1f}x the fastest Locust run ({fastest:,.0f}/s): "
            + (
                "the generator set the rate."
                if headroom >= CEILING_FACTOR
                else "not enough headroom to say the generator set the rate; the two "
                "generator goals are left unjudged."
            )
        )
    if cpu_a and cpu_b:
        reading.append(
            f"Over saturated seconds, per request the scenario path spends {cpu_a:.3f} ms of "
            f"generator CPU, the plain user {cpu_b:.3f} ms; requests/s {rps_a or 0:,.0f} vs "
            f"{rps_b or 0:,.0f}. {counted} of {len(pairs)} pairs counted"
            + (
                f": pair ratios' medians {cpu_ratio:.3f}x (CPU) and {rps_ratio:.3f}x (requests/s)."
                if cpu_ratio is not None and rps_ratio is not None
                else ", too few to judge."
            )
        )
    if rss_ratio is not None and mem and plain:
        reading.append(
            f"A memstress worker held {mem['worker_rss_bytes'] / 2**20:.0f} MB after "
            f"{mem['seconds_under_load']:.0f} s with {mem['users']} users, a plain one "
            f"{plain['worker_rss_bytes'] / 2**20:.0f} MB ({rss_ratio:.2f}x)."
        )
    result.reading = reading
