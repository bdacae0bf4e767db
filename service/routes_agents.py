"""Per-agent conversation memory: append, list, context, forget."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from memstress.service.errors import ApiError, error_responses
from memstress.service.routes_memory import Rt

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"
AgentId = Annotated[str, Path(pattern=NAME_PATTERN, description="1-128 of A-Z a-z 0-9 . _ : @ -")]


class MessageIn(BaseModel):
    role: Role
    content: str = Field(min_length=1)


Role = Literal["system", "user", "assistant", "tool"]


class MessageAck(BaseModel):
    agent_id: str
    seq: int
    total: int
    ts: float


class MessageOut(BaseModel):
    seq: int
    role: Role
    content: str
    ts: float


class RelevantOut(MessageOut):
    score: float


class MessagesOut(BaseModel):
    agent_id: str
    total: int
    offset: int
    limit: int
    messages: list[MessageOut]
    source: Literal["ram", "disk"]


class ContextOut(BaseModel):
    agent_id: str
    total: int
    recent: list[MessageOut]
    relevant: list[RelevantOut]


class ForgetOut(BaseModel):
    agent_id: str
    deleted_messages: int


router = APIRouter()


def shed(rt: Rt) -> None:
    """Refuse a write while the emergency strategy sheds load."""
    if not rt.manager.admit_write():
        wait = rt.manager.retry_after_s()
        raise ApiError(
            503,
            f"memory pressure is critical ({rt.manager.pressure:.1f}% of budget); "
            f"writes resume under 90%",
            headers={"Retry-After": str(wait)},
            strategy=rt.manager.strategy,
        )


@router.post(
    "/agents/{agent_id}/messages",
    status_code=201,
    response_model=MessageAck,
    responses=error_responses(413, 422, 503),
)
async def add_message(rt: Rt, agent_id: AgentId, body: MessageIn) -> JSONResponse:
    shed(rt)
    msg = rt.conversations.append(agent_id, body.role, body.content)
    return JSONResponse(
        {"agent_id": agent_id, "seq": msg.seq, "total": msg.seq + 1, "ts": msg.ts}, status_code=201
    )


@router.get(
    "/agents/{agent_id}/messages", response_model=MessagesOut, responses=error_responses(422)
)
async def list_messages(
    rt: Rt,
    agent_id: AgentId,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> JSONResponse:
    total, messages, source = rt.conversations.messages(agent_id, offset, limit)
    return JSONResponse(
        {
            "agent_id": agent_id,
            "total": total,
            "offset": offset,
            "limit": limit,
            "messages": messages,
            "source": source,
        }
    )


@router.get("/agents/{agent_id}/context", response_model=ContextOut, responses=error_responses(422))
async def context(
    rt: Rt,
    agent_id: AgentId,
    query: Annotated[str, Query(max_length=10_000)] = "",
    k: Annotated[int, Query(ge=0, le=50)] = 5,
    recent: Annotated[int, Query(ge=0, le=50)] = 5,
) -> JSONResponse:
    total, last, relevant = rt.conversations.context(agent_id, query, k, recent)
    return JSONResponse(
        {"agent_id": agent_id, "total": total, "recent": last, "relevant": relevant}
    )


@router.delete("/agents/{agent_id}", response_model=ForgetOut, responses=error_responses(404, 422))
async def forget(rt: Rt, agent_id: AgentId) -> JSONResponse:
    n = rt.conversations.delete(agent_id)
    if n == 0:
        raise ApiError(404, f"unknown agent {agent_id!r}", field="agent_id")
    return JSONResponse({"agent_id": agent_id, "deleted_messages": n})
