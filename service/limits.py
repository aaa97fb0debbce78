"""The request body limit: a body larger than `max_body_bytes` is refused with 413.

Plain ASGI rather than BaseHTTPMiddleware: it must see the body as it streams in, one
message at a time, so an oversized upload is refused without ever being held whole.
A declared Content-Length over the limit is refused before a byte of the body is read;
a chunked body (no Content-Length) is counted as it arrives and refused at the message
that crosses the limit.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLargeError(HTTPException):
    """Raised from `receive` when the body crosses the limit.

    An HTTPException because FastAPI re-raises those from its body parsing (anything
    else becomes a 400 "error parsing the body"); its handler then answers
    {"detail": ...} with 413, like every other error.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, too_large_detail(limit))


class BodyLimitMiddleware:
    """Refuses request bodies over `max_bytes` with 413 and {"detail": ...}."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await too_large(self.max_bytes)(scope, receive, send)
            return
        await self._counted(scope, receive, send)

    async def _counted(self, scope: Scope, receive: Receive, send: Send) -> None:
        received, started = 0, False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLargeError(self.max_bytes)
            return message

        async def watching_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        except BodyTooLargeError:
            # Only reached when no handler inside turned it into a response (a route
            # outside FastAPI's body parsing that reads the body itself).
            if started:
                raise
            await too_large(self.max_bytes)(scope, receive, send)


def content_length(scope: Scope) -> int | None:
    """The declared body size; None when absent or unreadable (the server rejects those)."""
    value = Headers(scope=scope).get("content-length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def too_large_detail(limit: int) -> str:
    return (
        f"the request body is larger than this server's limit of {limit} bytes: send "
        "fewer articles (or queries) per request, or raise RETRIEVAL_MAX_BODY_BYTES"
    )


def too_large(limit: int) -> JSONResponse:
    return JSONResponse({"detail": too_large_detail(limit)}, status_code=413)
