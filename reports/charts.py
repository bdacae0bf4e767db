"""Render: PNG charts of a run folder's time series into ``stress_test_charts/``.

matplotlib is used through its object API on an explicit Agg canvas: no
pyplot, no global backend switch, no display. Each chart is skipped (not
drawn empty) when its data is missing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from memstress.reports.collect import CYCLE_REQUEST, SHED_TYPE, RunData
from memstress.reports.metrics.base import MB, budget_mb
from memstress.reports.metrics.pressure import pressure_series

DPI = 100
SIZE = (11.0, 4.2)
MAX_STAGE_LABELS = 16
MAX_MARKERS = 1500


def _figure() -> tuple[Figure, Axes]:
    fig = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.grid(True, alpha=0.3)
    return fig, ax


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    return path


def _minutes(t: pd.Series | np.ndarray, t0: float) -> np.ndarray:
    return (np.asarray(t, dtype=float) - t0) / 60.0


def _stage_bands(ax: Axes, data: RunData, t0: float, t_end: float) -> None:
    st = data.stages
    if st.empty:
        return
    starts = _minutes(st["time"], t0)
    ends = [*starts[1:], max((t_end - t0) / 60.0, starts[-1])]
    label = len(st) <= MAX_STAGE_LABELS
    for i, (a, b, name) in enumerate(zip(starts, ends, st["name"], strict=True)):
        if i % 2 == 0:
            ax.axvspan(a, b, color="tab:gray", alpha=0.08, lw=0)
        ax.axvline(a, color="tab:gray", lw=0.6, alpha=0.5)
        if label:
            ax.text(
                a,
                1.0,
                f" {name}",
                transform=ax.get_xaxis_transform(),
                va="top",
                ha="left",
                fontsize=7,
                rotation=90 if len(st) > 6 else 0,
                color="dimgray",
                clip_on=True,
            )


def _events(ax: Axes, data: RunData, t0: float) -> None:
    ev = data.events
    styles = {
        "leak_detected": ("tab:red", "-", "leak detected"),
        "leak_cleared": ("tab:green", ":", "leak cleared"),
        "emergency_stop": ("black", "--", "emergency stop"),
        "target_lost": ("black", "-.", "target lost"),
    }
    for kind, (color, ls, label) in styles.items():
        times = _minutes(ev.loc[ev["kind"] == kind, "time"], t0)
        for i, x in enumerate(times):
            ax.axvline(x, color=color, ls=ls, lw=1.2, label=label if i == 0 else None)


def _legend(ax: Axes) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def memory_chart(data: RunData, t0: float, t_end: float, path: Path) -> Path | None:
    s = data.samples
    rss = pd.to_numeric(s["rss_bytes"], errors="coerce")
    if rss.notna().sum() == 0:
        return None
    fig, ax = _figure()
    x = _minutes(s["time"], t0)
    _stage_bands(ax, data, t0, t_end)
    ax.plot(x, rss / MB, color="tab:blue", lw=1.4, label="target RSS")
    for col, color, label in (
        ("ballast_bytes", "tab:orange", "ballast"),
        ("unaccounted_bytes", "tab:purple", "unaccounted"),
    ):
        v = pd.to_numeric(s[col], errors="coerce")
        if v.notna().any() and (v > 0).any():
            ax.plot(x, v / MB, color=color, lw=0.8, alpha=0.8, label=label)
    b = budget_mb(data)
    title = "Target memory with stages, optimizations and leak events"
    if b and float(rss.max()) / MB >= 0.5 * b:
        ax.axhline(b, color="tab:red", ls="--", lw=0.8, alpha=0.6, label=f"budget {b:.0f} MB")
    elif b:  # far below the budget: a budget line would flatten the curve
        title += f" (budget {b:.0f} MB)"
    opt = pd.to_numeric(s["optimizations_total"], errors="coerce")
    ran = (opt.diff() > 0).to_numpy()
    if ran.any():
        idx = np.nonzero(ran)[0]
        if len(idx) > MAX_MARKERS:
            idx = idx[:: len(idx) // MAX_MARKERS + 1]
        # A rug along the bottom: one tick per sample in which optimizations ran.
        ax.plot(
            x[idx],
            np.full(len(idx), 0.015),
            "|",
            transform=ax.get_xaxis_transform(),
            color="tab:green",
            ms=8,
            label="optimization ran",
        )
    _events(ax, data, t0)
    ax.set_xlabel("minutes since start")
    ax.set_ylabel("MB")
    ax.set_title(title)
    _legend(ax)
    return _save(fig, path)


def _history_rows(data: RunData, name: str) -> pd.DataFrame:
    h = data.history
    return h[(h["Name"] == name) & (h["Type"] != SHED_TYPE)]


def latency_chart(data: RunData, t0: float, t_end: float, path: Path) -> Path | None:
    rows = _history_rows(data, CYCLE_REQUEST)
    title = f"{CYCLE_REQUEST} response time (Locust rolling window)"
    if rows.empty:
        rows = _history_rows(data, "Aggregated")
        title = "response time of all requests (Locust rolling window)"
    if rows.empty:
        return None
    fig, ax = _figure()
    _stage_bands(ax, data, t0, t_end)
    x = _minutes(rows["Timestamp"], t0)
    drawn = False
    # Locust's rolling-window percentiles are 0 until its window fills (short runs);
    # the cumulative mean is there from the first request.
    for col, color, label in (
        ("50%", "tab:blue", "p50"),
        ("95%", "tab:orange", "p95"),
        ("99%", "tab:red", "p99"),
        ("Total Average Response Time", "tab:gray", "mean since start"),
    ):
        v = rows[col].where(rows[col] > 0)
        if v.notna().any():
            ax.plot(x, v.to_numpy(dtype=float), color=color, lw=1.0, label=label)
            drawn = True
    if not drawn:
        return None
    ax.set_xlabel("minutes since start")
    ax.set_ylabel("ms")
    ax.set_title(title)
    _legend(ax)
    return _save(fig, path)


def throughput_chart(data: RunData, t0: float, t_end: float, path: Path) -> Path | None:
    h = data.history
    if h.empty:
        return None
    per_name = h[h["Name"] != "Aggregated"]
    fig, ax = _figure()
    _stage_bands(ax, data, t0, t_end)
    if per_name.empty:
        agg = h[h["Name"] == "Aggregated"]
        ts = agg["Timestamp"]
        ok, fail, shed = agg["Requests/s"], agg["Failures/s"], None
    else:
        shed_mask = per_name["Type"] == SHED_TYPE
        ok_rows = per_name[~shed_mask].groupby("Timestamp")[["Requests/s", "Failures/s"]].sum()
        shed_rows = per_name[shed_mask].groupby("Timestamp")["Requests/s"].sum()
        ts = pd.Series(ok_rows.index.to_numpy(dtype=float))
        ok, fail = ok_rows["Requests/s"], ok_rows["Failures/s"]
        shed = shed_rows if len(shed_rows) else None
    ax.plot(
        _minutes(ts, t0), ok.to_numpy(dtype=float), color="tab:blue", lw=1.0, label="requests/s"
    )
    ax.plot(
        _minutes(ts, t0), fail.to_numpy(dtype=float), color="tab:red", lw=1.0, label="failures/s"
    )
    if shed is not None:
        ax.plot(
            _minutes(shed.index.to_numpy(dtype=float), t0),
            shed.to_numpy(dtype=float),
            color="tab:orange",
            lw=1.0,
            label="shed/s",
        )
    ax.set_xlabel("minutes since start")
    ax.set_ylabel("per second")
    users = h[h["Name"] == "Aggregated"]
    if users["User Count"].notna().any():
        ax2 = ax.twinx()
        ax2.plot(
            _minutes(users["Timestamp"], t0),
            users["User Count"].to_numpy(dtype=float),
            color="tab:gray",
            lw=1.0,
            ls="--",
            label="users",
        )
        ax2.set_ylabel("users")
        ax2.set_ylim(bottom=0)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper left", bbox_to_anchor=(1.08, 1.0))
    else:
        _legend(ax)
    ax.set_title("Throughput, failures, shed answers and users")
    return _save(fig, path)


def pressure_chart(data: RunData, t0: float, t_end: float, path: Path) -> Path | None:
    s = data.samples
    p, source = pressure_series(data)
    series = [(p, f"pressure ({source})", "tab:red")] if source else []
    for col, label, color in (
        ("psi_some_avg10", "PSI some avg10", "tab:orange"),
        ("psi_full_avg10", "PSI full avg10", "tab:brown"),
        ("host_percent", "host memory %", "tab:gray"),
    ):
        v = pd.to_numeric(s[col], errors="coerce")
        if v.notna().any():
            series.append((v, label, color))
    if not series:
        return None
    fig, ax = _figure()
    _stage_bands(ax, data, t0, t_end)
    x = _minutes(s["time"], t0)
    for v, label, color in series:
        ax.plot(x, v.to_numpy(dtype=float), color=color, lw=1.0, label=label)
    for level, name in ((80, "aggressive"), (95, "emergency")):
        ax.axhline(level, color="tab:red", ls=":", lw=0.7, alpha=0.6)
        ax.text(
            0,
            level,
            f" {name}",
            fontsize=7,
            color="tab:red",
            va="bottom",
            transform=ax.get_yaxis_transform(),
        )
    ax.set_ylim(
        0, max(105.0, float(np.nanmax([np.nanmax(v.to_numpy(dtype=float)) for v, _, _ in series])))
    )
    ax.set_xlabel("minutes since start")
    ax.set_ylabel("%")
    ax.set_title("Memory pressure")
    _legend(ax)
    return _save(fig, path)


def workers_chart(data: RunData, t0: float, t_end: float, path: Path) -> Path | None:
    w = data.workers
    if w.empty:
        return None
    fig, ax = _figure()
    for wid, g in w.groupby("worker_id"):
        ax.plot(
            _minutes(g["time"], t0),
            g["cpu_percent"].to_numpy(dtype=float),
            lw=1.0,
            label=f"{wid} CPU %",
        )
    ax.set_xlabel("minutes since start")
    ax.set_ylabel("CPU %")
    ax.set_title("Load generator workers")
    _legend(ax)
    return _save(fig, path)


CHARTS = (
    ("memory.png", memory_chart),
    ("latency.png", latency_chart),
    ("throughput.png", throughput_chart),
    ("pressure.png", pressure_chart),
    ("workers.png", workers_chart),
)


def render_charts(
    data: RunData, out_dir: Path, t0: float, t_end: float
) -> tuple[list[Path], list[str]]:
    """Draw every chart the data allows: (files written, one line per chart that failed).

    A chart that fails to draw is reported, not raised: the JSON is already written
    and the Markdown report should still be.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.png"):
        old.unlink()
    written: list[Path] = []
    errors: list[str] = []
    for name, fn in CHARTS:
        try:
            p = fn(data, t0, t_end, out_dir / name)
        except Exception as exc:  # a plotting bug must not cost the report
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        if p is not None:
            written.append(p)
    return written, errors
