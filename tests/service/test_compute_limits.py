"""What a compute call may build: results refused before they are computed, batched passes
sized to ``max_live_elements``, gradcheck's Jacobians and profiles bounded, responses counted.

In-process (the app behind Starlette's TestClient); memory is tracemalloc's count of numpy's
allocations in the worker thread. Nothing is timed.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings


def client_with(**settings) -> TestClient:
    return TestClient(create_app(Settings(**settings)), raise_server_exceptions=False)


def zeros(n: int) -> dict:
    return {"data": [0.0] * n}


@pytest.mark.parametrize(("path", "body", "elements", "names"), [
    ("/v1/hessian", {"inputs": {"x": zeros(101)}, "expr": "(x.sin()).sum()"}, 101 * 101 + 1, "inputs [[101]]"),
    ("/v1/hessian", {"inputs": {"x": zeros(60), "y": zeros(41)}, "expr": "(x.sum() * y).sum()"}, 101 * 101 + 1,
     "inputs [[60], [41]]"),
    ("/v1/jacobian", {"inputs": {"x": zeros(100)}, "expr": "x.sin()"}, 100 * 100 + 100,
     "outputs [[100]] by inputs [[100]]"),
    ("/v1/jacobian", {"inputs": {"x": zeros(30)}, "program": "return x, outer(x, x)"}, 930 * 30 + 930,
     "outputs [[30], [30, 30]] by inputs [[30]]"),
])
def test_a_result_over_the_response_limit_is_413_before_it_is_computed(path, body, elements, names):
    with client_with(max_response_elements=10_000) as client:
        response = client.post(path, json=body)
    assert response.status_code == 413
    problem = response.json()
    assert problem["type"] == "/problems/response-too-large" and problem["kind"] == "response_elements"
    assert problem["elements"] == elements and problem["limit"] == 10_000
    assert names in problem["detail"]


def test_a_result_at_the_limit_is_computed():
    with client_with(max_response_elements=101 * 101 + 1) as client:
        response = client.post("/v1/hessian", json={"inputs": {"x": zeros(101)}, "expr": "(x * x).sum()"})
    assert response.status_code == 200
    assert np.allclose(np.reshape(response.json()["hessian"]["data"], (101, 101)), 2 * np.eye(101))


def test_responses_are_counted_as_they_are_encoded():
    with client_with(max_response_elements=1000) as client:
        fits = client.post("/v1/evaluate", json={"inputs": {"x": zeros(1)}, "program": "y = ones(500)\nreturn y, y"})
        over = client.post("/v1/evaluate", json={"inputs": {"x": zeros(1)},
                                                 "program": "y = ones(500)\nreturn y, y, x"})
    assert fits.status_code == 200
    assert over.status_code == 413 and over.json()["elements"] == 1001


WIDE = "(outer(x, ones(4000)).sin() * x.sum()).sum()"  # 40 inputs: intermediates of 40 x 4000 per row


def _peak(client, path, body):
    tracemalloc.start()
    try:
        response = client.post(path, json=body)
        return response, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/hessian", {"inputs": {"x": {"data": np.linspace(-1, 1, 40).tolist()}}, "expr": WIDE, "dtype": "float64"}),
    ("/v1/jacobian", {"inputs": {"x": {"data": np.linspace(-1, 1, 40).tolist()}}, "dtype": "float64",
                      "expr": "(outer(x, ones(4000)).sin() * 2).sum(1)", "strategy": "reverse-mode"}),
])
def test_batched_passes_are_sized_to_the_live_elements(path, body):
    with client_with() as client:
        unbounded, unbounded_peak = _peak(client, path, body)
    with client_with(max_live_elements=2_000_000) as client:
        bounded, bounded_peak = _peak(client, path, body)
        asked_for_all = client.post(path, json={**body, "chunk_size": 40})  # an upper bound, lowered to fit
    key = path.rsplit("/", 1)[1]
    expected = np.asarray(unbounded.json()[key]["data"])
    for response in (bounded, asked_for_all):
        assert response.status_code == 200
        np.testing.assert_allclose(response.json()[key]["data"], expected, rtol=1e-12, atol=1e-12)
    assert bounded_peak < unbounded_peak / 2


def test_gradcheck_refuses_jacobians_it_could_not_hold():
    with client_with(max_program_elements=10_000, max_live_elements=30_000) as client:
        per_tensor = client.post("/v1/gradcheck", json={"inputs": {"x": zeros(101)}, "expr": "x.sin()"})
        held_at_once = client.post("/v1/gradcheck", json={"inputs": {"x": zeros(100), "y": zeros(100)},
                                                          "expr": "x.sin() + y"})  # 2 x 20 000
        fits = client.post("/v1/gradcheck", json={"inputs": {"x": zeros(50)}, "expr": "x.sin()"})
    assert per_tensor.status_code == 413 and "input 'x'" in per_tensor.json()["detail"]
    assert per_tensor.json()["limit"] == 10_000
    assert held_at_once.status_code == 413 and held_at_once.json()["limit"] == 30_000
    assert fits.status_code == 200 and fits.json()["passed"] is True


def test_a_profile_stops_at_max_profile_events():
    body = {"inputs": {"x": zeros(2)}, "program": "for i in range(100):\n    x = x + 1\nreturn x.sum()"}
    with client_with(max_profile_events=150) as client:
        repeated = client.post("/v1/profile", json={**body, "repeat": 10})
        inline = client.post("/v1/evaluate", json={**body, "profile": True})  # 100 + 1 ops: fits
        once = client.post("/v1/profile", json={**body, "backward": True,  # and ~100 backward nodes
                                                "inputs": {"x": {"data": [0.0, 0.0], "requires_grad": True}}})
    assert repeated.status_code == 413
    problem = repeated.json()
    assert problem["type"] == "/problems/profile-too-large" and problem["limit"] == 150
    assert inline.status_code == 200 and inline.json()["profile"]["totals"]["events"] <= 150
    assert once.status_code == 413
