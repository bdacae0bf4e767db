"""The monitor's own CPU, on minus off, in one process: ``python -m bench.sampler_probe``.

    python -m bench.sampler_probe --host URL --target-pid PID --run-dir DIR \\
        --phase-s 30 --cycles 4

A Locust environment with a local runner and no users; each cycle an "off"
phase (the process idles) and an "on" phase (a fresh
:class:`monitors.monitor.MemoryMonitor`, every source, 1 s interval, its
sampler, health and cleanup greenlets started as at a run's start and killed
at the end). Each phase's CPU is this process's user + system time, all threads,
from its CPU clock (``time.process_time``, nanoseconds: ``/proc/self/stat`` counts
in 10 ms ticks, a twentieth of a 20 s phase's goal). One JSON line per phase on stdout.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import gevent
import locust  # first: gevent's monkey patching, as in a Locust process
from locust.env import Environment

from memstress.common.config import load_config
from memstress.common.context import RunContext
from memstress.common.runfiles import RunFolder
from memstress.monitors.monitor import MemoryMonitor
from memstress.monitors.sources import SOURCE_NAMES
from memstress.scenarios.registry import get_scenario


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.sampler_probe")
    p.add_argument("--host", required=True)
    p.add_argument("--target-pid", type=int, required=True)
    p.add_argument("--run-dir", type=Path, required=True)
    p.add_argument("--phase-s", type=float, default=30.0)
    p.add_argument("--cycles", type=int, default=4)
    p.add_argument("--interval", type=float, default=1.0)
    args = p.parse_args()
    config = load_config()
    env = Environment(user_classes=[], host=args.host, events=locust.events)
    env.create_local_runner()
    cpu = time.process_time
    for cycle in range(args.cycles):
        for phase in ("off", "on"):
            monitor = None
            if phase == "on":
                run_dir = args.run_dir / f"on-{cycle}"
                run_dir.mkdir(parents=True, exist_ok=True)
                env.memstress = RunContext(  # type: ignore[attr-defined]
                    config=config,
                    scenario="baseline",
                    stress=config.stress(config.stress_levels.default_level),
                    duration_s=get_scenario("baseline").default_duration(config),  # unscaled
                    run_id="benchprobe",
                    host=args.host,
                    folder=RunFolder(run_dir),
                    target_pid=args.target_pid,
                    monitor_interval=args.interval,
                )
                monitor = MemoryMonitor(env, sources=list(SOURCE_NAMES), interval=args.interval)
                monitor.on_test_start(env)
            c0, w0 = cpu(), time.monotonic()
            gevent.sleep(args.phase_s)
            c1, w1 = cpu(), time.monotonic()
            row: dict[str, object] = {
                "cycle": cycle,
                "phase": phase,
                "cpu_s": c1 - c0,
                "wall_s": w1 - w0,
            }
            if monitor is not None:
                assert monitor.sampler is not None
                row["samples"] = monitor.samples_taken
                row["sources"] = [s.name for s in monitor.sampler.sources]
                row["sampler_greenlet_cpu_s"] = monitor.cpu_seconds
                monitor.on_quitting(env)
            print(json.dumps(row), flush=True)
    if env.runner is not None:
        env.runner.quit()


if __name__ == "__main__":
    main()
