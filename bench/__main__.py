"""``python -m bench [load|monitor|report|leak|service|selfrss|capture ...] [--small] [--out DIR]``.

``--seconds N`` shortens selfrss's run (default an hour) for an experiment; a
run shorter than an hour gives its slopes but does not judge the goal.

With no name, every benchmark runs in turn (that is ``make bench``). Results go
to ``DIR/results.json`` (a benchmark run alone replaces its own entry) and
``DIR/RESULTS.md``; scratch files to ``DIR/_runs/<stamp>/``. ``render``
rebuilds RESULTS.md from results.json. Exit code 0 when every benchmark ran
(a missed goal is a finding, not a failure), 1 when one could not run, 2 for
bad usage.
"""

from __future__ import annotations

import argparse
import importlib
import os
import resource
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import psutil

from bench.machine import git_state, machine_info, now_iso
from bench.procs import BENCH_DIR
from bench.results import ORDER, BenchResult, write_markdown, write_results

TITLES = {
    "load": "Load generation: scenario user vs plain FastHttpUser",
    "monitor": "Monitor cost: sampler CPU and requests/s with the monitor on vs off",
    "report": "Report scale: build time of 6- and 60-minute run folders",
    "leak": "Leak detection: recall, delay and false alarms",
    "service": "The reference service: cycle and search latency, RSS per stored vector",
    "selfrss": "memstress's own memory: master and worker RSS slope against plain Locust",
    "capture": "Capture cost: target requests/s with memray tracking vs without",
}


class HostLoad:
    """How busy the machine's CPUs were over a benchmark, and how much of that was not ours.

    Ours is this process plus every child it waited for (``RUSAGE_CHILDREN``);
    the rest is other people's work on a shared machine, which a side-by-side
    ratio survives better than an absolute figure.
    """

    def __init__(self) -> None:
        self.loadavg = os.getloadavg()[0]
        self.cpu = psutil.cpu_times()
        self.ours = self._ours()
        self.wall = time.monotonic()

    @staticmethod
    def _ours() -> float:
        s, c = (
            resource.getrusage(resource.RUSAGE_SELF),
            resource.getrusage(resource.RUSAGE_CHILDREN),
        )
        return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime

    def done(self) -> dict[str, float | None]:
        now = psutil.cpu_times()
        wall = max(1e-6, time.monotonic() - self.wall)
        n = psutil.cpu_count() or 1
        busy = sum(now) - sum(self.cpu) - (now.idle - self.cpu.idle)
        busy -= getattr(now, "iowait", 0.0) - getattr(self.cpu, "iowait", 0.0)
        ours = self._ours() - self.ours
        return {
            "cpus": float(n),
            "busy_pct": round(100 * busy / (wall * n), 1),
            "ours_pct": round(100 * ours / (wall * n), 1),
            "others_pct": round(max(0.0, 100 * (busy - ours) / (wall * n)), 1),
            "loadavg_start": round(self.loadavg, 2),
            "loadavg_end": round(os.getloadavg()[0], 2),
        }


MODULES = {
    "load": "bench.loadgen",
    "monitor": "bench.monitor_cost",
    "report": "bench.report_scale",
    "leak": "bench.leak_detection",
    "service": "bench.service_bench",
    "selfrss": "bench.self_rss",
    "capture": "bench.capture_cost",
}


def _runner(name: str) -> Callable[[Path, bool], BenchResult]:
    """The benchmark's ``run(workdir, small)``, imported only when it runs."""
    fn: Callable[[Path, bool], BenchResult] = importlib.import_module(MODULES[name]).run
    return fn


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 60 <= value <= 86400:
        raise argparse.ArgumentTypeError(
            f"not a run length: {text!r} (valid: seconds from 60 to 86400, e.g. 900)"
        )
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="memstress benchmarks: ratios measured side by side in one run.",
    )
    p.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"benchmarks to run: {', '.join(ORDER)} (default: all); or 'render'",
    )
    p.add_argument("--small", action="store_true", help="a short smoke run of each (no figures)")
    p.add_argument(
        "--out",
        type=Path,
        default=BENCH_DIR,
        help="folder for results.json and RESULTS.md (default: bench/)",
    )
    p.add_argument("--keep", action="store_true", help="keep the services' data folders")
    p.add_argument(
        "--seconds",
        type=_seconds,
        default=None,
        help="selfrss only: run length in seconds (default 3600, the goal's hour; a "
        "shorter run reports slopes but leaves the goal unjudged)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    names: list[str] = list(args.names)
    out: Path = args.out
    if names == ["render"]:
        try:
            print(write_markdown(out))
        except FileNotFoundError as exc:
            print(f"python -m bench render: {exc}", file=sys.stderr)
            return 2
        return 0
    bad = [n for n in names if n not in ORDER]
    if bad:
        parser.error(f"unknown benchmark {bad[0]!r} (valid: {', '.join(ORDER)}, or render)")
    names = [n for n in ORDER if n in names] if names else list(ORDER)
    if args.seconds is not None and "selfrss" not in names:
        parser.error(
            "--seconds applies to selfrss only (valid: python -m bench selfrss --seconds N)"
        )
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    runs_root = out / "_runs"
    if runs_root.is_dir():  # only the latest run's scratch files are kept
        for old in runs_root.iterdir():
            shutil.rmtree(old, ignore_errors=True)
    machine = machine_info()
    command = "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv)
    failed = 0
    for name in names:
        workdir = runs_root / stamp / name
        workdir.mkdir(parents=True, exist_ok=True)
        print(f"bench {name}{' (small)' if args.small else ''}: running ...", flush=True)
        t0 = time.monotonic()
        started = now_iso()
        commit, clean = git_state()
        host = HostLoad()
        try:
            if name == "selfrss" and args.seconds is not None:
                from bench.self_rss import run as selfrss_run

                result = selfrss_run(workdir, args.small, seconds=args.seconds)
            else:
                result = _runner(name)(workdir, args.small)
        except Exception as exc:
            failed += 1
            traceback.print_exc()
            result = BenchResult(
                name=name,
                title=TITLES[name],
                mode="small" if args.small else "full",
                what="(did not run)",
                notes=[f"the benchmark failed: {type(exc).__name__}: {exc}"],
            )
        result.started = started
        result.git_commit, result.tree_clean = commit, clean
        result.wall_s = time.monotonic() - t0
        result.host = host.done()
        if not args.keep:
            for data in workdir.rglob("service-*"):
                if data.is_dir():
                    shutil.rmtree(data, ignore_errors=True)
        write_results(out, [result], machine, command)
        write_markdown(out)
        for g in result.goals:
            state = {True: "met", False: "MISSED", None: "not measured"}[g.passed]
            if g.passed is None and g.value is not None:
                state = "not judged"
            why = f" ({g.reason})" if g.reason and g.passed is not True else ""
            print(f"  {g.id or g.name}: {g.value} ({g.op} {g.target} {g.unit}) {state}{why}")
        print(f"bench {name}: done in {result.wall_s:.0f} s", flush=True)
    print(f"results: {out / 'results.json'}, {out / 'RESULTS.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
