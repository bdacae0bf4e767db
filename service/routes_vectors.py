"""The vector store: upsert documents, search, drop namespaces."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, field_validator

from memstress.service.errors import ApiError, error_responses
from memstress.service.routes_agents import NAME_PATTERN, shed
from memstress.service.routes_memory import Rt


class DocumentIn(BaseModel):
    namespace: str = Field(pattern=NAME_PATTERN)
    doc_id: str = Field(min_length=1, max_length=256)
    text: str = Field(min_length=1)

    @field_validator("text")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("text is only whitespace")
        return v


class SearchIn(BaseModel):
    namespace: str = Field(pattern=NAME_PATTERN)
    query: str = Field(min_length=1, max_length=10_000)
    k: int = Field(default=5, ge=1, le=100)


class DocumentAck(BaseModel):
    namespace: str
    doc_id: str
    chunks: int
    replaced: bool


class HitOut(BaseModel):
    doc_id: str
    chunk: int
    score: float
    text: str


class SearchOut(BaseModel):
    namespace: str
    hits: list[HitOut]
    source: Literal["ram", "reloaded", "disk"]


class DropOut(BaseModel):
    namespace: str
    deleted_chunks: int


router = APIRouter()


@router.post(
    "/vectors/documents",
    status_code=201,
    response_model=DocumentAck,
    responses=error_responses(413, 422, 503),
)
async def add_document(rt: Rt, body: DocumentIn) -> JSONResponse:
    shed(rt)
    chunks, replaced = rt.vectors.upsert(body.namespace, body.doc_id, body.text)
    return JSONResponse(
        {
            "namespace": body.namespace,
            "doc_id": body.doc_id,
            "chunks": chunks,
            "replaced": replaced,
        },
        status_code=201,
    )


@router.post("/vectors/search", response_model=SearchOut, responses=error_responses(404, 413, 422))
async def search(rt: Rt, body: SearchIn) -> JSONResponse:
    try:
        hits, source = rt.vectors.search(
            body.namespace, body.query, body.k, may_load=rt.manager.strategy == "normal"
        )
    except KeyError:
        raise ApiError(404, f"unknown namespace {body.namespace!r}", field="namespace") from None
    return JSONResponse(
        {"namespace": body.namespace, "hits": [h.as_json() for h in hits], "source": source}
    )


@router.delete(
    "/vectors/namespaces/{namespace}", response_model=DropOut, responses=error_responses(404, 422)
)
async def drop_namespace(
    rt: Rt, namespace: Annotated[str, Path(pattern=NAME_PATTERN)]
) -> JSONResponse:
    try:
        n = rt.vectors.delete_namespace(namespace)
    except KeyError:
        raise ApiError(404, f"unknown namespace {namespace!r}", field="namespace") from None
    return JSONResponse({"namespace": namespace, "deleted_chunks": n})
