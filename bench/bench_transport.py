"""Tensors on the wire: binary frames (the Open Inference Protocol's binary-data extension) vs base64 and JSON.

Two measurements, each over loopback against uvicorn (one worker, access log off), with plain
httpx as the client, interleaved so that every variant sees the same background load:

- Transport: ``/v1/evaluate`` of ``x`` (no compute) with 1e6 float32 as a binary frame, asking
  for a binary answer, against a bare ASGI endpoint started in the same run that echoes the same
  bytes back with the same headers. The client builds the frame and reads the answer's array
  both times. Target (issue 18): at most 2x the echo.
- The 1e6 float32 gradient round trip of ``sum(x * sin(x))`` on ``/v1/grad``: the client encodes
  ``x``, the server computes, the client decodes the gradient; binary vs base64 vs JSON. Target:
  binary at least 3x faster than base64.
"""

from __future__ import annotations

import statistics
import time

import httpx
import numpy as np
import orjson

try:  # what a performance-minded client would use for base64
    import pybase64 as base64
except ImportError:
    import base64

from bench.bench_http import Served
from bench.timing import Table, fmt_time

N = 1_000_000
ROUNDS = 15
BINARY = "application/octet-stream"
HEADER_LENGTH = "Inference-Header-Content-Length"


def echo_app():
    """A bare ASGI endpoint: reads the body and sends it back with the frame's headers."""

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        length = next((v for k, v in scope["headers"] if k == b"inference-header-content-length"), b"0")
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", BINARY.encode()), (b"content-length", str(len(body)).encode()),
            (b"inference-header-content-length", length)]})
        await send({"type": "http.response.body", "body": body})

    return app


def frame(request: dict, tensors: dict) -> tuple[bytes, dict]:
    """A binary request: ``request`` with each named array of ``tensors`` as a binary tensor in inputs."""
    inputs = {name: {"shape": list(a.shape), "dtype": str(a.dtype), "parameters": {"binary_data_size": a.nbytes},
                     **extra} for name, (a, extra) in tensors.items()}
    header = orjson.dumps({**request, "inputs": inputs})
    header += b" " * (-len(header) % 8)  # JSON allows the spaces; the first tensor's bytes then start aligned
    body = b"".join([header, *(memoryview(a).cast("B") for a, _ in tensors.values())])
    return body, {"Content-Type": BINARY, HEADER_LENGTH: str(len(header)), "Accept": BINARY}


def binary_tensor(response: httpx.Response, *path):
    """The array at ``path`` in a binary answer: the JSON is walked in document order, each binary
    tensor's bytes following the previous one's."""
    length = int(response.headers[HEADER_LENGTH])
    offset, found = length, None

    def walk(value, at):
        nonlocal offset, found
        if isinstance(value, dict):
            size = (value.get("parameters") or {}).get("binary_data_size")
            if size is not None:
                if at == path:
                    found = np.frombuffer(response.content, dtype=np.dtype(value["dtype"]).newbyteorder("<"),
                                          count=int(np.prod(value["shape"])), offset=offset)
                offset += size
                return
            for key, item in value.items():
                walk(item, (*at, key))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, (*at, i))

    walk(orjson.loads(response.content[:length]), ())
    return found


def transport_trip(client: httpx.Client, url: str, x) -> float:
    start = time.perf_counter()
    body, headers = frame({"expr": "x"}, {"x": (x, {})})
    response = client.post(url, content=body, headers=headers)
    if url.endswith("/v1/evaluate"):
        out = binary_tensor(response, "outputs", 0)
    else:  # the echo: the same frame back, its tensor under inputs.x
        out = binary_tensor(response, "inputs", "x")
    elapsed = time.perf_counter() - start
    assert response.status_code == 200 and out.shape == (N,) and out[-1] == x[-1]
    return elapsed


def gradient_trip(client: httpx.Client, url: str, encoding: str, x) -> float:
    """Client encode -> POST /v1/grad of sum(x * sin(x)) -> client decode of the gradient."""
    start = time.perf_counter()
    request = {"expr": "(x * x.sin()).sum()"}
    if encoding == "binary":
        body, headers = frame(request, {"x": (x, {"requires_grad": True})})
        response = client.post(url, content=body, headers=headers)
        grad = binary_tensor(response, "grads", "x")
    else:
        if encoding == "base64":
            tensor = {"b64": base64.b64encode(x.tobytes()).decode(), "shape": [N], "requires_grad": True}
        else:
            tensor = {"data": x, "requires_grad": True}
        body = orjson.dumps({**request, "inputs": {"x": tensor}, "encoding": encoding},
                            option=orjson.OPT_SERIALIZE_NUMPY)
        response = client.post(url, content=body, headers={"Content-Type": "application/json"})
        wire = orjson.loads(response.content)["grads"]["x"]
        if encoding == "base64":
            grad = np.frombuffer(base64.b64decode(wire["b64"]), "<f4")
        else:
            grad = np.asarray(wire["data"], np.float32)
    elapsed = time.perf_counter() - start
    assert response.status_code == 200 and grad.shape == (N,)
    expected = np.sin(x[:4].astype(np.float64)) + x[:4] * np.cos(x[:4].astype(np.float64))
    assert np.allclose(grad[:4], expected, rtol=1e-5, atol=1e-6)
    return elapsed


def run() -> list[Table]:
    x = np.random.default_rng(0).standard_normal(N).astype("<f4")
    trips: dict[str, list[float]] = {}
    with Served("bench.bench_transport:echo_app") as echo, Served("service.app:create_app") as service, \
            httpx.Client(timeout=60) as client:
        variants = {
            "echo": lambda: transport_trip(client, echo.url + "/echo", x),
            "evaluate": lambda: transport_trip(client, service.url + "/v1/evaluate", x),
            **{f"grad {e}": (lambda e=e: gradient_trip(client, service.url + "/v1/grad", e, x))
               for e in ("binary", "base64", "json")},
        }
        for fn in variants.values():  # warm-up: imports, caches, connections
            fn()
        for _ in range(ROUNDS):
            for name, fn in variants.items():
                trips.setdefault(name, []).append(fn())
    median = {name: statistics.median(samples) for name, samples in trips.items()}

    transport = Table(f"Transport: 1e6 float32 as a binary frame, client to server and back (median of {ROUNDS} "
                      "interleaved rounds)", ["endpoint", "round trip", "vs echo", "target"])
    transport.add("bare ASGI echo of the same frame", fmt_time(median["echo"]), "1.00x", "")
    transport.add("POST /v1/evaluate of `x`, binary in and out", fmt_time(median["evaluate"]),
                  f"{median['evaluate'] / median['echo']:.2f}x", "<= 2x")

    gradient = Table(f"1e6 float32 gradient round trip of sum(x * sin(x)) with httpx (client encode -> /v1/grad "
                     f"-> client decode; median of {ROUNDS} interleaved rounds)",
                     ["encoding", "end to end", "base64 / this", "target"])
    for encoding in ("binary", "base64", "json"):
        t = median[f"grad {encoding}"]
        gradient.add(encoding, fmt_time(t), f"{median['grad base64'] / t:.2f}x",
                     ">= 3x" if encoding == "binary" else "")
    return [transport, gradient]
