"""Number, time and table formatting shared by the renderers and the grade messages."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Sequence
from typing import Any


def num(v: Any, na: str = "n/a") -> str:
    """A figure with sensible precision: 1234, 56.7, 1.8, 0.0123; ``na`` for None/NaN."""
    if v is None or isinstance(v, str):
        return na if v is None else v
    if isinstance(v, bool):
        return "yes" if v else "no"
    x = float(v)
    if not math.isfinite(x):
        return na
    if isinstance(v, int):
        return str(v)
    a = abs(x)
    if a >= 100 or (a >= 10 and x.is_integer()):
        return f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}"
    if a == 0:
        return "0"  # also turns -0.0 into 0
    text = f"{x:.3g}"
    if "e" in text:
        return f"{x:.2e}"
    return text if "." in text else f"{text}.0"


def money(v: Any) -> str:
    """Dollars: $12.5, -$3.0, n/a."""
    text = num(v)
    if text == "n/a":
        return text
    return f"-${text[1:]}" if text.startswith("-") else f"${text}"


def with_unit(v: Any, unit: str, na: str = "n/a") -> str:
    text = num(v, na)
    if text == na or not unit or isinstance(v, bool):
        return text
    return f"{text}%" if unit == "%" else f"{text} {unit}"


def utc(ts: Any) -> str:
    if ts is None:
        return "n/a"
    try:
        return dt.datetime.fromtimestamp(float(ts), tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (TypeError, ValueError, OverflowError, OSError):
        return "n/a"


def duration(s: Any) -> str:
    if s is None:
        return "n/a"
    s = float(s)
    if s < 120:
        return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"
    m, sec = divmod(round(s), 60)
    if m < 60:
        return f"{m} min {sec:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


def grade_word(g: str) -> str:
    """A grade as the reports print it: Excellent, Good, ..., n/a."""
    return g.capitalize() if g != "n/a" else "n/a"


def _cell(v: Any) -> str:
    text = v if isinstance(v, str) else num(v)
    return text.replace("|", "\\|").replace("\n", " ")


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table; a cell that is not text is formatted by :func:`num`."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)
