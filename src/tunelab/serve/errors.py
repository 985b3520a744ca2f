"""The HTTP edges of `tunelab serve`: its error answers and the body-size limit."""

from __future__ import annotations

import math
from typing import Any

from fastapi import HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "code": status}}, status_code=status, headers=headers)


def invalid(field: str, message: str) -> HTTPException:
    """A 422 naming the field, shaped like FastAPI's own validation errors."""
    return HTTPException(422, [{"loc": ["body", field], "msg": message, "type": "value_error"}])


def _plain(value: Any, depth: int = 0) -> Any:
    """A validation error's echoed input as JSON can carry it: NaN / Infinity, bytes and lone surrogates (keys too) as
    text, long texts cut, long lists and objects cut, deep nesting stopped."""
    if depth > 16:
        return "..."
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "backslashreplace")
    if isinstance(value, str):  # a lone surrogate as \\ud800
        text = value[:200].encode("utf-8", "backslashreplace").decode("utf-8")
        return text + f"... ({len(value)} characters)" if len(value) > 200 else text
    if isinstance(value, dict):
        return {_plain(str(k)): _plain(v, depth + 1) for k, v in list(value.items())[:20]}
    if isinstance(value, list | tuple):
        return [_plain(v, depth + 1) for v in value[:20]]
    return value


async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422, with an input it cannot write as JSON (NaN) or a huge one echoed safely."""
    errors = [{**e, "input": _plain(e.get("input"))} if "input" in e else e for e in exc.errors()]
    return JSONResponse({"detail": _plain(jsonable_encoder(errors), -4)}, status_code=422)


class BodyLimit:
    """413 for a request body over `limit` bytes however it is sent: by its Content-Length, else (chunked, which
    wins over a length) counted as it arrives, up to the limit, before the app reads it. Inside `Server.guard`, so
    the API key is checked first and every 413 is counted."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        headers = {k.lower(): v for k, v in scope.get("headers", ())} if scope["type"] == "http" else {}
        if scope["type"] != "http" or (b"content-length" in headers and b"transfer-encoding" not in headers):
            if int(headers.get(b"content-length", b"0") or 0) > self.limit:
                return await error(413, f"request body over {self.limit} bytes")(scope, receive, send)
            return await self.app(scope, receive, send)
        chunks, size, message = [], 0, {"more_body": True}
        while message.get("more_body", False):
            message = await receive()
            if message["type"] != "http.request":  # the client left: the app sees that as it would
                return await self.app(scope, receive, send)
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await error(413, f"request body over {self.limit} bytes")(scope, receive, send)
        body, given = b"".join(chunks), False
        del chunks

        async def replay() -> Any:
            nonlocal given
            if given:
                return await receive()
            given = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)
