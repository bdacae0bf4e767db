"""The seed's extension point: ``MemoryStressTest`` with ``test_<name>`` methods.

A scenario written the seed's way is a subclass in a module of ``scenarios/``
(listed in ``MODULES`` of :mod:`scenarios.registry`, like any scenario module)::

    class CacheTests(MemoryStressTest):
        \"\"\"Agents that write and read back at once.\"\"\"

        users = 4  # users in the stress stage
        duration_s = 60  # length without --duration

        def test_write_read(self) -> None:
            agent = self.agent(self.rng.randrange(self.agents))
            self.call(api.MESSAGE_ADD, {"role": "user", "content": "hi"}, id=agent)
            self.call(api.CONTEXT, query={"query": "hi", "k": 3}, id=agent)

Each ``test_<name>`` method becomes the scenario ``<name>``: it shows in
``--list-scenarios``, runs with ``--scenario <name>`` and in
``--comprehensive``. Its plan is a ``warmup`` stage (one user), a ``stress``
stage (``users`` users) and the usual ``cleanup``; every user calls the method
once per task, between ``wait_time`` pauses, with the helpers of
:class:`scenarios.base.MemstressUser` (``call``, ``agent``, ``namespace``,
``rng``, ``stage``, ``client``). Methods are plain ``def``: Locust runs them in
gevent, not asyncio.
"""

from __future__ import annotations

import functools
import inspect
from typing import TYPE_CHECKING, Any, ClassVar

from memstress.common.config import Config, StressLevel
from memstress.scenarios import api
from memstress.scenarios.spec import Endpoint, Expect, Part, PlanFn, Scenario, staged_plan
from memstress.shapes.plan import StageSpec

if TYPE_CHECKING:
    from memstress.scenarios.base import MemstressUser

PREFIX = "test_"


class MemoryStressTest:
    """Base of a scenario written the seed's way; see the module doc."""

    users: ClassVar[int] = 4
    """Users in the stress stage (the warm-up runs one)."""
    duration_s: ClassVar[float] = 120.0
    """Length of a run without ``--duration``."""
    agents: ClassVar[int] = 8
    """Agents in the run's data space (deleted in the cleanup stage)."""
    namespaces: ClassVar[int] = 1
    """Vector namespaces in the run's data space."""
    expected: ClassVar[tuple[Expect | str, ...]] = ()  # words alone are shown, not judged
    """What the verdict checks, in words."""
    endpoints: ClassVar[tuple[Endpoint, ...]] = (*api.AGENT_TRAFFIC, *api.CLEANUP)
    """Every endpoint the tests call."""
    wait_time: ClassVar[tuple[float, float]] = (0.2, 0.8)
    """Seconds between two calls of a test method, drawn uniformly."""

    def __init__(self, user: MemstressUser) -> None:
        self.user = user

    def __getattr__(self, name: str) -> Any:
        # The user's helpers (call, agent, namespace, rng, stage, client ...).
        return getattr(self.user, name)


def tests_of(cls: type[MemoryStressTest]) -> list[str]:
    """The ``test_<name>`` methods of ``cls``, in definition order (bases first)."""
    found: dict[str, None] = {}
    for klass in reversed(cls.__mro__):
        for attr, value in vars(klass).items():
            if attr.startswith(PREFIX) and callable(value):
                if inspect.iscoroutinefunction(value):
                    raise TypeError(
                        f"{cls.__name__}.{attr} is async (valid: a plain def; Locust runs "
                        "the tests in gevent)"
                    )
                found[attr] = None
    return list(found)


def scenarios_of(cls: type[MemoryStressTest]) -> list[Scenario]:
    """One scenario per ``test_<name>`` method of ``cls``."""
    return [_scenario(cls, method) for method in tests_of(cls)]


def _scenario(cls: type[MemoryStressTest], method: str) -> Scenario:
    name = method.removeprefix(PREFIX)
    doc = inspect.getdoc(getattr(cls, method)) or inspect.getdoc(cls) or f"{cls.__name__}.{method}"
    return Scenario(
        name=name,
        purpose=doc.strip().splitlines()[0],
        expected=tuple(e if isinstance(e, Expect) else Expect("", e) for e in cls.expected),
        endpoints=tuple(dict.fromkeys(cls.endpoints)),
        users=functools.cache(lambda: (_user_class(cls, method),)),
        plan=_plan_of(cls),
        default_s=float(cls.duration_s),
    )


def _plan_of(cls: type[MemoryStressTest]) -> PlanFn:
    def plan(config: Config, stress: StressLevel, total_s: float) -> list[StageSpec]:
        return staged_plan(
            total_s,
            [Part("warmup", 1, 1, phase="warmup"), Part("stress", 4, max(1, cls.users))],
            common={"agents": cls.agents, "namespaces": cls.namespaces},
            conductors=0,
        )

    return plan


def _user_class(cls: type[MemoryStressTest], method: str) -> type:
    from locust import between, task

    from memstress.scenarios.base import MemstressUser

    def run_test(self: Any) -> None:
        if self.active():
            getattr(self._test, method)()

    def on_start(self: Any) -> None:
        self._test = cls(self)

    name = "".join(p.title() for p in method.removeprefix(PREFIX).split("_")) + "User"
    user: type = type(
        name,
        (MemstressUser,),
        {
            "__module__": cls.__module__,
            "__doc__": f"Runs {cls.__name__}.{method} once per task.",
            "wait_time": between(*cls.wait_time),
            "on_start": on_start,
            "run_test": task(run_test),
        },
    )
    return user
