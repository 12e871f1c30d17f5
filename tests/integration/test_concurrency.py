"""200 mixed requests from 20 concurrent clients give exactly their one-by-one results.

The mix includes programs that switch grad mode off (``with no_grad():``) and
requests that build graphs: grad mode is a ContextVar and graphs are per
request, so neither can leak between requests served at the same time.
"""

from __future__ import annotations

import asyncio
import random

import httpx
import pytest

pytestmark = pytest.mark.integration


def leaf(values):
    return {"data": values, "requires_grad": True}


def mixed_requests(count: int) -> list[tuple[str, dict]]:
    rng = random.Random(0)
    requests = []
    for i in range(count):
        x = [round(rng.uniform(-2, 2), 3) for _ in range(4)]
        kind = i % 7
        if kind == 0:
            requests.append(("/v1/grad", {"inputs": {"a": leaf(x)}, "expr": "(2 * sin(a) + 1).sum()"}))
        elif kind == 1:  # no_grad inside the program, then a graph outside it
            program = "with no_grad():\n    y = a * 3\nz = (a * y).sum()\nreturn z"
            requests.append(("/v1/grad", {"inputs": {"a": leaf(x)}, "program": program}))
        elif kind == 2:  # a whole program under no_grad, on the evaluate endpoint (no_grad too)
            program = "with no_grad():\n    y = a.exp()\n    return y * 2"
            requests.append(("/v1/evaluate", {"inputs": {"a": x}, "program": program}))
        elif kind == 3:
            program = "y = a * 2\nwhile y.norm() < 1000:\n    y = y * 2\nreturn y"
            requests.append(("/v1/grad", {"inputs": {"a": leaf(x)}, "program": program,
                                          "grad_outputs": [[0.1, 1.0, 0.0001, 2.0]]}))
        elif kind == 4:
            requests.append(("/v1/jacobian", {"inputs": {"a": x, "b": x[::-1]}, "expr": "a.exp() * b"}))
        elif kind == 5:
            requests.append(("/v1/hvp", {"inputs": {"a": x}, "expr": "(a.sin() * a).sum()", "v": [1.0, 0, 0, 1]}))
        else:  # a graph-mode toggle that must not leak: set_grad_enabled(False) around half the work
            program = "with set_grad_enabled(False):\n    c = a * a\nreturn (c + a).sum()"
            requests.append(("/v1/grad", {"inputs": {"a": leaf(x)}, "program": program, "encoding": "base64"}))
    return requests


async def send_all(url: str, requests, concurrency: int):
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60.0, limits=limits) as client:
        gate = asyncio.Semaphore(concurrency)

        async def one(path, body):
            async with gate:
                response = await client.post(path, json=body)
                return response.status_code, response.json()

        return await asyncio.gather(*(one(path, body) for path, body in requests))


def test_concurrent_results_equal_sequential_results(server, http):
    requests = mixed_requests(200)
    sequential = [(r.status_code, r.json()) for r in (http.post(path, json=body) for path, body in requests)]
    assert all(status == 200 for status, _ in sequential), [b for s, b in sequential if s != 200][:1]
    concurrent = asyncio.run(send_all(server.url, requests, concurrency=20))
    for (path, _), got, expected in zip(requests, concurrent, sequential):
        assert got == expected, path
