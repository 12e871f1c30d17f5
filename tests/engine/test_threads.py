"""Grad mode is per thread and per asyncio task: one worker's ``no_grad`` never leaks to another.

Two threads step in lock-step (a barrier between steps), so that at every
step one is inside ``no_grad`` while the other records a graph; both check
what they see after every op. The same with asyncio tasks that yield to each
other inside their grad-mode blocks.
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np

import engine

ROUNDS = 200


def test_no_grad_in_one_thread_does_not_leak_into_another():
    barrier = threading.Barrier(2, timeout=10)
    failures = []

    def without_grad():
        x = engine.ones(3, requires_grad=True)
        for i in range(ROUNDS):
            with engine.no_grad():
                barrier.wait()  # the other thread is recording right now
                y = x * 2 + i
                if y.requires_grad or engine.is_grad_enabled():
                    failures.append(f"no_grad thread recorded at round {i}")
                barrier.wait()
            if not engine.is_grad_enabled():
                failures.append(f"no_grad leaked past its block at round {i}")

    def with_grad():
        x = engine.ones(3, requires_grad=True)
        for i in range(ROUNDS):
            barrier.wait()  # the other thread is inside no_grad right now
            y = (x * 2 + i).sin().sum()
            if not y.requires_grad or y.grad_fn is None:
                failures.append(f"recording thread saw no_grad at round {i}")
            else:
                (g,) = engine.autograd.grad(y, x)
                expected = 2 * np.cos(2 + i)
                if not np.allclose(g.numpy(), expected, rtol=1e-4, atol=1e-5):
                    failures.append(f"wrong gradient at round {i}")
            barrier.wait()

    threads = [threading.Thread(target=without_grad), threading.Thread(target=with_grad)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert not failures, failures[:5]
    assert engine.is_grad_enabled()


def test_set_grad_enabled_false_in_a_thread_stays_in_that_thread():
    seen = {}

    def worker():
        engine.set_grad_enabled(False)
        seen["worker"] = engine.is_grad_enabled()

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen["worker"] is False
    assert engine.is_grad_enabled()
    assert engine.ones(1, requires_grad=True).mul(2).requires_grad


def test_no_grad_in_one_asyncio_task_does_not_leak_into_another():
    failures = []

    async def without_grad():
        x = engine.ones(2, requires_grad=True)
        for i in range(ROUNDS):
            with engine.no_grad():
                await asyncio.sleep(0)  # the other task runs inside this block
                if (x * i).requires_grad:
                    failures.append(f"no_grad task recorded at round {i}")
                await asyncio.sleep(0)

    async def with_grad():
        x = engine.ones(2, requires_grad=True)
        for i in range(ROUNDS):
            await asyncio.sleep(0)
            y = (x * i).sum()
            if not y.requires_grad:
                failures.append(f"recording task saw no_grad at round {i}")
            await asyncio.sleep(0)

    async def main():
        await asyncio.gather(without_grad(), with_grad())

    asyncio.run(main())
    assert not failures, failures[:5]
    assert engine.is_grad_enabled()


def test_no_grad_decorated_coroutines_interleave_cleanly():
    failures = []

    @engine.no_grad()
    def compute_without_grad(x):
        return x * 2

    async def task(kind):
        x = engine.ones(2, requires_grad=True)
        for _ in range(50):
            y = compute_without_grad(x) if kind == "off" else x * 2
            await asyncio.sleep(0)
            if y.requires_grad != (kind == "on"):
                failures.append(kind)

    async def main():
        await asyncio.gather(task("off"), task("on"), task("off"), task("on"))

    asyncio.run(main())
    assert not failures
