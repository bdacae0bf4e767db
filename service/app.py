"""``create_app(settings)``: the FastAPI app, its lifespan and its background cycle."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from memstress.service.errors import BodyLimit, install_error_handlers
from memstress.service.manager import MB, Libc
from memstress.service.routes_agents import router as agents_router
from memstress.service.routes_faults import document_caps
from memstress.service.routes_faults import router as faults_router
from memstress.service.routes_memory import router as memory_router
from memstress.service.routes_vectors import router as vectors_router
from memstress.service.runtime import Runtime
from memstress.service.settings import Settings

log = logging.getLogger("service")


async def _manage(rt: Runtime) -> None:
    """Run a management cycle and drain the optimization queue about every interval."""
    interval = rt.settings.cycle_interval_s
    while True:
        await asyncio.sleep(interval)
        try:
            rt.manager.tick()
        except Exception:
            log.exception("management cycle failed")


def create_app(settings: Settings) -> FastAPI:
    libc = Libc()
    libc.fix_mmap_threshold()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt = Runtime.open(settings, libc)
        app.state.runtime = rt
        # Objects alive now live as long as the process: keep them out of every
        # later collection so gc.collect() in an optimization only walks new ones.
        gc.collect()
        gc.freeze()
        rt.manager.start()
        task = asyncio.create_task(_manage(rt), name="memory-manager")
        s = settings
        log.info(
            "serving on http://%s:%d data=%s budget=%.0f MB (%s) faults=%s queue=%d "
            "max_body=%d config=%s malloc_trim=%s",
            s.bind,
            s.port,
            s.data_dir,
            s.budget_bytes / MB,
            s.budget_source,
            "on" if s.enable_faults else "off",
            s.queue_size,
            s.max_body_bytes,
            s.config_source,
            "yes" if libc.available else "no",
        )
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            rt.close()
            log.info("sqlite closed (%s)", rt.store.path)

    app = FastAPI(
        title="memstress reference service",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    routers = [memory_router, agents_router, vectors_router]
    if settings.enable_faults:
        routers.append(faults_router)
    for router in routers:
        app.include_router(router)
    install_error_handlers(app, [route for router in routers for route in router.routes])
    if settings.enable_faults:
        document_caps(app.openapi(), settings.budget_bytes)  # edits the cached schema
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    return app
