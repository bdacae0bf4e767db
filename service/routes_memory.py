"""Health, memory stats, management cycles, optimization requests and metrics."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from memstress.service.errors import ApiError, error_responses
from memstress.service.runtime import Runtime

HEALTH = {"normal": "ok", "aggressive": "degraded", "emergency": "critical"}


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


Rt = Annotated[Runtime, Depends(runtime)]


Strategy = Literal["normal", "aggressive", "emergency"]
Priority = Literal["low", "normal", "high", "critical"]


class OptimizeIn(BaseModel):
    priority: Priority = "normal"
    reason: str = Field(default="", max_length=200)


class HealthOut(BaseModel):
    status: Literal["ok", "degraded", "critical"]
    uptime_s: float
    strategy: Strategy
    pressure: float


class TierOut(BaseModel):
    model_config = ConfigDict(extra="allow")  # per-tier extras: agents, hits, namespaces ...

    items: int
    bytes: int
    limit_bytes: int


class TiersOut(BaseModel):
    conversations: TierOut
    vectors: TierOut
    embedding_cache: TierOut
    ballast: TierOut


class StatsOut(BaseModel):
    rss_bytes: int
    budget_bytes: int
    pressure: float
    strategy: Strategy
    optimizations_total: int
    optimizations_failed: int
    bytes_freed_total: int
    leak_suspected: bool
    unaccounted_bytes: int
    tiers: TiersOut
    accounted_bytes: int
    baseline_rss_bytes: int
    shedding_writes: bool
    writes_shed: int
    cycles: int
    last_optimization_ms: float
    optimization_queue: dict[str, int]


class CycleOut(BaseModel):
    duration_ms: float
    strategy: Strategy
    pressure: float
    freed_bytes: int
    optimized: bool
    rss_bytes: int


class OptimizeOut(BaseModel):
    request_id: str
    queue_position: int
    coalesced: bool
    priority: Priority


router = APIRouter()


@router.get(
    "/health",
    response_model=HealthOut,
    responses={
        503: {
            "model": HealthOut,
            "description": "critical: pressure at or over emergency_at (95% by default)",
        }
    },
)
async def health(rt: Rt) -> JSONResponse:
    rt.manager.measure()
    status = HEALTH[rt.manager.strategy]
    body = {
        "status": status,
        "uptime_s": round(rt.uptime_s, 3),
        "strategy": rt.manager.strategy,
        "pressure": round(rt.manager.pressure, 2),
    }
    return JSONResponse(body, status_code=503 if status == "critical" else 200)


@router.get("/memory/stats", response_model=StatsOut)
async def memory_stats(rt: Rt) -> JSONResponse:
    return JSONResponse(rt.manager.stats())


@router.post("/memory/cycle", response_model=CycleOut)
async def memory_cycle(rt: Rt) -> JSONResponse:
    return JSONResponse(rt.manager.cycle().as_json())


@router.post(
    "/memory/optimize",
    status_code=202,
    response_model=OptimizeOut,
    responses=error_responses(413, 422, 429),
)
async def memory_optimize(
    rt: Rt, body: Annotated[OptimizeIn | None, Body()] = None
) -> JSONResponse:
    req = body or OptimizeIn()
    queued = rt.queue.submit(req.priority, req.reason)
    if queued is None:
        wait = rt.manager.queue_retry_after_s()
        raise ApiError(
            429,
            f"the optimization queue is full ({rt.queue.capacity} requests); retry in {wait} s",
            headers={"Retry-After": str(wait)},
            queue_size=rt.queue.capacity,
        )
    item, coalesced = queued
    return JSONResponse(
        {
            "request_id": item.request_id,
            "queue_position": rt.queue.position(item),
            "coalesced": coalesced,
            "priority": item.priority,
        },
        status_code=202,
    )


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"description": "Prometheus text exposition format"}},
)
async def metrics(rt: Rt) -> Response:
    return Response(generate_latest(rt.registry), media_type=CONTENT_TYPE_LATEST)
