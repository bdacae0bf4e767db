"""The executive summary's stored-vector lines: memory per stored vector and the drop."""

from __future__ import annotations

from typing import Any

from memstress.reports.fmt import num


def vector_lines(metrics: dict[str, Any]) -> list[str]:
    """Two bullets when the run counted stored vectors (``metrics.vectors``), else none."""
    vec = metrics.get("vectors") or {}
    if not vec.get("measured"):
        return []
    acc = vec.get("accounted_per_vector_kb")
    lines = [
        f"- **Stored vectors:** {num(vec['most_stored'])} at most; RSS growth "
        f"{num(vec['rss_per_vector_kb'])} KB per stored vector (marginal "
        f"{num(vec.get('rss_slope_kb_per_vector'))} KB)"
        + (f", accounted {num(acc)} KB" if acc is not None else "")
    ]
    if vec["drop"]["finding"]:
        lines.append(f"- **Cleanup drop:** {vec['drop']['finding']}")
    return lines
