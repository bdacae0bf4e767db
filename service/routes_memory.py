"""Health, memory stats, management cycles, optimization requests and metrics."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from service.errors import ApiError
from service.runtime import Runtime

HEALTH = {"normal": "ok", "aggressive": "degraded", "emergency": "critical"}


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


Rt = Annotated[Runtime, Depends(runtime)]


class OptimizeIn(BaseModel):
    priority: Literal["low", "normal", "high", "critical"] = "normal"
    reason: str = Field(default="", max_length=200)


router = APIRouter()


@router.get("/health")
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


@router.get("/memory/stats")
async def memory_stats(rt: Rt) -> JSONResponse:
    return JSONResponse(rt.manager.stats())


@router.post("/memory/cycle")
async def memory_cycle(rt: Rt) -> JSONResponse:
    return JSONResponse(rt.manager.cycle().as_json())


@router.post("/memory/optimize", status_code=202)
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


@router.get("/metrics")
async def metrics(rt: Rt) -> Response:
    return Response(generate_latest(rt.registry), media_type=CONTENT_TYPE_LATEST)
