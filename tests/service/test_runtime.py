"""service.runtime: compute slots held until the thread ends, 503 after the queue timeout, one lifecycle."""

from __future__ import annotations

import asyncio
import threading

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings
from service.errors import OverloadedError
from service.runtime import Runtime


def started_runtime(max_concurrency: int, queue_timeout_s: float = 5.0) -> Runtime:
    runtime = Runtime(Settings(max_concurrency=max_concurrency, queue_timeout_s=queue_timeout_s))
    runtime.start()
    return runtime


def test_a_cancelled_request_keeps_its_slot_until_its_thread_ends():
    release = threading.Event()
    runtime = started_runtime(max_concurrency=1)

    async def scenario():
        async def call():
            async with runtime.slot():
                return await runtime.in_worker(release.wait, 5)

        task = asyncio.create_task(call())
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.sleep(0.05)
        held_while_running = runtime.slots.locked()  # the thread still computes
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        return held_while_running, runtime.slots.locked()

    try:
        held, held_after = asyncio.run(scenario())
    finally:
        runtime.close()
    assert held and not held_after


def test_a_full_house_answers_overloaded_after_the_queue_timeout():
    release = threading.Event()
    runtime = started_runtime(max_concurrency=1, queue_timeout_s=0.05)

    async def scenario():
        async def busy():
            async with runtime.slot():
                await runtime.in_worker(release.wait, 5)

        running = asyncio.create_task(busy())
        await asyncio.sleep(0.02)
        try:
            with pytest.raises(OverloadedError):
                async with runtime.slot():
                    pass
        finally:
            release.set()
            await running

    try:
        asyncio.run(scenario())
    finally:
        runtime.close()


def test_work_before_start_says_the_lifespan_did_not_run():
    runtime = Runtime(Settings())

    async def scenario():
        async with runtime.slot():
            pass

    with pytest.raises(RuntimeError, match="lifespan"):
        asyncio.run(scenario())


def test_the_lifespan_starts_the_runtime_and_shutdown_stops_the_workers(tmp_path):
    app = create_app(Settings(data_dir=str(tmp_path)))
    assert app.state.runtime.workers is None  # nothing runs before startup
    with TestClient(app) as client:
        assert client.post("/v1/evaluate", json={"inputs": {"a": 1.0}, "expr": "a + 1"}).status_code == 200
        workers = app.state.runtime.workers
        assert workers is not None
    assert app.state.runtime.workers is None
    with pytest.raises(RuntimeError, match="shutdown"):
        workers.submit(print)
    with TestClient(app) as client:  # a second lifespan starts afresh
        assert client.post("/v1/evaluate", json={"inputs": {"a": 1.0}, "expr": "a + 1"}).status_code == 200
