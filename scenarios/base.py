"""Abstract Locust users the scenarios build on.

- :class:`MemstressUser`: a FastHttpUser with the target API helpers, shed
  handling and run-id namespacing; every request goes through :meth:`call`.
- :class:`ConductorUser`: exactly one per run (``fixed_count = 1``, across all
  workers), for what must not race: a management cycle every second, a leak
  at a set rate, a pressure controller, the final cleanup.
- :class:`AgentTrafficUser`: the platform's everyday traffic (messages, context
  reads, searches, a few document upserts).

Users read what to do from the stage now playing, ``environment.memstress.stage``
(set by the shape on the master and by the stage broadcast on workers), so
the same user classes run in every stage of a scenario.

**Shedding.** A 429 or 503 answer *with* a ``Retry-After`` header is the target
protecting itself, not an error: the request is marked a success, and a second
request event of type ``SHED`` (same name, response length 0) is fired so the
reports can count shed answers apart. Anything else unexpected is a failure
whose message names the status and the endpoint.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import gevent
from locust import between, constant, task
from locust.contrib.fasthttp import FastHttpUser

from memstress.scenarios import api
from memstress.scenarios.adapters import Adapter, load_adapter
from memstress.scenarios.api import Endpoint
from memstress.scenarios.control import ballast_step
from memstress.scenarios.spec import agent_id, namespace
from memstress.scenarios.target import (
    CAPABILITIES,
    CONVERSATION,
    FAULTS,
    PRESSURE,
    VECTORS,
    Reply,
    Target,
)

if TYPE_CHECKING:
    from memstress.common.context import RunContext, Stage

IDLE_S = 0.2
"""How often a user with nothing to do looks at the stage again."""


class MemstressUser(FastHttpUser):
    """Base of every scenario user: API calls, shedding, namespacing, stage access."""

    abstract = True
    connection_timeout = 5.0
    network_timeout = 30.0
    wait_time = between(0.2, 0.8)

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        # This user's own random numbers: an attribute, not a property, as it is read on
        # every request (bench loadgen_cpu_per_request_ratio).
        self.rng = random.Random()

    # --- the run ---------------------------------------------------------------

    @property
    def ctx(self) -> RunContext:
        ctx: RunContext = self.environment.memstress
        return ctx

    @property
    def stage(self) -> Stage:
        stage: Stage = self.environment.memstress.stage
        return stage

    @property
    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = self.environment.memstress.stage.params
        return params

    def agent(self, k: int) -> str:
        """Agent id ``k`` of this run (ids outside the run's namespace are never used)."""
        return agent_id(self.ctx.run_id, k)

    def namespace(self, k: int) -> str:
        return namespace(self.ctx.run_id, k)

    @property
    def adapter(self) -> Adapter:
        """The run's adapter (``--adapter``); memstress where the context has none
        (a context made by hand, as the benchmarks do)."""
        if self.ctx.adapter is None:
            self.ctx.adapter = load_adapter(None)
        adapter: Adapter = self.ctx.adapter
        return adapter

    @property
    def target(self) -> Target:
        """This user's connection to the target, made by the run's adapter."""
        made = self.__dict__.get("_target")
        if made is None:
            made = self.__dict__["_target"] = self.adapter.connect(self)
        return made

    def can(self, capability: str) -> bool:
        """Whether the adapter has ``capability``; when not, the first user to ask records a
        ``capability_skipped`` event (the stage goes on without it)."""
        adapter = self.adapter
        if capability in adapter.capabilities:
            return True
        skipped: set[str] = self.ctx.__dict__.setdefault("_skipped", set())
        if capability not in skipped:
            skipped.add(capability)
            self.ctx.record(
                "capability_skipped",
                f"{capability}: the {adapter.name} adapter lacks {CAPABILITIES[capability]}; "
                f"stage {self.stage.name} and those after go on without it",
            )
        return False

    def claim_slot(self) -> int:
        """A number no other user of this run holds (across workers), from 0 up."""
        runner = self.environment.runner
        index = int(getattr(runner, "worker_index", 0) or 0)
        opts = self.environment.parsed_options
        workers = max(1, int(getattr(opts, "expect_workers", 1) or 1)) if self.ctx.is_worker else 1
        return index + workers * next(self.ctx.user_slots)

    def active(self) -> bool:
        """False (after a short idle) before the first stage, in cleanup, or when
        the stage turns traffic off; traffic tasks return at once then."""
        stage = self.stage
        if stage.index < 0 or stage.params.get("cleanup") or not stage.params.get("traffic", True):
            self.pause(IDLE_S)
            return False
        return True

    def pause(self, seconds: float) -> None:
        """Sleep up to ``seconds``, waking early when the stage changes."""
        index = self.stage.index
        end = time.monotonic() + max(0.0, seconds)
        while time.monotonic() < end and self.stage.index == index:
            gevent.sleep(min(0.1, max(0.0, end - time.monotonic())))

    # --- requests --------------------------------------------------------------

    def call(
        self,
        endpoint: Endpoint,
        body: Any = None,
        *,
        query: dict[str, Any] | None = None,
        allow: tuple[int, ...] = (),
        **parts: str,
    ) -> Reply:
        """Send one request named after ``endpoint``; 2xx and ``allow`` statuses are success."""
        url = endpoint.url(**parts) if parts else endpoint.path
        if query:
            url = f"{url}?{urlencode(query)}"
        return self.request(endpoint.method, url, endpoint.name, body, allow=allow)

    def request(
        self,
        method: str,
        url: str,
        name: str,
        body: Any = None,
        *,
        allow: tuple[int, ...] = (),
        pick: Callable[[Any], Any] | None = None,
    ) -> Reply:
        """One HTTP request reported as ``name``, with the shedding rules above. ``pick``
        takes the result out of the JSON answer (a KeyError there is a failure)."""
        shed, response_time = False, 0.0
        with self.client.request(method, url, name=name, json=body, catch_response=True) as resp:
            status = int(resp.status_code or 0)
            if 200 <= status < 300 or status in allow:
                data, bad = api.parse_json(resp.content)
                if bad:
                    resp.failure(f"{name}: HTTP {status} with a body that is not JSON")
                    return Reply(False, False, status)
                if pick is not None and 200 <= status < 300:
                    try:
                        data = pick(data)
                    except KeyError as exc:
                        resp.failure(f"{name}: HTTP {status}: {exc.args[0]}")
                        return Reply(False, False, status)
                resp.success()
                return Reply(True, False, status, data)
            if status in api.SHED_STATUSES and resp.headers.get("Retry-After") is not None:
                resp.success()
                shed = True
                response_time = resp.request_meta["response_time"]
            elif status == 0:
                resp.failure(f"{name}: no answer ({resp.error!r})")
            else:
                resp.failure(f"{name}: unexpected HTTP {status}: {_snippet(resp)}")
        if shed:
            self.environment.events.request.fire(
                request_type=api.SHED_TYPE,
                name=name,
                response_time=response_time,
                response_length=0,
                exception=None,
                context={},
            )
        return Reply(False, shed, status)


def _snippet(resp: Any) -> str:
    try:
        text = resp.text or ""
    except Exception:  # pragma: no cover - undecodable body
        text = ""
    return " ".join(text.split())[:160]


class ConductorUser(MemstressUser):
    """The one user (``fixed_count = 1``) that does what must not race.

    Subclasses implement :meth:`step` (one iteration; returns the seconds until
    the next) and may override :meth:`on_stage`. In a stage whose parameters say
    ``cleanup`` the conductor deletes the run's data space once and idles.
    """

    abstract = True
    fixed_count = 1
    wait_time = constant(0)

    def on_start(self) -> None:
        self._seen_stage = -1
        self._cleaned_stage = -1

    @task
    def conduct(self) -> None:
        stage = self.stage
        if stage.index < 0:
            self.pause(IDLE_S)
            return
        if stage.index != self._seen_stage:
            self._seen_stage = stage.index
            self.on_stage(stage)
        if stage.params.get("cleanup"):
            if self._cleaned_stage != stage.index:
                self._cleaned_stage = stage.index
                self.cleanup(stage.params)
            self.pause(1.0)
            return
        started = time.monotonic()
        interval = self.step(stage)
        self.pause(interval - (time.monotonic() - started))

    def step(self, stage: Stage) -> float:  # pragma: no cover - every conductor overrides it
        raise NotImplementedError

    def on_stage(self, stage: Stage) -> None:
        """A new stage began; the default resets the target's faults when it says so."""
        resets = stage.params.get("reset_faults") and not stage.params.get("cleanup")
        if resets and (PRESSURE in self.adapter.capabilities or self.can(FAULTS)):
            self.target.reset_faults()

    def cleanup(self, params: dict[str, Any]) -> None:
        """Delete this run's agents and namespaces; reset faults if the run used them."""
        has = self.adapter.capabilities
        if CONVERSATION in has:
            for k in range(int(params.get("agents", 0))):
                self.target.forget(self.agent(k))
        if VECTORS in has:
            for k in range(int(params.get("namespaces", 0))):
                self.target.drop_namespace(self.namespace(k))
        if params.get("reset_faults") and has & {FAULTS, PRESSURE}:
            self.target.reset_faults()


class AgentTrafficUser(MemstressUser):
    """Everyday platform traffic over the run's agent pool and namespaces.

    Stage parameters: ``agents`` (pool size), ``namespaces``; ``message_bytes``
    (default 600) and ``traffic`` (false: idle) when a stage sets them. Vector
    traffic (document upserts, searches) is optional: on an adapter without a
    vector store it is skipped, once recorded in ``events.csv``.
    """

    abstract = True

    def on_start(self) -> None:
        self._seeded: list[int] = []
        self._toured = False

    def active(self) -> bool:
        """As :meth:`MemstressUser.active`; the first time, also one request to each
        operation of this traffic (so even a short run reaches them all)."""
        if not super().active():
            return False
        if not self._toured:
            self._toured = True
            if self.can(VECTORS):
                self.upsert_document()
            agent = self.pick_agent()
            self.target.remember(agent, *self.message())
            self.target.context(agent, "hello", 5)
            self.target.history(agent, 0, 20)
            if self._seeded:
                query = " ".join(self.rng.choices(api.WORDS, k=5))
                self.target.search(self.namespace(self._seeded[0]), query, 5)
        return True

    def pick_agent(self) -> str:
        return self.agent(self.rng.randrange(max(1, int(self.params.get("agents", 1)))))

    def message(self) -> tuple[str, str]:
        """A role and a text of about ``message_bytes``."""
        size = int(self.params.get("message_bytes", 600))
        role = self.rng.choice(("user", "assistant"))
        return role, api.text_of(self.rng, self.rng.randint(size // 2, size))

    @task(4)
    def add_message(self) -> None:
        if self.active():
            self.target.remember(self.pick_agent(), *self.message())

    @task(3)
    def read_context(self) -> None:
        if self.active():
            query = " ".join(self.rng.choices(api.WORDS, k=4))
            self.target.context(self.pick_agent(), query, 5)

    @task(1)
    def read_history(self) -> None:
        if self.active():
            self.target.history(self.pick_agent(), 0, 20)

    @task(1)
    def search(self) -> None:
        if not self.active() or not self.can(VECTORS):
            return
        if not self._seeded:
            self.upsert_document()
            return
        ns = self.namespace(self.rng.choice(self._seeded))
        query = " ".join(self.rng.choices(api.WORDS, k=5))
        self.target.search(ns, query, 5)

    @task(1)
    def upsert(self) -> None:
        if self.active() and self.can(VECTORS):
            self.upsert_document()

    def upsert_document(self) -> None:
        k = self.rng.randrange(max(1, int(self.params.get("namespaces", 1))))
        text = api.text_of(self.rng, int(self.params.get("document_bytes", 2048)))
        reply = self.target.add_document(self.namespace(k), f"doc-{self.rng.randrange(64)}", text)
        if reply.ok and k not in self._seeded:
            self._seeded.append(k)


class PressureController(ConductorUser):
    """Drives the target's pressure to the stage's ``pressure_target`` and holds it.

    One user (a conductor, so never several racing) reads the target's memory
    stats and adds ballast (the ``pressure`` capability: the bundled service's
    ballast fault, Redis's filler keys; each with a ttl) until the pressure
    reaches the target, then keeps it within ``tolerance`` points: the step is
    proportional to the gap and bounded (:func:`scenarios.control.ballast_step`).
    The ballast lives until the end of the last pressure stage (``hold_after_s``
    past this stage's end); the stage after that releases it (``reset_faults``).
    """

    abstract = True
    interval_s = 0.5  # between two reads: long enough for RSS to show the last step
    ttl_margin_s = 2.0

    def step(self, stage: Stage) -> float:
        target = stage.params.get("pressure_target")
        if target is None:
            return 1.0
        reply = self.target.stats()
        if not reply.ok or not isinstance(reply.data, dict):
            return 1.0
        n = ballast_step(
            float(reply.data.get("pressure") or 0.0),
            float(target),
            budget_bytes=float(reply.data.get("budget_bytes") or 0.0),
            tolerance=float(stage.params.get("tolerance", 3.0)),
        )
        if n:
            ttl = stage.remaining_s() + float(stage.params.get("hold_after_s", 0.0))
            self.target.ballast(n, round(ttl + self.ttl_margin_s, 1))
        return self.interval_s
