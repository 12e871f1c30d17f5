"""Cached plans run compiled (``engine.compile``): replayed results equal eager ones, a guard that
fails records another variant, random ops draw afresh, profiling stays eager, and the metrics and
``Server-Timing`` say how each call ran."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings
from tests.metrics import sample

SIN = {"inputs": {"a": {"data": [0.0, 0.5, 1.0], "requires_grad": True}}, "expr": "(2 * sin(a) + 1).sum()"}

# The tutorial's doubling loop: how many times y doubles depends on x's values.
DOUBLING = """y = x * 2
while y.data.norm() < 1000:
    y = y * 2
return y.sum()"""


def run_of(response) -> str:
    timing = response.headers["server-timing"]
    return timing.split('run;desc="')[1].split('"')[0]


def metric(client, name: str, **labels: str) -> float:
    value = sample(client, name, **labels)
    assert value is not None, f"{name} not in /metrics"
    return value


@pytest.fixture
def client(tmp_path):
    with TestClient(create_app(Settings(data_dir=str(tmp_path)))) as client:
        yield client


def doublings(x: list[float]) -> int:
    """How many times the doubling loop multiplies x by 2, in float64."""
    y, count = np.asarray(x, dtype=np.float64) * 2, 1
    while np.linalg.norm(y) < 1000:
        y, count = y * 2, count + 1
    return count


def test_a_replayed_gradient_equals_the_formula_and_describes_the_eager_graph(client):
    expected = 2 * np.cos(SIN["inputs"]["a"]["data"])
    runs = []
    for _ in range(3):
        response = client.post("/v1/grad", json=SIN)
        assert response.status_code == 200
        body = response.json()
        np.testing.assert_allclose(body["grads"]["a"]["data"], expected, rtol=1e-6)
        assert body["outputs"][0]["data"] == pytest.approx([sum(2 * np.sin([0.0, 0.5, 1.0]) + 1)], rel=1e-6)
        assert body["graph"][0]["name"] == "SumBackward0"  # PyTorch's graph, not the compiled node
        runs.append(run_of(response))
    assert runs == ["recompiled", "replayed", "replayed"]


def test_a_stored_function_replays(client):
    created = client.post("/v1/functions", json={"expr": SIN["expr"]})
    location = created.headers["location"]
    inputs = {"inputs": SIN["inputs"]}
    runs = [run_of(client.post(f"{location}/grad", json=inputs)) for _ in range(2)]
    assert runs == ["recompiled", "replayed"]
    body = client.post(f"{location}/grad", json=inputs).json()
    np.testing.assert_allclose(body["grads"]["a"]["data"], 2 * np.cos([0.0, 0.5, 1.0]), rtol=1e-6)


def test_a_guard_failure_records_another_variant_with_the_right_gradient(client):
    small, large = [0.5, 0.25, 1.0], [100.0, 50.0, 200.0]
    assert doublings(small) != doublings(large)
    guard_failures = metric(client, "gradserve_plan_guard_failures_total")
    runs = []
    for x in (small, small, large, large, small, large):
        request = {"program": DOUBLING, "inputs": {"x": {"data": x, "requires_grad": True}}}
        response = client.post("/v1/grad", json=request)
        assert response.status_code == 200
        body = response.json()
        k = doublings(x)
        np.testing.assert_allclose(body["grads"]["x"]["data"], [2.0**k] * 3, rtol=1e-6)
        assert body["outputs"][0]["data"] == pytest.approx([2.0**k * sum(x)], rel=1e-6)
        assert [node["name"] for node in [body["graph"][0]]] == ["SumBackward0"]
        runs.append(run_of(response))
    assert runs == ["recompiled", "replayed", "recompiled", "replayed", "replayed", "replayed"]
    assert metric(client, "gradserve_plan_guard_failures_total") == guard_failures + 1


def test_random_ops_draw_afresh_at_every_replay(client):
    request = {"expr": "(x + rand(4)).sum()", "inputs": {"x": {"data": [0.0] * 4, "requires_grad": True}}}
    outputs = []
    for _ in range(4):
        response = client.post("/v1/grad", json=request)
        body = response.json()
        assert body["grads"]["x"]["data"] == [1.0] * 4
        (total,) = body["outputs"][0]["data"]
        assert 0.0 <= total < 4.0
        outputs.append(total)
    assert run_of(response) == "replayed"
    assert len(set(outputs)) == len(outputs)  # four sums of four uniform draws: equal ones would be a replayed draw


def test_a_graph_break_runs_eagerly_and_counts_as_a_fallback(client):
    request = {"expr": "x[x > 0].sum()", "inputs": {"x": {"data": [-1.0, 2.0, 3.0], "requires_grad": True}}}
    fallbacks = metric(client, "gradserve_plan_fallbacks_total")
    for _ in range(3):
        response = client.post("/v1/grad", json=request)
        assert response.status_code == 200
        assert response.json()["grads"]["x"]["data"] == [0.0, 1.0, 1.0]
    assert run_of(response) == "eager"
    assert metric(client, "gradserve_plan_fallbacks_total") == fallbacks + 3


def test_profiling_a_replaying_plan_sees_every_op(client):
    for _ in range(2):
        client.post("/v1/grad", json=SIN)
    response = client.post("/v1/grad", json={**SIN, "profile": True})
    assert response.status_code == 200
    assert run_of(response) == "profiled"
    names = {row["name"] for row in response.json()["profile"]["rows"]}
    assert {"engine::sin", "engine::mul", "engine::add", "engine::sum"} <= names
    fallbacks = metric(client, "gradserve_plan_fallbacks_total")
    assert fallbacks == 0  # a profiled call is eager by design, not a fallback


def test_a_jacobian_and_gradcheck_run_on_a_compiled_plan(client):
    request = {"expr": "x.tanh() * y", "inputs": {"x": [0.1, -0.4, 0.9], "y": [2.0, 3.0, 0.5]}}
    for _ in range(2):
        body = client.post("/v1/jacobian", json=request).json()
    x, y = np.array([0.1, -0.4, 0.9]), np.array([2.0, 3.0, 0.5])
    np.testing.assert_allclose(np.asarray(body["jacobian"][0]["data"]).reshape(3, 3),
                               np.diag(y / np.cosh(x) ** 2), rtol=1e-5, atol=1e-7)
    checked = client.post("/v1/gradcheck", json={**request, "dtype": "float64"}).json()
    assert checked["passed"] and checked["max_abs_error"] < math.sqrt(1e-12) * 1e3


def thread_of(response) -> str:
    return response.headers["server-timing"].split('thread;desc="')[1].split('"')[0]


def test_only_tiny_replays_run_on_the_event_loop(client):
    threads = [thread_of(client.post("/v1/grad", json=SIN)) for _ in range(3)]
    assert threads == ["worker", "inline", "inline"]  # the trace (and the graph's description), then replays

    # a small body whose plan is not tiny: 5000 elements from one
    big = {"expr": "(2 * sin(a.expand(5000)) + 1).sum()", "inputs": {"a": {"data": [0.25], "requires_grad": True}}}
    for _ in range(3):
        response = client.post("/v1/grad", json=big)
        assert response.status_code == 200
        np.testing.assert_allclose(response.json()["grads"]["a"]["data"], [5000 * 2 * math.cos(0.25)], rtol=1e-5)
    assert run_of(response) == "replayed" and thread_of(response) == "worker"

    profiled = client.post("/v1/grad", json={**SIN, "profile": True})
    assert thread_of(profiled) == "worker" and run_of(profiled) == "profiled"


def test_a_guard_failure_met_inline_reruns_in_a_worker(tmp_path):
    small, large = [0.5, 0.25, 1.0], [100.0, 50.0, 200.0]
    requests = {name: {"program": DOUBLING, "inputs": {"x": {"data": x, "requires_grad": True}}}
                for name, x in (("small", small), ("large", large))}
    mul_counts = []
    for padding in ("", " " * 9000):  # a body over 8 KiB never tries the event loop
        with TestClient(create_app(Settings(data_dir=str(tmp_path / str(len(padding)))))) as client:
            def post(name, client=client, padding=padding):
                body = orjson.dumps(requests[name]).decode() + padding
                return client.post("/v1/grad", content=body, headers={"content-type": "application/json"})

            for _ in range(3):
                post("small")
            ops = metric(client, "gradserve_engine_ops_total", op="mul")
            response = post("large")
            assert (run_of(response), thread_of(response)) == ("recompiled", "worker")
            np.testing.assert_allclose(response.json()["grads"]["x"]["data"], [2.0 ** doublings(large)] * 3,
                                       rtol=1e-6)
            mul_counts.append(metric(client, "gradserve_engine_ops_total", op="mul") - ops)
    # the inline attempt stopped at its first eager op and counted nothing: the worker's run alone counts
    assert mul_counts[0] == mul_counts[1] >= doublings(large)
