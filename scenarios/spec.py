"""What a scenario declares, the helpers its stage plan is built with, and cleanup.

A scenario is a :class:`Scenario`: name, purpose, expected results (each an
:class:`Expect` the report judges as a check), the target endpoints it needs,
its Locust user classes, and a stage plan that is a pure function of
``(config, stress level, total seconds)``. Each stage declares its phase
(warm-up, stress, recovery) and what it injects, in its parameters: the report
reads them, it never guesses them from names.

No Locust import here, nor at the top of a scenario module: ``import locust``
monkey-patches the process with gevent, and after ``ssl`` was imported (by
``requests``, say) that patch ends in a RecursionError. So the CLI and the
tests read names, plans and expectations freely; a scenario's user classes are
made by its ``users()`` factory, which imports Locust on first call (inside a
Locust process, where Locust came first).

Every plan ends in a ``cleanup`` stage. Its parameters name the run's whole
data space on the target (``agents`` pool size, ``namespaces`` count, whether
faults were used): agent ids and namespaces are ``<run id>-agent-<k>`` and
``<run id>-ns-<k>`` for ``k`` below those counts, so one process can delete
everything a run created without asking anyone what they created.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import requests

from memstress.common.config import CheckSetting, Config, StressLevel
from memstress.common.target import TargetClient
from memstress.scenarios import target
from memstress.scenarios.api import AGENT_DELETE, NAMESPACE_DELETE, Endpoint
from memstress.shapes.plan import MIN_STAGE_S, PlanError, StageSpec, check_plan, plan_length, split

log = logging.getLogger(__name__)

PlanFn = Callable[[Config, StressLevel, float], list[StageSpec]]

CLEANUP_SHARE = 0.05
"""Share of the plan given to the final cleanup stage (between 1 and 10 s)."""

MAX_SPAWN_RATE = 100.0
"""Locust warns above this; every stage reaches its users within about a second."""


_CAPABILITY_BY_PREFIX = (
    ("/agents", target.CONVERSATION),
    ("/vectors", target.VECTORS),
    ("/memory/optimize", target.OPTIMIZE),
    ("/memory/cycle", target.CYCLE),
    ("/memory/stats", target.STATS),
    ("/faults", target.FAULTS),
)


def capability_of(endpoint: Endpoint) -> str:
    """The target capability an endpoint of the memstress API stands for."""
    for prefix, capability in _CAPABILITY_BY_PREFIX:
        if endpoint.path.startswith(prefix):
            return capability
    raise ValueError(f"{endpoint.name}: no capability for this endpoint")  # pragma: no cover


def agent_id(run_id: str, k: int) -> str:
    return f"{run_id}-agent-{k}"


def namespace(run_id: str, k: int) -> str:
    return f"{namespace_prefix(run_id)}{k}"


def namespace_prefix(run_id: str) -> str:
    """What every vector namespace of the run starts with."""
    return f"{run_id}-ns-"


PHASES = ("warmup", "stress", "recovery")
"""What a stage is for: the report measures recovery after the last ``stress`` stage."""

INJECTS = ("leak",)
"""What a stage may inject into the target on purpose. A leak detected before the first
stage that injects one is a false alarm; one detected in a scenario that injects
none is a finding about the target."""


@dataclass(frozen=True)
class Expect:
    """One expectation of a scenario: a check the report judges (see ``reports.checks``).

    ``text`` names the bound as ``{bound}``. The bound and whether the check is
    required come from the config's ``checks`` section; a scenario the config does
    not list (one added outside the ten) is judged on the defaults declared here.
    """

    id: str
    text: str
    bound: float | None = None
    required: bool = True

    def setting(self, config: Config, scenario: str) -> CheckSetting:
        """The config's bound and requirement for this check, else the declared ones."""
        return config.checks.of(scenario).get(self.id, CheckSetting(self.required, self.bound))

    def describe(self, bound: float | None) -> str:
        return self.text.format(bound="?" if bound is None else f"{bound:g}")


