"""Error answers: one JSON shape ``{"error": ..., "field": ...}`` and the body-size limit.

``error_responses(...)`` documents those answers in the OpenAPI schema, so a
client (or a schema fuzzer) learns every status a route may give and its body.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("service.errors")


class ApiError(Exception):
    """An answer other than success, with the field it is about when there is one."""

    def __init__(
        self,
        status: int,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.headers = headers
        self.extra = extra

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"error": self.message}
        if self.field is not None:
            body["field"] = self.field
        body.update(self.extra)
        return JSONResponse(body, status_code=self.status, headers=self.headers)


class ErrorOut(BaseModel):
    """Every error body: what went wrong and, for bad input, the field it is about."""

    model_config = ConfigDict(extra="allow")  # e.g. limit_bytes, strategy, queue_size, detail

    error: str
    field: str | None = None


_RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before trying again",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
}
_ERRORS: dict[int, str] = {
    404: "Unknown agent or namespace (or a path that does not exist)",
    413: "Request body over the size limit (``limit_bytes``); nothing was stored",
    422: "Bad input; ``field`` names the offending field",
    429: "The optimization queue is full; retry after ``Retry-After`` seconds",
    503: "Memory pressure is critical: writes are shed until it is under recover_below "
    "(90% by default); "
    "nothing was stored; retry after ``Retry-After`` seconds",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` entries for these error statuses (all ``ErrorOut``)."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        entry: dict[str, Any] = {"model": ErrorOut, "description": _ERRORS[code]}
        if code in (429, 503):
            entry["headers"] = _RETRY_AFTER
        out[code] = entry
    return out


def _field_of(loc: tuple[Any, ...] | list[Any]) -> str:
    """``("body", "items", 0, "bytes")`` -> ``bytes``; a whole-body problem -> ``body``."""
    names = [str(p) for p in loc[1:] if isinstance(p, str)] if len(loc) > 1 else []
    return names[-1] if names else "body"


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
    field = _field_of(tuple(first.get("loc", ("body",))))
    detail = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in errors
    ]
    return JSONResponse(
        {
            "error": f"{field}: {first.get('msg', 'invalid')}",
            "field": field,
            "detail": jsonable_encoder(detail),
        },
        status_code=422,
    )


async def _api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return exc.response()


class _FrameworkErrors:
    """The framework's own answers (404 unknown path, 405) in the same shape.

    Its only 400 is a JSON body it could not even decode (bytes that are not
    UTF-8): that is the same bad input as any other unparseable body, so it
    gets the same 422 naming the body. A 405's ``Allow`` lists every method the
    path answers; Starlette's names only those of the first route it matched.
    """

    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        self.routes = [r for r in routes if isinstance(r, Route)]

    def allowed(self, scope: Scope) -> list[str]:
        methods: set[str] = set()
        for route in self.routes:
            if route.matches(scope)[0] is not Match.NONE:
                methods |= route.methods or set()
        return sorted(methods)

    async def __call__(self, request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 400:
            return JSONResponse({"error": "body: not UTF-8 JSON", "field": "body"}, status_code=422)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(self.allowed(request.scope))
        return JSONResponse(
            {"error": str(exc.detail)}, status_code=exc.status_code, headers=headers
        )


async def _storage_error(_request: Request, exc: Exception) -> JSONResponse:
    log.error("storage error: %s", exc)
    return JSONResponse({"error": f"storage error: {exc}"}, status_code=500)


def install_error_handlers(app: FastAPI, routes: Sequence[BaseRoute]) -> None:
    """Answer every error in the one JSON shape; ``routes`` are the app's, for ``Allow``."""
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(HTTPException, _FrameworkErrors(routes))
    app.add_exception_handler(sqlite3.Error, _storage_error)


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413 before any handler sees them.

    Checks the declared ``Content-Length`` and counts the bytes actually
    received (chunked uploads declare none), buffering at most ``max_bytes``.
    A refused body is read and dropped (up to ``DRAIN_FACTOR`` times the limit)
    before answering, so the client reads the 413 instead of a reset connection.
    """

    DRAIN_FACTOR = 16

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, receive: Receive, send: Send, more: bool, seen: int) -> None:
        cap = self.DRAIN_FACTOR * self.max_bytes
        while more and seen <= cap:
            message = await receive()
            if message["type"] != "http.request":
                return
            seen += len(message.get("body", b""))
            more = message.get("more_body", False)
        body = {
            "error": f"request body is larger than {self.max_bytes} bytes",
            "field": "body",
            "limit_bytes": self.max_bytes,
        }
        response = JSONResponse(body, status_code=413, headers={"Connection": "close"})
        await response({"type": "http"}, _no_receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                if value.isdigit() and int(value) > self.max_bytes:
                    await self._refuse(receive, send, more=True, seen=0)
                    return
                break
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its body
            chunk = message.get("body", b"")
            more = message.get("more_body", False)
            received += len(chunk)
            if received > self.max_bytes:
                await self._refuse(receive, send, more=more, seen=received)
                return
            chunks.append(chunk)
            if not more:
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _no_receive() -> Message:  # pragma: no cover - a JSONResponse never reads
    return {"type": "http.disconnect"}
