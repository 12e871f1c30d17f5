"""What every router shares: orjson body parsing, and running compute work off the event loop.

``OrjsonRoute`` makes FastAPI parse JSON bodies with orjson (several times
faster than ``json`` on big tensors); the models' tensor fields are ``Any``, so
pydantic passes the parsed lists through untouched.

``run_compute`` runs an engine-facing function from ``service.compute`` in
the thread pool, at most ``max_concurrency`` at once; a request that waits
longer than ``queue_timeout_s`` for a slot gets 503. The response's
``Server-Timing: compute;dur=<ms>`` says how long the worker took.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from concurrent.futures import ThreadPoolExecutor

from fastapi import HTTPException, Request
from fastapi.routing import APIRoute
from starlette.responses import Response

from service import codec, compute
from service.errors import OverloadedError


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


def compute_slots(request: Request) -> asyncio.Semaphore:
    state = request.app.state
    if getattr(state, "compute_slots", None) is None:
        state.compute_slots = asyncio.Semaphore(state.settings.max_concurrency)
    return state.compute_slots


@contextlib.asynccontextmanager
async def compute_slot(request: Request):
    """Hold one of the ``max_concurrency`` compute slots; 503 when none frees up in time.

    A free slot is taken without a trip through the event loop (asyncio's acquire returns at
    once); only a request that must queue pays for the timeout.
    """
    slots = compute_slots(request)
    if slots.locked():
        settings = request.app.state.settings
        try:
            await asyncio.wait_for(slots.acquire(), settings.queue_timeout_s)
        except TimeoutError:
            raise OverloadedError(f"all {settings.max_concurrency} compute slots are busy; retry shortly",
                                  limit=settings.max_concurrency) from None
    else:
        await slots.acquire()
    try:
        yield
    finally:
        slots.release()


def _workers(request: Request) -> ThreadPoolExecutor:
    state = request.app.state
    if getattr(state, "compute_workers", None) is None:
        state.compute_workers = ThreadPoolExecutor(state.settings.max_concurrency, thread_name_prefix="compute")
    return state.compute_workers


async def in_worker(request: Request, fn, *args):
    """``fn(*args)`` in one of the compute worker threads, in a copy of this context (as anyio's
    to_thread would, with one wake-up instead of several checkpoints); call under ``compute_slot``."""
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(_workers(request), contextvars.copy_context().run, fn, *args)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        # The thread cannot be stopped: keep the caller (and its compute slot) until it ends.
        await asyncio.wait([future])
        raise


async def run_compute(request: Request, handler, body) -> Response:
    """``handler(body, settings)`` in a worker thread, under the concurrency limit; a JSON response."""
    settings = request.app.state.settings
    async with compute_slot(request):
        started = time.perf_counter()
        parts = await in_worker(request, compute.run_in_worker, handler, body, settings,
                                request.app.state.metrics.count_ops)
    elapsed_ms = (time.perf_counter() - started) * 1000
    return json_response(parts, headers={"Server-Timing": f"compute;dur={elapsed_ms:.2f}"})


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