@dataclass(frozen=True)
class Scenario:
    """One scenario: the design's ten or one added to the registry."""

    name: str
    purpose: str
    expected: tuple[Expect, ...]  # what the verdict checks (reports.checks judges each)
    endpoints: tuple[Endpoint, ...]  # every endpoint its users send to
    users: Callable[[], tuple[type, ...]]  # the module's cached factory of its Locust users
    plan: PlanFn
    seed_key: str | None = None
    """The scenario's key under ``test_duration`` in the config, which ``--scenario``
    also accepts (the seed's name for it); None for a scenario with no key there."""
    default_s: float = 300.0
    """Length of a run without ``--duration`` when the config has no ``test_duration``
    for this scenario (a scenario with no ``seed_key``)."""
    needs: frozenset[str] | None = None
    """Target capabilities (``scenarios.target``) it cannot run without; None: those of
    its ``endpoints`` that are not ``optional`` (a scenario that speaks the HTTP API)."""
    optional: frozenset[str] = frozenset()
    """Capabilities it uses where the adapter has them, and skips (with an event) where not."""

    @property
    def required(self) -> frozenset[str]:
        """The capabilities an adapter must have for this scenario to run."""
        if self.needs is not None:
            return self.needs
        return frozenset(capability_of(e) for e in self.endpoints) - self.optional

    @property
    def user_classes(self) -> tuple[type, ...]:
        """The Locust user classes (all run in every stage); importing Locust happens here."""
        return self.users()

    def default_duration(self, config: Config) -> float:
        """Seconds of a run without ``--duration``: the config's, else ``default_s``."""
        if self.seed_key is None:
            return self.default_s
        return config.test_duration.get(self.seed_key, self.default_s)

    def build_plan(self, config: Config, stress: StressLevel, duration_s: float) -> list[StageSpec]:
        """The checked stage plan; a one-line :class:`PlanError` when it cannot be played."""
        try:
            plan = self.plan(config, stress, duration_s)
            check_plan(plan)
        except PlanError as exc:
            need = self.shortest_duration(config, stress)
            raise PlanError(
                f"--duration: {duration_s:g} s is too short for {self.name} ({exc}; "
                f"valid: {need:g} s or more)"
            ) from None
        if abs(plan_length(plan) - duration_s) > 1e-6:  # pragma: no cover - a bug in a plan
            raise PlanError(
                f"{self.name}: the plan lasts {plan_length(plan):g} s, not {duration_s:g}"
            )
        return plan

    def shortest_duration(self, config: Config, stress: StressLevel) -> float:
        """The shortest total (to 0.1 s) whose plan can be played."""

        def playable(tenths: int) -> bool:
            try:
                check_plan(self.plan(config, stress, tenths / 10))
            except PlanError:
                return False
            return True

        lo, hi = 1, 10
        while not playable(hi):
            lo, hi = hi, hi * 2
            if hi > 10_000_000:  # pragma: no cover - a plan no duration can play
                raise PlanError(f"{self.name}: no duration gives a playable plan")
        while lo < hi:
            mid = (lo + hi) // 2
            if playable(mid):
                hi = mid
            else:
                lo = mid + 1
        return hi / 10


def checks_text(scenario: Scenario, config: Config) -> str:
    """What the verdict checks for a scenario, in words: each expectation with its bound,
    '(info)' where it is not required. The README's scenario table shows exactly this."""
    parts = []
    for e in scenario.expected:
        setting = e.setting(config, scenario.name)
        parts.append(e.describe(setting.bound) + ("" if setting.required else " (info)"))
    return "; ".join(parts)


@dataclass(frozen=True)
class Part:
    """A stage before the cleanup: its share of the time, users and parameters."""

    name: str
    weight: float
    users: int
    params: Mapping[str, Any] = field(default_factory=dict)
    phase: str = "stress"  # one of PHASES
    injects: str | None = None  # one of INJECTS, or nothing

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise PlanError(f"stage {self.name}: phase {self.phase!r} (valid: {', '.join(PHASES)})")
        if self.injects is not None and self.injects not in INJECTS:
            raise PlanError(
                f"stage {self.name}: injects {self.injects!r} (valid: {', '.join(INJECTS)})"
            )

    def declared(self) -> dict[str, Any]:
        """The stage parameters that declare what the stage is for (read by the reports)."""
        out: dict[str, Any] = {"phase": self.phase}
        if self.injects:
            out["injects"] = self.injects
        return out


