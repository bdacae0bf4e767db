#!/usr/bin/env python3
"""The seed's entry points: ``python memory_stress_test.py`` and ``MemoryStressTest``.

    python memory_stress_test.py                      # the comprehensive test with the config
    python memory_stress_test.py --config my.yml      # ... with another config
    python memory_stress_test.py --duration 60 --fail-on good

It is ``run_stress_test.py --comprehensive`` (every registered scenario, each at
its configured length), taking the same options. ``MemoryStressTest`` is the
seed's way to add a scenario: subclass it in a module of ``scenarios/`` with
``test_<name>`` methods (see :mod:`scenarios.seed`).
"""

from __future__ import annotations

import sys

from memstress.scenarios.seed import MemoryStressTest

__all__ = ["MemoryStressTest", "main"]


def main(argv: list[str] | None = None) -> int:
    from run_stress_test import main as run

    args = sys.argv[1:] if argv is None else argv
    return run(["--comprehensive", *args])


if __name__ == "__main__":
    sys.exit(main())
