"""The HTTP edges of `tunelab serve`: one error shape for every refusal, the request body read as strict JSON (both
tunelab/http_errors.py's, whatever the body's Content-Type), and the body-size limit.

Every error answer is `{"error": {"message": "<one line>", "code": <status>}}` — what OpenAI's clients read — and a
422 also names the field (`"param": "inputs[0].score"`) and keeps FastAPI's `"detail"` list beside it. The shape is
tunelab/http_errors.py's, which `tunelab ui` answers with too."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from tunelab.http_errors import error, install_handlers


def install(app: FastAPI) -> None:
    """The one error shape for every error `app` answers, its routes (added after this) reading bodies as strict JSON
    whatever their Content-Type (tunelab/http_errors.py): `curl -d` sends JSON as a form unless told otherwise."""
    install_handlers(app, any_content_type=True)


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
