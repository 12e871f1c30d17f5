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

import orjson
from fastapi import Request
from fastapi.routing import APIRoute
from starlette.responses import Response

from service import compute
from service.errors import OverloadedError


class OrjsonRequest(Request):
    async def json(self):
        if not hasattr(self, "_json"):
            self._json = orjson.loads(await self.body())
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
        payload = await in_worker(request, compute.run_in_worker, handler, body, settings,
                                  request.app.state.metrics.count_ops)
    elapsed_ms = (time.perf_counter() - started) * 1000
    return Response(payload, media_type="application/json", headers={"Server-Timing": f"compute;dur={elapsed_ms:.2f}"})
