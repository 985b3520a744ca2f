"""The HTTP edges of `tunelab serve`: one error shape for every refusal, the request body read as strict JSON, and
the body-size limit.

Every error answer is `{"error": {"message": "<one line>", "code": <status>}}` — what OpenAI's clients read — and a
422 also names the field (`"param": "inputs[0].score"`) and keeps FastAPI's `"detail"` list beside it. The shape is
tunelab/http_errors.py's, which `tunelab ui` answers with too."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute

from tunelab.http_errors import error, install_handlers


def install(app: FastAPI) -> None:
    """The one error shape for every error `app` answers (tunelab/http_errors.py); its routes (added after this) read
    bodies as strict JSON."""
    install_handlers(app)
    app.router.route_class = _StrictJSONRoute


def _non_finite(value: Any) -> tuple[list[Any], float] | None:
    """The path to the first NaN / Infinity in a parsed JSON value, and that number. Walked without recursion."""
    stack: list[tuple[Any, list[Any]]] = [(value, [])]
    while stack:
        item, loc = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return loc, item
        if isinstance(item, dict):
            stack.extend((v, [*loc, k]) for k, v in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend((v, [*loc, i]) for i, v in reversed(list(enumerate(item))))
    return None


class _JSONRequest(Request):
    """A request whose JSON body must be UTF-8 JSON — a 400 saying why not, where FastAPI says only "There was an error
    parsing the body" (bytes that are not UTF-8) or "JSON decode error" (a 422 naming a character offset) — with finite
    numbers only: Python's parser takes `NaN`, `Infinity` and `1e999`, which JSON cannot write back (a row's extra
    field would come back as null): a 422 naming where."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            try:
                value = json.loads((await self.body()).decode("utf-8-sig"))  # a UTF-8 BOM is read past, as before
            except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
                reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
                raise HTTPException(400, f"request body is not valid UTF-8 JSON: {reason}") from None
            if (found := _non_finite(value)) is not None:
                loc, number = found
                raise HTTPException(422, [{"loc": ["body", *loc], "type": "finite_number", "input": str(number),
                                           "msg": f"{number} is not a finite number (JSON has no NaN or Infinity)"}])
            self._json = value
        return self._json


class _StrictJSONRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(_JSONRequest(request.scope, request.receive))

        return strict


class BodyLimit:
    """413 for a request body over `limit` bytes however it is sent: by its Content-Length, else (chunked, which
    wins over a length) counted as it arrives, up to the limit, before the app reads it. Inside `Server.guard`, so
    the API key is checked first and every 413 is counted (and inside CORS, so a 413 carries its headers)."""

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
