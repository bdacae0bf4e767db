"""The Locust workarounds in ``common/locustfix.py`` that can be judged on Locust's own objects.

Importing Locust patches the whole process with gevent, so each check runs in a
``python -c`` child on a real ``Environment``/``LocalRunner`` and real
``StatsEntry`` objects, and reports what it saw as JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.locust_helpers import ROOT, assert_no_traceback, locust_env

ARCHIVE = r"""
import json
from locust.env import Environment
from memstress.common.locustfix import PerSecondArchive

env = Environment(user_classes=[])
env.create_local_runner()
stats = env.runner.stats
t0 = 1_800_000_000
for name in ("search", "cycle"):
    e = stats.get(name, "POST")
    for i in range(300):
        n = (i * 7 + len(name)) % 11
        e.num_reqs_per_sec[t0 + i] = n
        stats.total.num_reqs_per_sec[t0 + i] += n
        if i % 13 == 0:
            e.num_fail_per_sec[t0 + i] = 1
            stats.total.num_fail_per_sec[t0 + i] += 1
for e in [stats.total, *stats.entries.values()]:
    e.last_request_timestamp = t0 + 299.6
    e.start_time = t0


def seen():
    return {
        f"{e.method} {e.name}": [e.current_rps, e.current_fail_per_sec]
        for e in [stats.total, *stats.entries.values()]
    }


def dicts():
    return {
        f"{e.method} {e.name}": [
            sorted(e.num_reqs_per_sec.items()),
            sorted(e.num_fail_per_sec.items()),
        ]
        for e in [stats.total, *stats.entries.values()]
    }


archive = PerSecondArchive(env, every_s=3600, keep_s=30)
before_rps, before = seen(), dicts()
moved = archive.trim()
after_rps = seen()
# one slot a second from the first archived to the last, none past it (no slot to spare)
spare = [
    len(a.slots) - max(i for i, v in enumerate(a.slots) if v) - 1 for a in archive._old.values()
]
left = max(len(e.num_reqs_per_sec) for e in [stats.total, *stats.entries.values()])
again = archive.trim()
# a late report for a second before any archived, and a count too large for a slot
stats.get("search", "POST").num_reqs_per_sec[t0 - 3] = 2
stats.get("cycle", "POST").num_reqs_per_sec[t0 - 40] = 2**33
late = archive.trim()
# a slow worker's report for an archived second arrives after the trim
stats.get("search", "POST").num_reqs_per_sec[t0 + 5] += 4
env.events.quitting.fire(environment=env, reverse=True)
restored = dicts()
# --reset-stats (or the web UI's reset) replaces the dicts: their archived seconds go too
archive2 = PerSecondArchive(env, every_s=3600, keep_s=30)
archive2.trim()
stats.reset_all()
archive2.restore()
after_reset = sum(len(e.num_reqs_per_sec) for e in [stats.total, *stats.entries.values()])
print(json.dumps({
    "before_rps": before_rps, "after_rps": after_rps, "moved": moved, "left": left,
    "again": again, "late": late, "spare": spare, "before": before, "restored": restored,
    "after_reset": after_reset,
}))
"""


def test_per_second_archive_changes_no_figure_locust_shows() -> None:
    r = subprocess.run(
        [sys.executable, "-c", ARCHIVE],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=locust_env(),
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert_no_traceback(r.stderr)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    # the live figures Locust reads from the dicts (web UI, CSV history, console) are the same
    assert out["after_rps"] == out["before_rps"]
    assert any(v[0] > 0 for v in out["before_rps"].values())
    # the old seconds left the dicts: 270 of 300 per dict, requests and failures (0s too)
    assert out["left"] <= 31
    assert out["moved"] >= 3 * 269
    assert out["again"] == 0
    # 4 B a second: the slots end at the last second archived, gaps (failures every 13 s) or not
    assert len(out["spare"]) == 6
    assert out["spare"] == [0] * 6
    # at quitting every second is back (plus the late report's 4), as --json-file writes them
    expected = out["before"]
    search = expected["POST search"][0]
    search[5] = [search[5][0], search[5][1] + 4]
    t0 = search[0][0]
    search.insert(0, [t0 - 3, 2])
    expected["POST cycle"][0].insert(0, [t0 - 40, 2**33])
    assert out["late"] == 1  # the one that fits a slot moved; the large one stayed in its dict
    assert out["restored"] == expected
    assert out["after_reset"] == 0
