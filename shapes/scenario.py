"""The dispatching shape: plays the stage plan of the scenario the options chose.

How the chosen scenario's users, and only those, run (checked on Locust 2.47):

- The locustfile exposes every scenario's user classes, so workers can spawn
  any of them by name (a worker's options may name no scenario at all: it
  learns the master's only with the first spawn message).
- The shape resolves the scenario at its first tick, which Locust calls
  *before* ``runner.start()`` creates the users dispatcher; it sets
  ``environment.user_classes`` to the scenario's classes there (the dispatcher
  is built from that list) and returns them as the third element of every
  tick. This works the same headless, in the web UI (where the options, the
  scenario too, may be edited before each start) and distributed.
- Every stage keeps the same classes; what changes per stage are parameters
  the users read from ``environment.memstress.stage``.

The shape runs only on the master (or the local runner). On each stage change
it sets the context's stage, writes ``stages.csv`` and an event, and
broadcasts the stage to workers with ``runner.send_message``; workers set it
from that message (:func:`wire_stages`). The stage also rides on the parsed
options, which every spawn message carries, for a worker that connects late.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from locust.runners import MasterRunner, WorkerRunner

from memstress.common.config import ConfigError
from memstress.common.context import (
    RUN_ID_OPTION,
    STAGE_MESSAGE,
    STAGE_OPTION,
    RunContext,
    Stage,
    check_target,
)
from memstress.common.exitcodes import ExitCode
from memstress.scenarios.adapters import check_scenario, load_adapter
from memstress.scenarios.options import resolve_settings
from memstress.scenarios.registry import get_scenario
from memstress.scenarios.spec import Scenario
from memstress.shapes.plan import PlanError, StagePlayer, StageSpec
from memstress.shapes.staged import StagedShape, TickResult

if TYPE_CHECKING:
    from locust.env import Environment

log = logging.getLogger(__name__)


class ScenarioShape(StagedShape):
    """Plays ``--scenario``'s stage plan; see the module doc. Abstract: the
    locustfile subclasses it once, so Locust sees exactly one shape."""

    abstract = True

    def __init__(self) -> None:
        super().__init__()
        self.playing = False
        self.scenario: Scenario | None = None
        self._swept = False  # the master's cleanup of an unfinished plan is done
        self._sweeping = False

    @property
    def environment(self) -> Environment:
        assert self.runner is not None, "Locust attaches the runner before the first tick"
        return self.runner.environment

    @property
    def context(self) -> RunContext:
        ctx: RunContext = self.environment.memstress  # type: ignore[attr-defined]
        return ctx

    def tick(self) -> TickResult | None:
        if not self.playing and not self.begin():
            return None
        return super().tick()

    def begin(self) -> bool:
        """Resolve scenario and plan from the options as they are now; False if refused."""
        env = self.environment
        ctx = self.context
        try:
            settings = resolve_settings(env.parsed_options)
            if ctx.adapter is None:
                ctx.adapter = load_adapter(None)
            host = check_target(env.host or "", settings, ctx.adapter.schemes)
            scenario = get_scenario(settings.scenario)
            check_scenario(scenario, ctx.adapter)
            plan = scenario.build_plan(settings.config, settings.stress, settings.duration_s)
        except (ConfigError, PlanError) as exc:
            log.error("%s", exc)  # in the web UI: the form's values are refused, fix and restart
            ctx.stop_reason = str(exc)
            headless = bool(getattr(env.parsed_options, "headless", False))
            if headless and env.process_exit_code is None:
                env.process_exit_code = ExitCode.USAGE
            return False
        ctx.apply(settings)
        ctx.host = host
        ctx.plan_complete = False
        ctx.stop_reason = ""
        ctx.set_stage(Stage())
        self._swept = False
        self.scenario = scenario
        self.user_classes = list(scenario.user_classes)
        env.user_classes = list(scenario.user_classes)  # before the dispatcher is built
        self.player = StagePlayer(plan, cap_s=settings.config.safety.max_test_duration)
        self.playing = True
        log.info(
            "memstress: scenario %s, stress level %d, %d stages over %g s: %s",
            scenario.name,
            settings.stress.level,
            len(plan),
            settings.duration_s,
            ", ".join(f"{s.name} {s.duration_s:g} s/{s.users} users" for s in plan),
        )
        return True

    def on_stage(self, index: int, spec: StageSpec, elapsed_s: float) -> None:
        ctx = self.context
        stage = ctx.enter_stage(
            index,
            spec.name,
            duration_s=spec.duration_s,
            users=spec.users,
            spawn_rate=spec.spawn_rate,
            params=dict(spec.params),
            elapsed_s=elapsed_s,
        )
        message = stage.to_message()
        opts = self.environment.parsed_options
        if opts is not None:
            setattr(opts, STAGE_OPTION, message)
        if isinstance(self.runner, MasterRunner):
            self.runner.send_message(STAGE_MESSAGE, message)
        log.info(
            "memstress: stage %d/%d %s (%g s, %d users) at %.1f s",
            index + 1,
            len(self.player.plan),
            spec.name,
            spec.duration_s,
            spec.users,
            elapsed_s,
        )

    def on_end(self, reason: str, elapsed_s: float) -> None:
        self.playing = False
        ctx = self.context
        ctx.record("run_end", reason)
        if self.player.capped:
            ctx.stop_reason = reason
            log.warning("memstress: %s; stopping", reason)
            if self.environment.process_exit_code is None:
                self.environment.process_exit_code = ExitCode.SAFETY
        else:
            ctx.plan_complete = True
            log.info("memstress: %s after %.1f s", reason, elapsed_s)

    def finish(self) -> None:
        """The test stopped: delete the run's data space once from here.

        Also when the plan played its cleanup stage: that stage can be shorter than
        the time between two shape ticks, so the conductor may not have finished it
        (seen with --processes 2). The sweep is idempotent: what is gone is a 404.

        Called at ``test_stop`` and again at ``quitting``: a second ``runner.quit()``
        (the monitor's safety stop, say) kills the runner's greenlets, and with them
        a cleanup begun at ``test_stop``; ``quitting`` runs in the main greenlet.
        """
        self.playing = False
        ctx = self.context
        if self._swept or self._sweeping:
            return
        if not self.player.plan or not ctx.host:
            return
        self._sweeping = True
        try:
            done = ctx.adapter.sweep(ctx.host, ctx.run_id, self.player.plan[-1].params)
            ctx.record("cleanup", {"by": "master at test stop", "run_id": ctx.run_id, **done})
            self._swept = True
        finally:
            self._sweeping = False


def wire_stages(environment: Environment) -> None:
    """Follow the master's stages on a worker; end the shape's run on the master."""
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        runner.register_message(STAGE_MESSAGE, _on_stage_message)
        environment.events.test_start.add_listener(_on_worker_test_start)
    else:
        environment.events.test_stop.add_listener(_finish_shape)
        environment.events.quitting.add_listener(_finish_shape)


def _on_stage_message(environment: Environment, msg: Any, **_: Any) -> None:
    environment.memstress.set_stage(Stage.from_message(msg.data))  # type: ignore[attr-defined]


def _on_worker_test_start(environment: Environment, **_: Any) -> None:
    """A worker has the master's options now (Locust copies them before test_start)."""
    ctx: RunContext = environment.memstress  # type: ignore[attr-defined]
    opts = environment.parsed_options
    try:
        settings = resolve_settings(opts)
    except ConfigError as exc:
        # e.g. the master's --memstress-config path does not exist on this machine
        log.warning("memstress worker: %s; using this worker's default config", exc)
        vars(opts).pop("memstress_config", None)
        settings = resolve_settings(opts)
    ctx.apply(settings)
    ctx.run_id = getattr(opts, RUN_ID_OPTION, None) or ctx.run_id
    ctx.host = (environment.host or ctx.host).rstrip("/")
    carried = getattr(opts, STAGE_OPTION, None)
    if isinstance(carried, dict):
        stage = Stage.from_message(carried)
        if stage.started > ctx.stage.started:
            ctx.set_stage(stage)


def _finish_shape(environment: Environment, **_: Any) -> None:
    shape = environment.shape_class
    if isinstance(shape, ScenarioShape):
        shape.finish()
