"""The one error shape of tunelab's HTTP answers, shared by `tunelab serve` (serve/) and `tunelab ui` (ui/), which
may not import each other: `{"error": {"message": "<one line>", "code": <status>}}` — what OpenAI's clients read —
and a 422 also names the field (`"param": "inputs[0].score"`) and keeps FastAPI's `"detail"` list beside it.

`install_handlers(app)` answers every HTTPException (the app's own, routing's 404 / 405), FastAPI's validation errors
and any unexpected exception (a 500) in that shape, and has the app's routes read JSON bodies strictly (UTF-8, finite
numbers, no key twice); `error` builds one answer, `invalid` raises a 422 naming a field.
Imports FastAPI and the data layer's JSON key check only (never torch: the UI loads it lazily); `row_error` (a predict
input the task cannot read, named by its place: `inputs[1].text`) reads the data layer's row source when called."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunelab.data.json_keys import duplicate_key, twice
from tunelab.errors import DataError, TunelabError


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "code": status}}, status_code=status, headers=headers)


def invalid(field: str, message: str) -> HTTPException:
    """A 422 naming the field (a body key, or a path in the body such as `inputs[1].note`), shaped like FastAPI's own
    validation errors."""
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


def _path(loc: list[Any]) -> str:
    """`["body", "inputs", 0, "score"]` as `inputs[0].score` (`body` for the body as a whole)."""
    parts = list(loc[1:] if loc[:1] == ["body"] else loc)
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts).lstrip(".")
    return text or "body"


def _problems(status: int, detail: list[Any], headers: dict[str, str] | None = None, total: int | None = None,
              ) -> JSONResponse:
    """FastAPI's list of field errors, under the one error shape: the first as the message and `param`."""
    first = detail[0] if detail and isinstance(detail[0], dict) else {}
    param = _path(list(first.get("loc", [])))
    total = len(detail) if total is None else total  # `detail` may be cut (the first 20)
    more = f" (and {total - 1} more: see detail)" if total > 1 else ""
    message = " ".join(f"{param}: {first.get('msg', 'invalid')}{more}".split())  # one line
    return JSONResponse({"error": {"message": message, "code": status, "param": param}, "detail": detail},
                        status_code=status, headers=headers)


async def http_error(_: Request, exc: Exception) -> Response:
    """An HTTPException (the app's own, or routing's 404 / 405) in the one shape."""
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc.detail, list):  # invalid(...): field errors
        return _problems(exc.status_code, exc.detail, exc.headers)
    return error(exc.status_code, str(exc.detail), exc.headers)


async def _validation_error(_: Request, exc: Exception) -> Response:
    """FastAPI's 422, with an input it cannot write as JSON (NaN) or a huge one echoed safely."""
    assert isinstance(exc, RequestValidationError)
    errors = [{**e, "input": _plain(e.get("input"))} if "input" in e else e for e in exc.errors()]
    return _problems(422, _plain(jsonable_encoder(errors), -4), total=len(errors))


async def _server_error(_: Request, exc: Exception) -> Response:
    return error(500, "internal server error (the server's log has the details)")


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
    field would come back as null): a 422 naming where; and no key twice in one object (a 422 naming it, where
    FastAPI would keep the last value without a word, as a data file may not either)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            try:
                text = (await self.body()).decode("utf-8-sig")  # a UTF-8 BOM is read past, as before
                value = json.loads(text)
            except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
                reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
                raise HTTPException(400, f"request body is not valid UTF-8 JSON: {reason}") from None
            if (twice_given := duplicate_key(text, value)) is not None:  # as a data file's row is refused
                where, key = twice_given
                raise invalid(where or "body", twice(key, where))
            if (found := _non_finite(value)) is not None:
                loc, number = found
                raise HTTPException(422, [{"loc": ["body", *loc], "type": "finite_number", "input": str(number),
                                           "msg": f"{number} is not a finite number (JSON has no NaN or Infinity)"}])
            self._json = value
        return self._json


class StrictJSONRoute(APIRoute):
    """Routes whose JSON bodies `_JSONRequest` reads."""

    any_content_type = False  # read a body as JSON whatever its Content-Type (`AnyTypeJSONRoute`)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        as_json = self.any_content_type

        async def strict(request: Request) -> Response:
            scope = request.scope
            if as_json:  # FastAPI reads a body as JSON only under a JSON Content-Type (none: the bytes, then a 422)
                scope = {**scope, "headers": [*(h for h in scope["headers"] if h[0].lower() != b"content-type"),
                                              (b"content-type", b"application/json")]}
            return await handler(_JSONRequest(scope, request.receive))

        return strict


class AnyTypeJSONRoute(StrictJSONRoute):
    """A JSON API's routes: the body is JSON whatever Content-Type says — none, or curl's default for `-d`
    (application/x-www-form-urlencoded) — where FastAPI answered `422 body: Input should be a valid dictionary`; a
    body that is not JSON is the 400 saying why."""

    any_content_type = True


def install_handlers(app: FastAPI, any_content_type: bool = False) -> None:
    """Every error `app` answers in the one shape; its routes added after this read JSON bodies strictly
    (`StrictJSONRoute`; with `any_content_type`, whatever the Content-Type: `AnyTypeJSONRoute`)."""
    app.router.route_class = AnyTypeJSONRoute if any_content_type else StrictJSONRoute
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _server_error)


def row_error(exc: TunelabError, inputs: list[Any], text_field: str) -> HTTPException:
    """A predict input the task cannot read, as a 422 naming it by its place in the request — `inputs[1]`, or the
    field the task names, `inputs[1].text` — with the task's words, where the CLI's one line names `<input>:2`
    (its row number); an error that names no input row: `inputs`, the CLI's line. (`tunelab serve` and the UI's
    playground alike.)"""
    from tunelab.data.objects import SOURCE  # (here: the data readers need not load with the UI's pages)

    if not (isinstance(exc, DataError) and exc.source == SOURCE and isinstance(exc.line, int)
            and 1 <= exc.line <= len(inputs)):
        return invalid("inputs", str(exc))
    where, row = f"inputs[{exc.line - 1}]", inputs[exc.line - 1]
    field, keys = exc.field, row if isinstance(row, dict) else {text_field: row}
    if field is None:
        return invalid(where, exc.problem)
    if field in keys or field.isidentifier():  # a field of the row (one it lacks, too): its path
        return invalid(f"{where}.{field}", exc.problem)
    return invalid(where, f"{field}: {exc.problem}")
