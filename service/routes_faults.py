"""``/faults/*``: test instruments, mounted only with ``--enable-faults``.

They are never shed under pressure (a test must be able to reset), but they
are capped: one request may add at most two budgets, fault memory in total may
not pass four budgets nor what the host has available, so a client cannot push
the machine out of memory.
"""

from __future__ import annotations

import logging
from typing import Annotated

import psutil
from fastapi import APIRouter, Body
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from service.errors import ApiError
from service.routes_memory import Rt

log = logging.getLogger("service.faults")

HOST_RESERVE = 512 * 1024 * 1024  # never leave the host with less available than this
MB = 1024 * 1024


class LeakIn(BaseModel):
    bytes: int = Field(gt=0)


class BallastIn(BaseModel):
    bytes: int = Field(gt=0)
    ttl_s: float | None = Field(default=None, gt=0, le=86_400)


router = APIRouter()


def _check_room(rt: Rt, n: int) -> None:
    per_request = 2 * rt.manager.budget
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


@router.post("/faults/leak")
async def leak(rt: Rt, body: LeakIn) -> JSONResponse:
    _check_room(rt, body.bytes)
    rt.faults.leak(body.bytes)
    rt.manager.measure()
    log.info("leaked %.1f MB (%.1f MB in all)", body.bytes / MB, rt.faults.leak_bytes / MB)
    return JSONResponse({"leaked_bytes": body.bytes, "leak_bytes_total": rt.faults.leak_bytes})


@router.post("/faults/ballast")
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


@router.post("/faults/reset")
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
