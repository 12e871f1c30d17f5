"""ASGI middleware: the request-body size limit, request metrics, the API key.

All three are plain ASGI (no ``BaseHTTPMiddleware``), so they add no task or
copy per request. The body limit reads the body itself, counting every chunk
(``Transfer-Encoding: chunked`` bodies have no Content-Length to trust), and
replays it to the app once it is known to fit.
"""

from __future__ import annotations

import hmac
import time

from service.codec import dumps
from service.errors import BodyTooLargeError, UnauthorizedError, problem_for
from service.metrics import Metrics

PROBLEM_HEADERS = [(b"content-type", b"application/problem+json")]


async def send_problem(send, error, extra_headers=()) -> None:
    body = problem_for(error)
    payload = dumps(body)
    headers = [*PROBLEM_HEADERS, (b"content-length", str(len(payload)).encode()), *extra_headers]
    await send({"type": "http.response.start", "status": body["status"], "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class BodyLimitMiddleware:
    """413 for request bodies over ``max_bytes``, whether or not they declare a length."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            return await self.app(scope, receive, send)
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    return await self._too_large(send)
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_bytes:
                return await self._too_large(send)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        try:
            # A bytearray: binary tensors (service.codec.decode_frame) are writable views of it, so the
            # engine uses them in place (gradcheck perturbs its inputs) instead of copying them.
            body = bytearray().join(chunks)
        except MemoryError as error:  # out here no exception handler runs: answer 503 ourselves
            return await send_problem(send, error, [(b"retry-after", b"1")])
        del chunks
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _too_large(self, send):
        error = BodyTooLargeError(f"the request body is larger than the limit of {self.max_bytes} bytes",
                                  limit=self.max_bytes)
        await send_problem(send, error, [(b"connection", b"close")])


class MetricsMiddleware:
    """Counts requests and observes latency, labelled by route template (never the raw path)."""

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 500
        started = time.perf_counter()

        async def capture(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, capture)
        finally:
            self.metrics.in_flight.dec()
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.observe_request(scope["method"], route, status, time.perf_counter() - started)


class ApiKeyMiddleware:
    """When a key is configured, 401 without a matching ``X-API-Key`` (constant-time compare).

    Health, the playground (``/`` and ``/playground/``), the docs pages and their assets, and the
    OpenAPI document stay open.
    """

    OPEN_PATHS = ("/", "/healthz", "/readyz", "/docs", "/redoc", "/openapi.json")
    OPEN_PREFIXES = ("/static-offline-docs/", "/docs/", "/playground/")

    def __init__(self, app, api_key: str):
        self.app = app
        self.key = api_key.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self._open(scope["path"]):
            return await self.app(scope, receive, send)
        given = b""
        for name, value in scope["headers"]:
            if name == b"x-api-key":
                given = value
                break
        if not hmac.compare_digest(given, self.key):
            error = UnauthorizedError("send the API key in the X-API-Key header" if not given else "wrong API key")
            return await send_problem(send, error, [(b"www-authenticate", b'APIKey header="X-API-Key"')])
        return await self.app(scope, receive, send)

    def _open(self, path: str) -> bool:
        return path in self.OPEN_PATHS or path.startswith(self.OPEN_PREFIXES)
