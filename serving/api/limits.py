"""Request guards (a body limit enforced while the body is read, a same-origin check) and request metrics.

``Content-Length`` is checked first (a declared oversize body is refused before a byte is read),
but a client may omit it (chunked transfer) or lie, so the bytes are also counted as they arrive:
past ``max_bytes`` the read fails with 413 and the handler never sees a complete (or any) form.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from monitoring import metrics


class BodyTooLarge(HTTPException):
    def __init__(self, max_bytes: int):
        super().__init__(413, f"the request is larger than the limit of {max_bytes} bytes "
                              f"({max_bytes / 2**20:.1f} MiB); record a shorter take")


class BodyLimit:
    """ASGI middleware: at most ``max_bytes`` of request body per request."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        too_big = declared is not None and declared.isdigit() and int(declared) > self.max_bytes
        received = 0

        async def limited() -> Message:
            nonlocal received
            if too_big:  # raised inside the body read, so the app's error handlers answer it
                raise BodyTooLarge(self.max_bytes)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited, send)


class SameOrigin:
    """ASGI middleware: a state-changing request (POST/PUT/PATCH/DELETE) that names another site in
    ``Origin`` (or, without it, ``Referer``) is refused with 403 — the cross-site-request-forgery guard
    for the cookie-authenticated pages. Clients that send neither header (API clients with bearer
    tokens, curl, devices) are not browsers and pass."""

    UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in self.UNSAFE:
            headers = dict(scope.get("headers") or ())
            claimed = headers.get(b"origin") or headers.get(b"referer")
            host = headers.get(b"host", b"").decode("latin-1")
            if claimed and claimed != b"null" and urlsplit(claimed.decode("latin-1")).netloc != host:
                response = JSONResponse({"detail": "cross-site request refused: the Origin is not this site"},
                                        status_code=403)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class RequestMetrics:
    """ASGI middleware: count and time every HTTP request by route template (``/v1/requests/{request_id}``,
    never the concrete path, so ids do not explode the label space), method and status."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = scope.get("route")
            template = getattr(route, "path_format", None) or getattr(route, "path", None) or "unmatched"
            metrics.HTTP_REQUESTS.labels(template, scope["method"], str(status)).inc()
            metrics.HTTP_LATENCY.labels(template, scope["method"]).observe(time.perf_counter() - started)
