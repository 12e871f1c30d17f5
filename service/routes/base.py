"""What every router shares: orjson body parsing, and running compute work off the event loop.

``OrjsonRoute`` makes FastAPI parse JSON bodies with orjson (several times
faster than ``json`` on big tensors); the models' tensor fields are ``Any``, so
pydantic passes the parsed lists through untouched.

``run_compute`` runs an engine-facing function from ``service.compute`` in
the runtime's worker threads (``service.runtime``), at most ``max_concurrency``
at once; a request that waits longer than ``queue_timeout_s`` for a slot gets 503. The response's
``Server-Timing`` says how long the worker took (``compute;dur=<ms>``), whether the function's
plan was cached (``plan;desc="hit"`` or ``"miss"``) and, on a miss, how long building it took
(``build;dur=<ms>``).
"""

from __future__ import annotations

import time

from fastapi import HTTPException, Request
from fastapi.routing import APIRoute
from starlette.responses import Response

from service import codec, compute
from service.compute import ComputeContext
from service.config import Settings
from service.dependencies import Services
from service.plans import FunctionSource


class OrjsonRequest(Request):
    async def json(self):
        if not hasattr(self, "_json"):
            try:
                self._json = codec.loads(await self.body())
            except MemoryError as error:  # FastAPI would make any other exception here a 400
                raise HTTPException(503, f"the server has no memory to parse this body now ({error}); retry shortly",
                                    headers={"Retry-After": "1"}) from None
        return self._json


class OrjsonRoute(APIRoute):
    """An APIRoute whose request body is parsed by orjson."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def orjson_handler(request: Request) -> Response:
            return await handler(OrjsonRequest(request.scope, request.receive))

        return orjson_handler


async def run_compute(services: Services, handler, body, settings: Settings,
                      function: FunctionSource | None = None) -> Response:
    """``handler(body, context)`` in a worker thread, under the concurrency limit; a JSON response.

    ``function`` is a stored function's (``/v1/functions/{id}/...``); None: the body's own.
    """
    runtime = services.runtime
    context = ComputeContext(settings, runtime.plans, function)
    async with runtime.slot():
        started = time.perf_counter()
        parts = await runtime.in_worker(compute.run_in_worker, handler, body, context, services.metrics.count_ops)
    elapsed_ms = (time.perf_counter() - started) * 1000
    timing = f'compute;dur={elapsed_ms:.2f}, plan;desc="{"hit" if context.plan_hit else "miss"}"'
    if context.plan_hit is False:
        timing += f", build;dur={context.build_seconds * 1000:.2f}"
    return json_response(parts, headers={"Server-Timing": timing})


def json_response(parts: list, status_code: int = 200, headers: dict | None = None) -> Response:
    """A JSON response from ``codec.dumps_parts``: one bytes object, or its pieces sent one by one."""
    if len(parts) == 1:
        return Response(parts[0], status_code=status_code, media_type="application/json", headers=headers)
    return PiecewiseResponse(parts, status_code, headers)


SEND_BYTES = 1 << 20


class PiecewiseResponse(Response):
    """A body sent as the pieces it was written in (a large tensor's data, ~1 MB each), with its
    Content-Length: the whole text is never joined in memory, and each piece is dropped once sent."""

    media_type = "application/json"

    def __init__(self, parts: list, status_code: int = 200, headers: dict | None = None):
        self.parts = parts
        self.status_code = status_code
        self.background = None
        self.body = b""
        length = sum(len(part) for part in parts)
        self.init_headers({**(headers or {}), "content-length": str(length)})

    async def __call__(self, scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        parts, self.parts = self.parts[::-1], []
        batch, size = [], 0
        while parts:  # the small pieces (brackets, commas, keys) go out with their neighbours
            batch.append(parts.pop())
            size += len(batch[-1])
            if size >= SEND_BYTES or not parts:
                await send({"type": "http.response.body", "body": b"".join(batch), "more_body": bool(parts)})
                batch, size = [], 0
