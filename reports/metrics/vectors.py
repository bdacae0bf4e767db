"""Stored vectors: memory per stored vector, and what dropping them at cleanup gave back.

Read from ``stored_vectors`` in memory_samples.csv: the run's vectors on the
target, counted every sample through the adapter (``monitors.stored``; vector
scenarios on an adapter that can count). Three moments of the run matter:

- **empty**: the samples before the first stored vector (their median RSS is
  the memory the vectors are measured from);
- **most vectors**: the samples before the cleanup stage that hold the most
  vectors (their median RSS and accounted bytes);
- **after the drop**: the samples of the cleanup stage from the one where the
  count reached its final value (the conductor dropped the namespaces).

Growth per stored vector is (most vectors - empty) / the most vectors. It holds
whatever the target allocated once on its first requests too, so the report
also gives the marginal figure: the Theil-Sen slope of RSS against the count
over the samples that hold vectors. The drop compares the last samples before
the cleanup stage with those after the drop.
Memory that does not come back after the drop is a *finding* about the target,
never a grade or a failed check.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.stats import theilslopes

from memstress.reports.collect import RunData
from memstress.reports.metrics.base import MB, StageSpan, adapter_requests, col, few, median, whole
from memstress.reports.metrics.latency import entries

MIN_COUNTS = 5
"""Distinct stored-vector counts the marginal slope needs."""


@dataclass
class DropMetrics:
    measured: bool = False
    vectors_before: int | None = None
    vectors_after: int | None = None
    dropped: int | None = None
    drop_requests: int | None = None
    rss_before_mb: float | None = None
    rss_after_mb: float | None = None
    returned_mb: float | None = None
    returned_pct_of_growth: float | None = None
    came_back: bool | None = None
    observed_s: float | None = None
    finding: str = ""


@dataclass
class VectorMetrics:
    measured: bool = False
    most_stored: int | None = None
    rss_empty_mb: float | None = None
    rss_at_most_mb: float | None = None
    rss_growth_mb: float | None = None
    rss_per_vector_kb: float | None = None
    rss_slope_kb_per_vector: float | None = None
    accounted_growth_mb: float | None = None
    accounted_per_vector_kb: float | None = None
    accounted_basis: str = ""
    note: str = ""
    drop: DropMetrics = field(default_factory=DropMetrics)


def vector_metrics(data: RunData, spans: list[StageSpan], tol_pct: float) -> VectorMetrics:
    v = VectorMetrics()
    s = data.samples
    count = col(s, "stored_vectors").to_numpy(dtype=float)
    if not np.isfinite(count).any():
        v.note = "no stored_vectors samples (a vector scenario on an adapter that counts them)"
        return v
    t = col(s, "time").to_numpy(dtype=float)
    rss = col(s, "rss_bytes").to_numpy(dtype=float) / MB
    cleanup = next((sp for sp in reversed(spans) if sp.params.get("cleanup") is True), None)
    before = t < cleanup.start if cleanup is not None else np.ones(len(t), dtype=bool)
    counted = np.isfinite(count) & before
    if not counted.any() or np.nanmax(count[counted]) <= 0:
        v.note = "the target held none of the run's vectors before the cleanup stage"
        return v
    most = float(np.nanmax(count[counted]))
    first = int(np.argmax(np.isfinite(count) & (count > 0)))
    empty = np.arange(len(t)) < first
    at_most = counted & (count == most)
    v.measured = True
    v.most_stored = whole(most)
    v.rss_empty_mb = _median(rss[empty])
    v.rss_at_most_mb = _median(rss[at_most])
    if v.rss_empty_mb is None:
        v.note = "no sample before the first stored vector: RSS growth per vector is n/a"
    elif v.rss_at_most_mb is not None:
        v.rss_growth_mb = v.rss_at_most_mb - v.rss_empty_mb
        v.rss_per_vector_kb = v.rss_growth_mb * 1024.0 / most
    held = counted & (count > 0) & np.isfinite(rss)
    if len(np.unique(count[held])) >= MIN_COUNTS:
        v.rss_slope_kb_per_vector = float(theilslopes(rss[held] * 1024.0, count[held])[0])
    for column, basis in (
        ("vectors_bytes", "the vector tier's bytes (the target's own figure)"),
        ("accounted_bytes", "accounted_bytes (a registered source's)"),
    ):
        acc = col(s, column).to_numpy(dtype=float) / MB
        high, low = _median(acc[at_most]), _median(acc[empty])
        if high is not None:
            v.accounted_growth_mb = high - (low or 0.0)
            v.accounted_per_vector_kb = v.accounted_growth_mb * 1024.0 / most
            v.accounted_basis = basis
            break
    if v.accounted_basis == "":
        v.accounted_basis = "the target reports no accounted bytes"
    v.drop = drop_metrics(data, cleanup, t, rss, count, v, tol_pct)
    return v


def drop_metrics(
    data: RunData,
    cleanup: StageSpan | None,
    t: np.ndarray,
    rss: np.ndarray,
    count: np.ndarray,
    v: VectorMetrics,
    tol_pct: float,
) -> DropMetrics:
    d = DropMetrics()
    if cleanup is None:
        d.finding = "no cleanup stage: nothing was dropped"
        return d
    name = adapter_requests(data).get("drop_namespace")
    if name is not None:
        d.drop_requests = sum(
            int(e.get("num_requests") or 0) - int(e.get("num_failures") or 0)
            for e in entries(data, name, shed=False)
        )
    pre = (t < cleanup.start) & np.isfinite(count)
    during = (t >= cleanup.start) & np.isfinite(count)
    if not pre.any() or not during.any():
        d.finding = "no stored-vector count before and during the cleanup stage"
        return d
    d.vectors_before = whole(count[pre][-1])
    final = float(count[during][-1])
    d.vectors_after = whole(final)
    assert d.vectors_before is not None and d.vectors_after is not None
    d.dropped = d.vectors_before - d.vectors_after
    if d.dropped <= 0:
        d.finding = f"the cleanup stage dropped none of the {d.vectors_before} stored vectors"
        return d
    after = during & (np.arange(len(t)) >= int(np.argmax(during & (count == final))))
    pre_rss = rss[pre & np.isfinite(rss)]
    d.rss_before_mb = _median(pre_rss[-few(len(pre_rss)) :]) if len(pre_rss) else None
    post_rss = rss[after & np.isfinite(rss)]
    d.rss_after_mb = _median(post_rss[-few(len(post_rss)) :]) if len(post_rss) else None
    if d.rss_before_mb is None or d.rss_after_mb is None:
        d.finding = f"{d.dropped} vectors dropped; no RSS sample on one side of the drop"
        return d
    d.measured = True
    d.observed_s = float(t[after][-1] - cleanup.start)
    d.returned_mb = d.rss_before_mb - d.rss_after_mb
    empty = v.rss_empty_mb
    if empty is not None and d.rss_before_mb > empty:
        d.returned_pct_of_growth = 100.0 * d.returned_mb / (d.rss_before_mb - empty)
    if empty is not None:
        d.came_back = bool(d.rss_after_mb <= empty * (1 + tol_pct / 100.0))
    d.finding = _finding(d, empty, tol_pct)
    return d


def _finding(d: DropMetrics, empty: float | None, tol_pct: float) -> str:
    assert d.rss_before_mb is not None and d.rss_after_mb is not None
    assert d.returned_mb is not None
    watched = f"within {d.observed_s or 0:.0f} s of the cleanup stage's start"
    if d.returned_mb < 0:
        moved = f"it rose {-d.returned_mb:.1f} MB"
    elif d.returned_pct_of_growth is not None:
        moved = f"{d.returned_mb:.1f} MB returned, {d.returned_pct_of_growth:.0f}% of the growth"
    else:
        moved = f"{d.returned_mb:.1f} MB returned"
    figures = (
        f"{d.dropped} vectors dropped at cleanup; RSS {d.rss_before_mb:.1f} MB before the drop, "
        f"{d.rss_after_mb:.1f} MB after ({moved})"
        + (f", {empty:.1f} MB with no vectors" if empty is not None else "")
    )
    if d.came_back is None:
        return f"{figures} (no empty-store level to compare with)"
    if d.came_back:
        return f"memory came back {watched}: {figures}"
    return (
        f"memory did NOT come back {watched} (not within {tol_pct:g}% of the level with no "
        f"vectors): {figures}. A finding about the target, not a failure of the run"
    )


def _median(values: np.ndarray) -> float | None:
    return median(values[np.isfinite(values)])


DEFINITIONS: dict[str, tuple[str, str, str]] = {
    "vectors.most_stored": (
        "most stored vectors",
        "",
        "highest stored_vectors before the cleanup stage (the adapter's count of the run's "
        "vectors on the target)",
    ),
    "vectors.rss_empty_mb": (
        "RSS with no vectors",
        "MB",
        "median RSS of the samples before the first stored vector",
    ),
    "vectors.rss_at_most_mb": (
        "RSS at the most vectors",
        "MB",
        "median RSS of the pre-cleanup samples holding the most vectors",
    ),
    "vectors.rss_per_vector_kb": (
        "RSS growth per stored vector",
        "KB",
        "(RSS at the most vectors - RSS with no vectors) / most stored vectors",
    ),
    "vectors.rss_slope_kb_per_vector": (
        "marginal RSS per stored vector",
        "KB",
        "Theil-Sen slope of RSS against stored_vectors over the pre-cleanup samples holding "
        "vectors (leaves out the target's one-off growth on its first requests)",
    ),
    "vectors.accounted_per_vector_kb": (
        "accounted growth per stored vector",
        "KB",
        "the same growth of the target's accounted bytes (vector tier, else accounted_bytes)",
    ),
    "vectors.drop.dropped": (
        "vectors dropped at cleanup",
        "",
        "stored vectors before the cleanup stage minus those at its end",
    ),
    "vectors.drop.drop_requests": (
        "namespace drops",
        "",
        "successful drop-namespace requests (the adapter's request name, locust.json)",
    ),
    "vectors.drop.rss_before_mb": (
        "RSS before the drop",
        "MB",
        "median RSS of the last samples before the cleanup stage (up to 5, half of them)",
    ),
    "vectors.drop.rss_after_mb": (
        "RSS after the drop",
        "MB",
        "median RSS of the last samples (up to 5) once the count fell to its final value",
    ),
    "vectors.drop.returned_pct_of_growth": (
        "growth returned by the drop",
        "%",
        "100 * (RSS before - after the drop) / (RSS before the drop - RSS with no vectors)",
    ),
    "vectors.drop.came_back": (
        "memory came back after the drop",
        "",
        "RSS after the drop <= RSS with no vectors * (1 + recovery_tolerance_pct / 100); "
        "a finding, never graded",
    ),
    "vectors.drop.observed_s": (
        "watched after the drop",
        "s",
        "from the start of the cleanup stage (where the conductor drops) to the last sample",
    ),
}
"""Label, unit and one-line definition of each figure above, keyed by its path in the
results' ``metrics``; the report prints them side by side."""
