"""Show the scenarios' stage plans:
``python -m memstress.scenarios [--scenario N] [--duration S] [--json]``,
or what the verdict checks for each: ``python -m memstress.scenarios --checks``.

Plans are pure functions of (config, stress level, total seconds); this prints
them without starting Locust or a target.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import locust  # noqa: F401 - first: gevent must patch before anything imports ssl

from memstress.common.config import ConfigError, load_config
from memstress.common.exitcodes import ExitCode
from memstress.scenarios.registry import all_scenarios, check_config, get_scenario
from memstress.scenarios.spec import checks_text
from memstress.shapes.plan import PlanError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m memstress.scenarios", description=__doc__)
    parser.add_argument("--scenario", help="one scenario (default: every registered one)")
    parser.add_argument("--duration", type=float, help="total seconds (default: the config's)")
    parser.add_argument("--stress-level", type=int, help="0-4 (default: the config's)")
    parser.add_argument("--config", help="config file (default: the shipped one)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--checks",
        action="store_true",
        help="print each scenario's checks (what the verdict checks, with the config's bounds; "
        "the README's scenario table shows the same) and exit",
    )
    args = parser.parse_args(argv)
    try:
        config = check_config(load_config(args.config))
        level = (
            config.stress_levels.default_level if args.stress_level is None else args.stress_level
        )
        stress = config.stress(level)
        chosen = [get_scenario(args.scenario)] if args.scenario else list(all_scenarios())
        if args.checks:
            for s in chosen:
                print(f"{s.name}: {checks_text(s, config)}")
            return 0
        out: list[dict[str, Any]] = []
        for s in chosen:
            duration = args.duration or s.default_duration(config)
            plan = s.build_plan(config, stress, duration)
            out.append(
                {
                    "scenario": s.name,
                    "seed_key": s.seed_key,
                    "duration_s": duration,
                    "stress_level": level,
                    "endpoints": [e.name for e in s.endpoints],
                    "user_classes": [c.__name__ for c in s.user_classes],
                    "stages": [
                        {
                            "name": st.name,
                            "duration_s": st.duration_s,
                            "users": st.users,
                            "spawn_rate": st.spawn_rate,
                            "params": dict(st.params),
                        }
                        for st in plan
                    ],
                }
            )
    except (ConfigError, PlanError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    for entry in out:
        print(f"{entry['scenario']} ({entry['duration_s']:g} s, stress level {level})")
        for st in entry["stages"]:
            params = ", ".join(f"{k}={v}" for k, v in sorted(st["params"].items()))
            print(f"  {st['name']:<13} {st['duration_s']:>7.1f} s {st['users']:>3} users  {params}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
