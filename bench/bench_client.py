"""The Python client (``gradserve_client``) against the raw HTTP API it wraps.

- Overhead: the tutorial's sin example through ``Client.grad`` against a bare
  ``httpx`` POST of the same request (a prepared JSON body, the answer parsed
  but not decoded), one request at a time on one keep-alive connection, against
  the same server. Target (issue 18): at most 10% more time per call.
- Transport: the 1e6-element float32 gradient of ``sum(x * sin(x))`` end to end
  (encode, POST, server, decode) through the client in each encoding. Target:
  binary at least 3x faster than base64.
"""

from __future__ import annotations

import math
import statistics
import time

import httpx
import numpy as np
import orjson
from gradserve_client import Client

from bench.bench_http import SIN_REQUEST, Served
from bench.timing import Table, fmt_time

CALLS = 400
ROUNDS = 5


def _median_call(fn, calls: int) -> float:
    fn()  # warm: connection, plan cache
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def overhead(url: str) -> tuple[float, float]:
    """Best-of-rounds seconds per sin-example call: (bare httpx, client)."""
    body = orjson.dumps(SIN_REQUEST)
    a = np.asarray(SIN_REQUEST["inputs"]["a"]["data"], dtype=np.float32)
    bare_rounds, client_rounds = [], []
    with httpx.Client(base_url=url, timeout=30) as http, Client(url, encoding="json") as client:
        def bare():
            response = http.post("/v1/grad", content=body, headers={"content-type": "application/json"})
            return orjson.loads(response.content)

        def ours():
            return client.grad(expr=SIN_REQUEST["expr"], inputs={"a": a}, requires_grad=["a"])

        for _ in range(ROUNDS):  # interleaved, so both see the same background load
            bare_rounds.append(_median_call(bare, CALLS))
            client_rounds.append(_median_call(ours, CALLS))
    return min(bare_rounds), min(client_rounds)


def round_trip(url: str, encoding: str, n: int = 1_000_000, repeat: int = 5) -> float:
    x = np.linspace(-3.0, 3.0, n, dtype=np.float32)
    samples = []
    with Client(url, encoding=encoding, timeout=120) as client:
        for _ in range(repeat + 1):
            start = time.perf_counter()
            grad = client.grad(expr="(x * sin(x)).sum()", inputs={"x": x}, requires_grad=["x"]).grads["x"]
            samples.append(time.perf_counter() - start)
            assert grad.shape == (n,) and math.isclose(grad[-1], math.sin(3.0) + 3.0 * math.cos(3.0), rel_tol=1e-5)
    return statistics.median(samples[1:])


def run() -> list[Table]:
    with Served("service.app:create_app") as service:
        bare, ours = overhead(service.url)
        trips = {encoding: round_trip(service.url, encoding) for encoding in ("binary", "base64", "json")}
    calls = Table(f"Client overhead: the sin example on /v1/grad, one call at a time (best of {ROUNDS} rounds "
                  f"of {CALLS})", ["caller", "per call", "vs bare httpx", "target"])
    calls.add("bare httpx (prepared JSON body)", fmt_time(bare), "1.00x", "")
    calls.add("gradserve_client.Client.grad", fmt_time(ours), f"{ours / bare:.2f}x", "<= 1.10x")
    transport = Table("1e6 float32 gradient of sum(x * sin(x)) through the client, end to end (median of 5)",
                      ["encoding", "end to end", "vs binary", "target"])
    for encoding, seconds in trips.items():
        target = ">= 3x binary" if encoding == "base64" else ""
        transport.add(encoding, fmt_time(seconds), f"{seconds / trips['binary']:.2f}x", target)
    return [calls, transport]
