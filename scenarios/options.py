"""The suite's Locust options (``--scenario``, ``--stress-level``, ...) read into settings.

:func:`resolve_settings` turns parsed options into a checked
:class:`~common.context.RunSettings`, or raises :class:`~common.config.ConfigError`
with one line that names the option and lists what is valid. It reads the
options by attribute and accepts strings, because the web UI hands values back
as typed text and a worker gets the master's options as plain data.

It lives beside the registry because a scenario's name, its seed key and its
default length are the registry's to say.
"""

from __future__ import annotations

import math
from typing import Any

from memstress.common.config import ConfigError, load_config
from memstress.common.context import RunSettings
from memstress.common.target import metrics_url
from memstress.scenarios.registry import check_config, get_scenario


def _text(value: Any) -> str | None:
    """None for an option left empty (None or a blank web-form field)."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _number(option: str, value: Any, valid: str, *, lo: float, hi: float = math.inf) -> float:
    """A number in (lo, hi], or a one-line error."""
    text = _text(value)
    try:
        number = float(text) if text is not None else math.nan
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and lo < number <= hi):
        raise ConfigError(f"{option}: {value!r} is not valid (valid: {valid})")
    return number


def _whole(option: str, value: Any, valid: str) -> int:
    try:
        return int(_text(value) or "")
    except ValueError:
        raise ConfigError(f"{option}: {value!r} is not a whole number (valid: {valid})") from None


def resolve_settings(options: Any) -> RunSettings:
    """Check the custom options (``None`` options: all defaults) against the config."""

    def get(name: str) -> Any:
        return getattr(options, name, None)

    try:
        scenario = get_scenario(_text(get("scenario")) or "baseline")
    except ConfigError as exc:
        raise ConfigError(f"--scenario: {exc}") from None
    config = check_config(load_config(_text(get("memstress_config"))))
    levels = config.stress_levels
    level_raw = get("stress_level")
    level = (
        levels.default_level
        if _text(level_raw) is None
        else _whole("--stress-level", level_raw, f"0 to {levels.count() - 1}")
    )
    stress = config.stress(level)
    duration_raw = get("duration")
    base = (
        scenario.default_duration(config)
        if _text(duration_raw) is None
        else _number("--duration", duration_raw, "seconds above 0, e.g. 60", lo=0)
    )
    scale_raw = get("duration_scale")
    scale = (
        1.0
        if _text(scale_raw) is None
        else _number("--duration-scale", scale_raw, "a number above 0, e.g. 0.2", lo=0)
    )
    pid_raw = get("target_pid")
    pid = None if _text(pid_raw) is None else _whole("--target-pid", pid_raw, "a process id")
    if pid is not None and pid <= 0:
        raise ConfigError(f"--target-pid: {pid_raw!r} is not valid (valid: a process id above 0)")
    interval_raw = get("monitor_interval")
    interval = (
        config.monitor.interval
        if _text(interval_raw) is None
        else _number("--monitor-interval", interval_raw, "0.05 to 3600 seconds", lo=0, hi=3600)
    )
    if interval < 0.05:
        raise ConfigError(
            f"--monitor-interval: {interval_raw!r} is not valid (valid: 0.05 to 3600 seconds)"
        )
    allow = config.safety.allow_remote_targets or _flag(get("allow_remote_target"))
    adapter = _text(get("adapter")) or "memstress"
    from memstress.scenarios.adapters import names as adapter_names

    if adapter not in adapter_names():
        valid = ", ".join(adapter_names())
        raise ConfigError(f"--adapter: unknown adapter {adapter!r} (valid: {valid})")
    return RunSettings(
        scenario.name,
        config,
        stress,
        base * scale,
        scale,
        pid,
        interval,
        allow,
        metrics_url(get("metrics_url"), get("metrics_metric"), get("metrics_labels")),
        adapter=adapter,
        adapter_config=_text(get("adapter_config")),
    )


def _flag(value: Any) -> bool:
    """A store_true option: a bool, or text from an env var or the web UI form."""
    if isinstance(value, bool):
        return value
    return (_text(value) or "").lower() in ("1", "true", "yes", "on")
