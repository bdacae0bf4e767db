"""Profiles a benchmark shows when it explains a figure: py-spy for a process, cProfile in-process.

Both end in the same summary: the functions with the most samples (or time)
of their own, and the ones that most often sit anywhere on the stack, as
plain lines for ``RESULTS.md``.
"""

from __future__ import annotations

import cProfile
import pstats
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def py_spy_path() -> str | None:
    return shutil.which("py-spy")


def py_spy_record(pid: int, seconds: float, out: Path, *, rate: int = 100) -> Path | None:
    """Sample ``pid`` for ``seconds`` (non-blocking) into a collapsed-stack file, or None."""
    exe = py_spy_path()
    if exe is None:
        return None
    cmd = [exe, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds)))]
    cmd += ["--rate", str(rate), "--format", "raw", "--nonblocking", "--output", str(out)]
    try:
        subprocess.run(cmd, capture_output=True, timeout=seconds + 30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out if out.exists() and out.stat().st_size > 0 else None


IDLE_LEAVES = ("Hub.run (gevent/hub.py)",)
"""A sample whose innermost frame is gevent's hub loop is the process waiting in epoll."""


def summarize_collapsed(path: Path, top: int = 12, within: str | None = None) -> dict[str, Any]:
    """Self and inclusive sample shares per function from py-spy's raw (collapsed) output.

    Samples of the process idling in gevent's hub are counted apart (``idle``) and
    left out of the shares, which are then of the samples that did work.
    ``within``: count only stacks with a frame whose name contains this text (e.g. one
    greenlet's entry function).
    """
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    total = 0
    every = 0
    idle = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        every += n
        if _short(stack.rsplit(";", 1)[-1]) in IDLE_LEAVES:
            idle += n
            continue
        if within is not None and within not in stack:
            continue
        total += n
        frames = [_short(f) for f in stack.split(";") if f]
        if frames:
            own[frames[-1]] += n
        for f in set(frames):
            anywhere[f] += n
    scope = f", those under {within}" if within is not None else ""
    lines = [
        f"{every} samples, {idle} idle in the gevent hub; {total} busy{scope} shown below "
        "(own = in the function itself, stack = anywhere on the stack)"
    ]
    lines.append(f"{'own %':>6} {'stack %':>8}  function")
    for f, n in own.most_common(top):
        lines.append(
            f"{100 * n / max(1, total):6.1f} {100 * anywhere[f] / max(1, total):8.1f}  {f}"
        )
    return {
        "samples": total,
        "all_samples": every,
        "idle_samples": idle,
        "top": lines,
        "own": dict(own.most_common(top)),
    }


def children_of(path: Path, parent: str) -> dict[str, Any]:
    """Busy samples under ``parent`` (a function name), split by the function it called next.

    E.g. ``children_of(raw, "Sampler.take")`` says how the sampler's time splits between
    its sources. Shares are of the samples with ``parent`` on the stack.
    """
    split: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_short(f) for f in stack.split(";") if f]
        names = [f.split(" (", 1)[0] for f in frames]
        if parent not in names:
            continue
        i = len(names) - 1 - names[::-1].index(parent)
        n = int(count)
        total += n
        split[frames[i + 1] if i + 1 < len(frames) else "(itself)"] += n
    lines = [f"{total} busy samples under {parent}, by what it called:"]
    lines += [f"{100 * n / max(1, total):6.1f}%  {f}" for f, n in split.most_common()]
    shares = {f: n / max(1, total) for f, n in split.most_common()}
    return {"samples": total, "top": lines, "shares": shares}


def _short(frame: str) -> str:
    """``func (path/to/module.py:123)`` -> ``func (module.py)``."""
    name, _, where = frame.partition(" (")
    file = where.rstrip(")").rsplit(":", 1)[0]
    parts = file.replace("\\", "/").split("/")
    tail = "/".join(parts[-2:]) if len(parts) > 1 else file
    return f"{name} ({tail})" if where else name


def cprofile_call(
    fn: Callable[[], T], top: int = 14, phases: Sequence[str] = ()
) -> tuple[T, dict[str, Any]]:
    """Run ``fn`` under cProfile; its result and the summary (by own time, with cumulative).

    ``phases``: function names whose cumulative seconds are returned under ``phases``.
    """
    prof = cProfile.Profile()
    result = prof.runcall(fn)
    stats = pstats.Stats(prof)
    entries = []
    total = 0.0
    found: dict[str, float] = {}
    for (file, _line, func), (_cc, _nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        total += tt
        if func in phases:
            found[func] = max(found.get(func, 0.0), ct)
        entries.append((tt, ct, f"{func} ({'/'.join(Path(file).parts[-2:])})"))
    entries.sort(reverse=True)
    lines = [f"{total:.2f} s profiled; own = time in the function itself, cum = with callees"]
    lines.append(f"{'own s':>7} {'cum s':>7}  function")
    lines += [f"{tt:7.3f} {ct:7.3f}  {name}" for tt, ct, name in entries[:top]]
    by_cum = sorted(entries, key=lambda e: -e[1])
    cum_lines = [f"{ct:7.3f}  {name}" for _tt, ct, name in by_cum[:top]]
    ordered = {p: round(found[p], 3) for p in phases if p in found}
    return result, {"total_s": total, "top": lines, "by_cumulative": cum_lines, "phases": ordered}