def spawn_rate_for(users: int) -> float:
    """Start or stop ``users`` within about a second: Locust's master blocks its shape
    while it ramps, and the rate applies to stopping users too."""
    return float(min(MAX_SPAWN_RATE, max(1, users)))


def cleanup_seconds(total_s: float) -> float:
    return min(10.0, max(MIN_STAGE_S, CLEANUP_SHARE * total_s))


def staged_plan(
    total_s: float,
    parts: Sequence[Part],
    *,
    common: Mapping[str, Any],
    conductors: int = 1,
    faults: bool = False,
) -> list[StageSpec]:
    """The parts, sharing ``total_s`` by weight, then a ``cleanup`` stage.

    ``common`` parameters go into every stage (the data space: ``agents``,
    ``namespaces``). In the cleanup stage only the ``conductors`` (fixed-count
    users, spawned first and so stopped last) keep running; one of them deletes
    the data space and, with ``faults``, resets the target's faults.
    """
    tail = cleanup_seconds(total_s)
    if total_s - tail <= 0:
        raise PlanError(f"{total_s:g} s leaves no time before the cleanup stage")
    durations = split(total_s - tail, [p.weight for p in parts])
    stages, before = [], 0
    for p, d in zip(parts, durations, strict=True):
        stages.append(
            StageSpec(
                p.name,
                d,
                p.users,
                spawn_rate_for(max(p.users, before)),
                {**common, **p.params, **p.declared()},
            )
        )
        before = p.users
    cleanup = {**common, "cleanup": True, "reset_faults": faults, "phase": "recovery"}
    stages.append(StageSpec("cleanup", tail, conductors, spawn_rate_for(before), cleanup))
    return stages


def sweep_run_data(
    host: str, run_id: str, params: Mapping[str, Any], *, deadline_s: float = 10.0
) -> dict[str, Any]:
    """Delete a run's data space on the target once (the master's backstop at test stop).

    Idempotent: a 404 means already gone. Bounded: stops at ``deadline_s`` or at
    the first connection error (a target that is gone needs no cleanup).
    """
    done: dict[str, Any] = {"agents": 0, "namespaces": 0, "faults_reset": False, "complete": False}
    client = TargetClient(host, timeout=2.0)
    end = time.monotonic() + deadline_s
    paths = [
        AGENT_DELETE.url(id=agent_id(run_id, k)) for k in range(int(params.get("agents", 0)))
    ] + [
        NAMESPACE_DELETE.url(ns=namespace(run_id, k))
        for k in range(int(params.get("namespaces", 0)))
    ]
    try:
        for path in paths:
            if time.monotonic() > end:
                return done
            r = client.delete(path)
            if r.status_code < 300:
                done["agents" if path.startswith("/agents/") else "namespaces"] += 1
        if params.get("reset_faults"):
            done["faults_reset"] = client.reset_faults()
        done["complete"] = True
    except requests.RequestException as exc:
        log.warning("cleanup of run %s stopped: %s", run_id, type(exc).__name__)
    finally:
        client.close()
    return done


def pressure_plan(
    total_s: float,
    parts: Sequence[Part],
    *,
    tolerance: float,
    common: Mapping[str, Any],
) -> list[StageSpec]:
    """``staged_plan`` with faults, plus on each stage with a ``pressure_target`` how
    long its ballast must outlive it (``hold_after_s``: the later pressure stages)."""
    stages = staged_plan(total_s, parts, common={**common, "tolerance": tolerance}, faults=True)
    out: list[StageSpec] = []
    for i, s in enumerate(stages):
        if "pressure_target" in s.params:
            after = 0.0
            for later in stages[i + 1 :]:
                if "pressure_target" not in later.params:
                    break
                after += later.duration_s
            s = replace(s, params={**s.params, "hold_after_s": round(after, 3)})
        out.append(s)
    return out


def with_params(stage: StageSpec, **params: Any) -> StageSpec:
    """The stage with more parameters."""
    return replace(stage, params={**stage.params, **params})
