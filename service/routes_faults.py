"""``/faults/*``: test instruments, mounted only with ``--enable-faults``.

They are never shed under pressure (a test must be able to reset), but they
are capped: one request may add at most two budgets, fault memory in total may
not pass four budgets nor what the host has available, so a client cannot push
the machine out of memory.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import psutil
from fastapi import APIRouter, Body
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from memstress.common.units import MB
from memstress.service.errors import ApiError, error_responses
from memstress.service.faults import REQUEST_CAP_BUDGETS
from memstress.service.routes_memory import Rt, Strategy

log = logging.getLogger("service.faults")

HOST_RESERVE = 512 * MB  # never leave the host with less available than this


BYTES_DOC = "at most 2 x budget per request; leak and ballast together at most 4 x budget"


class LeakIn(BaseModel):
    bytes: int = Field(gt=0, description=BYTES_DOC)


class BallastIn(BaseModel):
    bytes: int = Field(gt=0, description=BYTES_DOC)
    ttl_s: float | None = Field(default=None, gt=0, le=86_400)


class LeakOut(BaseModel):
    leaked_bytes: int
    leak_bytes_total: int


class BallastOut(BaseModel):
    ballast_id: int
    bytes: int
    ttl_s: float | None
    ballast_bytes_total: int
    pressure: float


class ResetOut(BaseModel):
    released_leak_bytes: int
    released_ballast_bytes: int
    freed_bytes: int
    pressure: float
    strategy: Strategy


FAULT_RESPONSES = error_responses(413, 422)
FAULT_RESPONSES[422]["description"] = (
    "Bad input, or the bytes would take fault memory past 4 x budget "
    "or past what the host can spare; ``field`` is ``bytes`` then"
)

router = APIRouter()


def document_caps(openapi: dict[str, Any], budget_bytes: int) -> None:
    """Write this process's per-request cap (it depends on the budget) into its schema."""
    for model in (LeakIn, BallastIn):
        prop = openapi["components"]["schemas"][model.__name__]["properties"]["bytes"]
        prop["maximum"] = REQUEST_CAP_BUDGETS * budget_bytes


def _check_room(rt: Rt, n: int) -> None:
    per_request = REQUEST_CAP_BUDGETS * rt.manager.budget
    if n > per_request:
        raise ApiError(
            422,
            f"bytes: {n} is more than one request may add (valid: 1 to 2 x budget = {per_request})",
            field="bytes",
        )
    held = rt.faults.leak_bytes + rt.faults.ballast_bytes
    cap = rt.manager.fault_cap_bytes()
    if held + n > cap:
        raise ApiError(
            422,
            f"bytes: {n} would bring fault memory to {(held + n) / MB:.1f} MB, over the cap "
            f"of 4 x budget = {cap / MB:.0f} MB (valid: at most {max(0, cap - held)} now)",
            field="bytes",
        )
    room = psutil.virtual_memory().available - HOST_RESERVE
    if n > room:
        raise ApiError(
            422,
            f"bytes: {n} is more than the host can spare (valid: at most {max(0, room)} now)",
            field="bytes",
        )


@router.post("/faults/leak", response_model=LeakOut, responses=FAULT_RESPONSES)
async def leak(rt: Rt, body: LeakIn) -> JSONResponse:
    _check_room(rt, body.bytes)
    rt.faults.leak(body.bytes)
    rt.manager.measure()
    log.info("leaked %.1f MB (%.1f MB in all)", body.bytes / MB, rt.faults.leak_bytes / MB)
    return JSONResponse({"leaked_bytes": body.bytes, "leak_bytes_total": rt.faults.leak_bytes})


@router.post("/faults/ballast", response_model=BallastOut, responses=FAULT_RESPONSES)
async def ballast(rt: Rt, body: BallastIn) -> JSONResponse:
    _check_room(rt, body.bytes)
    b = rt.faults.add_ballast(body.bytes, body.ttl_s)
    rt.manager.measure()
    log.info(
        "ballast #%d: %.1f MB for %s (%.1f MB in all)",
        b.id,
        body.bytes / MB,
        f"{body.ttl_s:g} s" if body.ttl_s is not None else "until reset",
        rt.faults.ballast_bytes / MB,
    )
    return JSONResponse(
        {
            "ballast_id": b.id,
            "bytes": body.bytes,
            "ttl_s": body.ttl_s,
            "ballast_bytes_total": rt.faults.ballast_bytes,
            "pressure": round(rt.manager.pressure, 2),
        }
    )


@router.post("/faults/reset", response_model=ResetOut, responses=error_responses(413, 422))
async def reset(rt: Rt, _body: Annotated[dict[str, object] | None, Body()] = None) -> JSONResponse:
    leaked, ballast_bytes = rt.faults.reset()
    freed = rt.manager.optimize(rt.manager.strategy, "faults reset")
    log.info(
        "faults reset: released %.1f MB leak, %.1f MB ballast", leaked / MB, ballast_bytes / MB
    )
    return JSONResponse(
        {
            "released_leak_bytes": leaked,
            "released_ballast_bytes": ballast_bytes,
            "freed_bytes": freed,
            "pressure": round(rt.manager.pressure, 2),
            "strategy": rt.manager.strategy,
        }
    )
