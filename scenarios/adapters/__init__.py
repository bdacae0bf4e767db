"""Target adapters by name (``--adapter NAME``): one module each, a line in :data:`ADAPTERS`.

An adapter (:class:`Adapter`) says what it can do before any connection is
made (``capabilities``), checks the ``--host`` it is given, waits for the
target to be ready, makes one :class:`~scenarios.target.Target` per Locust user
(``connect``) and deletes a run's data once more at test stop (``sweep``, the
master's backstop after the conductor's cleanup stage). An adapter may also say
what one target lacks although the adapter could give it (``target_lacks``, see
:func:`check_target`): a Redis without ``maxmemory`` has no pressure to drive.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from memstress.common.config import ConfigError
from memstress.scenarios.target import Target, describe, refusal

if TYPE_CHECKING:
    import requests

DEFAULT = "memstress"

ADAPTERS: dict[str, str] = {
    "memstress": "memstress.scenarios.adapters.memstress:MemstressAdapter",
    "redis": "memstress.scenarios.adapters.redis_lists:RedisAdapter",
    "http-map": "memstress.scenarios.adapters.http_map:HttpMapAdapter",
    "chroma": "memstress.scenarios.adapters.chroma:ChromaAdapter",
}
"""Adapter name -> ``module:class``; the class is made with the ``--adapter-config`` path."""


class Adapter(Protocol):
    name: str
    capabilities: frozenset[str]
    schemes: tuple[str, ...]  # the --host URL schemes it speaks
    health_path: str | None  # an HTTP path the monitor may poll (None: none to poll)
    request_names: Mapping[str, str]  # operation (Target method) -> its Locust request name

    def connect(self, user: Any) -> Target: ...
    def wait_ready(self, host: str, deadline_s: float) -> None:
        """Return once the target answers; raise TargetError at the deadline."""
        ...

    def sweep(self, host: str, run_id: str, params: Mapping[str, Any]) -> dict[str, Any]: ...


class CountsVectors(Protocol):
    """An adapter that can count the vectors its target holds for a run."""

    def count_vectors(
        self, session: requests.Session, host: str, run_id: str, timeout: float
    ) -> int:
        """Vectors (stored items) in the run's namespaces now; TargetError when the target
        cannot say. Called by the monitor on the master, every sample."""
        ...


class ChecksTarget(Protocol):
    """An adapter that can tell, before any load, what one target lacks."""

    def target_lacks(self, host: str) -> dict[str, str]:
        """Capability -> why this target cannot give it; {} when it can, or when it does
        not answer (``wait_ready`` reports that)."""
        ...


def vector_counter(adapter: Any) -> CountsVectors | None:
    """The adapter as a :class:`CountsVectors`, or None when it cannot count vectors."""
    return adapter if callable(getattr(adapter, "count_vectors", None)) else None


def names() -> tuple[str, ...]:
    return tuple(ADAPTERS)


def load_adapter(name: str | None, config_path: str | None = None) -> Adapter:
    """The adapter called ``name`` (default memstress); a one-line ConfigError otherwise."""
    name = (name or "").strip() or DEFAULT
    where = ADAPTERS.get(name)
    if where is None:
        raise ConfigError(f"--adapter: unknown adapter {name!r} (valid: {', '.join(ADAPTERS)})")
    module, cls = where.split(":")
    factory = getattr(importlib.import_module(module), cls)
    adapter: Adapter = factory(config_path)
    return adapter


def runnable(adapter: Adapter, lacking: frozenset[str] = frozenset()) -> list[str]:
    """The registered scenarios this adapter can run (without ``lacking``), in registry order."""
    from memstress.scenarios.registry import all_scenarios

    has = adapter.capabilities - lacking
    return [s.name for s in all_scenarios() if s.required <= has]


def check_scenario(scenario: Any, adapter: Adapter) -> None:
    """A one-line ConfigError when ``scenario`` needs what ``adapter`` lacks."""
    problem = refusal(scenario, adapter.name, adapter.capabilities, runnable(adapter))
    if problem:
        raise ConfigError(problem)


def check_target(scenario: Any, adapter: Adapter, host: str) -> None:
    """A one-line ConfigError when the target at ``host`` lacks what ``scenario`` needs
    although the adapter has it (asked of adapters with ``target_lacks``; one short read)."""
    ask = getattr(adapter, "target_lacks", None)
    if not callable(ask) or not host:
        return
    lacks: dict[str, str] = ask(host)
    missing = sorted(set(scenario.required) & set(lacks))
    if not missing:
        return
    why = "; ".join(lacks[c] for c in missing)
    would = ", ".join(runnable(adapter, frozenset(lacks))) or "none"
    raise ConfigError(
        f"--adapter {adapter.name}: scenario {scenario.name} needs {describe(missing)}, which "
        f"the target {host} cannot give: {why} (scenarios that would run there: {would})"
    )


def capability_table() -> str:
    """The README's adapter x scenario table (Markdown), from what each declares."""
    from memstress.scenarios.registry import all_scenarios

    fixed = [load_adapter("memstress"), load_adapter("redis"), load_adapter("chroma")]
    head = "| scenario | needs | optional | memstress | redis | chroma | http-map |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for s in all_scenarios():
        cells = []
        for adapter in fixed:
            missing = sorted(s.required - adapter.capabilities)
            cells.append("runs" if not missing else "refused: no " + ", ".join(missing))
        needs = ", ".join(sorted(s.required))
        optional = ", ".join(sorted(s.optional)) or "-"
        mapped = f"runs if the mapping has {needs}"
        lines.append(f"| `{s.name}` | {needs} | {optional} | {' | '.join(cells)} | {mapped} |")
    return "\n".join(lines)
