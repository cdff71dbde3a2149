"""The one mapping from errors to HTTP responses."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from nudge.errors import NudgeError, TooManyRequests
from nudge.store import metrics

log = logging.getLogger("nudge.api")


def error_response(exc: NudgeError, *, segment: bool = False) -> Response:
    headers = {}
    if isinstance(exc, TooManyRequests):
        headers["Retry-After"] = str(exc.retry_after)
    body = {"status": "fail", **exc.to_dict()}
    if segment:
        # Segment/RudderStack libraries read "code" and "message" from an error body; without
        # "code" rudder-sdk-python raises KeyError and retries a permanent 4xx as a network error.
        body["code"] = exc.code
    return JSONResponse(body, status_code=exc.status, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(NudgeError)
    async def nudge_error(request: Request, exc: NudgeError) -> Response:
        metrics.REJECTS.labels(code=str(exc.status)).inc()
        return error_response(exc, segment=request.url.path.startswith("/v1/"))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        field = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        body = {"status": "fail", "error": "invalid", "message": first.get("msg", "invalid"),
                "field": field}
        return JSONResponse(body, status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        return JSONResponse({"status": "fail", "error": "http", "message": exc.detail},
                            status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(OverflowError)
    async def out_of_range(request: Request, exc: OverflowError) -> Response:
        # An id or number beyond 64 bits (found by the schemathesis fuzz: SQLite refuses to
        # bind it). Nothing can have such an id, so this is bad input, not a server fault.
        if "INTEGER" not in str(exc) and "too big" not in str(exc):
            return await unexpected(request, exc)
        return JSONResponse({"status": "fail", "error": "invalid",
                             "message": "a number in the request is out of range "
                                        "(integers and ids are 64-bit)"}, status_code=400)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"status": "fail", "error": "internal",
                             "message": "internal error"}, status_code=500)
