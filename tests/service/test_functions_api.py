"""``/v1/functions``: register, call every transform by id, read, delete; the answers equal the inline routes'."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings
from tests.problems import assert_problem

SIN = {"expr": "(2 * sin(a) + 1).sum()"}
INPUTS = {"a": {"data": [0.0, 0.5, 1.0], "requires_grad": True}}
V = [1.0, 0.5, -2.0]


@pytest.fixture
def client(tmp_path):
    with TestClient(create_app(Settings(data_dir=str(tmp_path)))) as client:
        yield client


def register(client, function: dict) -> str:
    response = client.post("/v1/functions", json=function)
    assert response.status_code in (200, 201), response.text
    return response.json()["id"]


def test_registration_is_idempotent_and_content_addressed(client):
    first = client.post("/v1/functions", json=SIN)
    assert first.status_code == 201
    function_id = first.json()["id"]
    assert first.headers["location"] == f"/v1/functions/{function_id}" == first.json()["location"]
    again = client.post("/v1/functions", json={"expr": "\n  (2 * sin(a) + 1).sum()  "})
    assert again.status_code == 200 and again.json()["id"] == function_id
    assert again.headers["location"] == first.headers["location"]
    other = client.post("/v1/functions", json={"expr": "(2 * sin(a) + 2).sum()"})
    assert other.status_code == 201 and other.json()["id"] != function_id
    assert client.get(f"/v1/functions/{function_id}").json() == {
        "id": function_id, "location": f"/v1/functions/{function_id}", "form": "expr", "inputs": ["a"],
        "expr": "(2 * sin(a) + 1).sum()"}


@pytest.mark.parametrize("bad", [
    {"program": "return exec('a')"},
    {"program": "import os\nreturn x"},
    {"expr": "a +"},
    {"graph": {"nodes": [{"op": "no_such_op", "inputs": ["a"], "output": "b"}], "outputs": ["b"]}},
    {"expr": "a", "program": "return a"},
])
def test_a_bad_function_is_refused_as_inline(client, bad):
    inline = client.post("/v1/evaluate", json={**bad, "inputs": {"a": [1.0]}})
    registered = client.post("/v1/functions", json=bad)
    assert registered.status_code == inline.status_code >= 400
    if registered.status_code != 422:
        body = assert_problem(registered, inline.status_code)
        assert body["type"] == inline.json()["type"]


def test_the_inputs_are_the_free_names(client):
    program = "total = 0\nfor k in range(3):\n    total = total + w * x ** k\nreturn total.sum() + pi"
    assert client.post("/v1/functions", json={"program": program}).json()["inputs"] == ["w", "x"]
    graph = {"nodes": [{"op": "mul", "inputs": ["a", "b"], "output": "c"},
                       {"op": "add", "inputs": ["c", "a"], "output": "d"}], "outputs": ["d"]}
    assert client.post("/v1/functions", json={"graph": graph}).json()["inputs"] == ["a", "b"]


CALLS = {
    "evaluate": {}, "grad": {}, "jacobian": {}, "hessian": {}, "vjp": {"v": 1.0}, "jvp": {"v": V},
    "hvp": {"v": V}, "vhp": {"v": V}, "gradcheck": {"dtype": "float64"},
}


@pytest.mark.parametrize("transform", list(CALLS))
def test_every_transform_by_id_equals_the_inline_route(client, transform):
    function_id = register(client, SIN)
    body = {"inputs": INPUTS, **CALLS[transform]}
    stored = client.post(f"/v1/functions/{function_id}/{transform}", json=body)
    inline = client.post(f"/v1/{transform}", json={**SIN, **body})
    assert stored.status_code == inline.status_code == 200, stored.text
    assert stored.json() == inline.json()  # the same compute function on the same plan: the same bytes
    assert 'plan;desc="miss"' in stored.headers["server-timing"]
    assert 'plan;desc="hit"' in inline.headers["server-timing"]  # the inline call reused the stored call's plan


def test_a_profile_by_id(client):
    function_id = register(client, SIN)
    content = client.post(f"/v1/functions/{function_id}/profile", json={"inputs": INPUTS, "backward": True}).json()
    assert {row["name"] for row in content["rows"]} >= {"engine::sin", "engine::sum"}


def test_the_grad_by_id_is_the_analytic_one(client):
    function_id = register(client, SIN)
    grads = client.post(f"/v1/functions/{function_id}/grad", json={"inputs": INPUTS}).json()["grads"]["a"]
    np.testing.assert_allclose(grads["data"], 2 * np.cos([0.0, 0.5, 1.0]), rtol=1e-6)


def test_a_call_takes_no_function_and_checks_its_inputs(client):
    function_id = register(client, SIN)
    assert client.post(f"/v1/functions/{function_id}/grad", json={"inputs": INPUTS, **SIN}).status_code == 422
    body = assert_problem(client.post(f"/v1/functions/{function_id}/grad", json={"inputs": {"b": [1.0]}}), 400)
    assert "a" in body["detail"]


def test_delete_then_404(client):
    function_id = register(client, SIN)
    assert client.delete(f"/v1/functions/{function_id}").status_code == 204
    for response in (client.get(f"/v1/functions/{function_id}"), client.delete(f"/v1/functions/{function_id}"),
                     client.post(f"/v1/functions/{function_id}/grad", json={"inputs": INPUTS})):
        assert assert_problem(response, 404)["type"] == "/problems/function-not-found"
    assert client.get("/v1/functions/" + "0" * 64).status_code == 404
    assert client.get("/v1/functions/not-a-hash").status_code == 422


def test_the_function_limit_is_507(tmp_path):
    with TestClient(create_app(Settings(data_dir=str(tmp_path), max_functions=1))) as client:
        register(client, SIN)
        assert register(client, SIN)  # the same one again is no new function
        body = assert_problem(client.post("/v1/functions", json={"expr": "a * 2"}), 507)
        assert body["type"] == "/problems/function-limit" and body["limit"] == 1


def test_the_registry_cache_is_bounded_in_bytes_and_drops_stale_entries(client, monkeypatch):
    """Registered graphs with 100 000-number constants (~0.4 MB of text each): the registry keeps at most
    CACHE_BYTES of them, and every one stays callable (read from the store when not cached)."""
    from service import functions

    monkeypatch.setattr(functions, "CACHE_BYTES", 1_000_000)
    registry = client.app.state.functions
    ids = []
    for k in range(8):
        graph = {"nodes": [{"op": "constant", "attrs": {"value": [float(k)] * 100_000}, "output": "c"},
                           {"op": "add", "inputs": ["x", "c"], "output": "y"}], "outputs": ["y"]}
        ids.append(register(client, {"graph": graph}))
        assert 0 < registry.cache_bytes <= 1_000_000
    for k, function_id in enumerate(ids):
        response = client.post(f"/v1/functions/{function_id}/evaluate", json={"inputs": {"x": [1.0]}})
        assert response.status_code == 200, response.text[:300]
        assert response.json()["outputs"][0]["data"][:1] == [1.0 + k]
    monkeypatch.setattr(functions, "CACHE_SECONDS", 0.0)  # every entry is stale: the next one drops them all
    function, _ = registry.load(ids[0])
    assert registry.cache_bytes == len(function.text)
