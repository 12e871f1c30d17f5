"""/v1/models in-process (TestClient, SQLite in a temp dir): limits, errors, streaming, state import/export."""

from __future__ import annotations

import io

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from frontends.model_spec import TrainableModel
from service.app import create_app
from service.config import Settings

SPEC = {"layers": [{"type": "linear", "in_features": 2, "out_features": 3}, {"type": "tanh"},
                   {"type": "linear", "in_features": 3, "out_features": 1}],
        "optimizer": {"type": "adam", "lr": 0.05}, "seed": 5}
INPUTS = [[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.5, -0.5], [-1.0, 2.0]]
TARGETS = [[1.0], [0.0], [0.5], [0.25], [-1.0]]


@pytest.fixture
def client(tmp_path):
    settings = Settings(data_dir=str(tmp_path), max_models=3, max_parameters_per_model=1000)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def create(client, spec=SPEC) -> str:
    response = client.post("/v1/models", json=spec)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def is_problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return response.json()


def test_create_reports_shapes_and_count(client):
    body = client.post("/v1/models", json=SPEC).json()
    assert body["parameters"] == {"0.weight": [3, 2], "0.bias": [3], "2.weight": [1, 3], "2.bias": [1]}
    assert body["parameter_count"] == 2 * 3 + 3 + 3 + 1
    assert body["spec"]["optimizer"]["betas"] == [0.9, 0.999]  # defaults filled
    assert (body["step"], body["version"]) == (0, 1)


def test_limits_and_errors_are_problems(client):
    bad = {"layers": [{"type": "linear", "in_features": 2, "out_features": 3},
                      {"type": "linear", "in_features": 4, "out_features": 1}]}
    assert is_problem(client.post("/v1/models", json=bad), 422)["layer"] == "layers[1] (linear)"
    unknown = {"layers": [{"type": "conv9d"}]}
    assert "conv9d" in is_problem(client.post("/v1/models", json=unknown), 422)["detail"]
    huge = {"layers": [{"type": "linear", "in_features": 100, "out_features": 100}]}
    assert is_problem(client.post("/v1/models", json=huge), 413)["limit"] == 1000
    ids = [create(client) for _ in range(3)]
    assert is_problem(client.post("/v1/models", json=SPEC), 507)["limit"] == 3
    is_problem(client.get("/v1/models/0123456789abcdef"), 404)
    is_problem(client.post("/v1/models/0123456789abcdef/step"), 404)
    wrong_width = client.post(f"/v1/models/{ids[0]}/backward", json={"input": [[1.0, 2.0, 3.0]], "target": [[1.0]]})
    assert "2 features" in is_problem(wrong_width, 400)["detail"]
    assert client.get(f"/v1/models/{ids[0]}").json()["version"] == 1  # a failed mutation changes nothing
    client.delete(f"/v1/models/{ids[0]}")
    create(client)  # room again


def test_list_is_paginated(client):
    ids = [create(client) for _ in range(3)]
    first = client.get("/v1/models", params={"limit": 2}).json()
    assert [m["id"] for m in first["models"]] == ids[:2] and first["total"] == 3
    second = client.get(first["next"]).json()
    assert [m["id"] for m in second["models"]] == ids[2:] and second["next"] is None


def test_forward_changes_nothing_and_matches_in_process(client):
    model_id = create(client)
    response = client.post(f"/v1/models/{model_id}/forward", json={"input": INPUTS, "target": TARGETS})
    output, loss = TrainableModel(SPEC).forward(INPUTS, TARGETS)
    np.testing.assert_array_equal(np.float32(response.json()["output"]["data"]), output.numpy().reshape(-1))
    assert response.json()["loss"] == loss
    assert response.headers["etag"] == '"1"'


def test_train_streamed_equals_train(client):
    body = {"inputs": INPUTS, "targets": TARGETS, "steps": 7, "batch_size": 2}
    plain_id, streamed_id = create(client), create(client)
    plain = client.post(f"/v1/models/{plain_id}/train", json=body).json()
    expected = TrainableModel(SPEC).train(INPUTS, TARGETS, 7, 2)
    assert plain["losses"] == expected and plain["step"] == 7
    with client.stream("POST", f"/v1/models/{streamed_id}/train", json=body,
                       headers={"Accept": "text/event-stream"}) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        text = stream.read().decode()
    events = [block.split("\n") for block in text.strip().split("\n\n")]
    kinds = [lines[0].removeprefix("event: ") for lines in events]
    payloads = [orjson.loads(lines[1].removeprefix("data: ")) for lines in events]
    assert kinds == ["progress"] * 7 + ["result"]
    assert [p["step"] for p in payloads[:7]] == list(range(1, 8))
    assert [p["loss"] for p in payloads[:7]] == expected
    assert payloads[-1]["losses"] == expected
    plain_params = client.get(f"/v1/models/{plain_id}/parameters").json()["parameters"]
    assert client.get(f"/v1/models/{streamed_id}/parameters").json()["parameters"] == plain_params


def test_streamed_train_reports_errors_as_problems(client):
    model_id = create(client)
    is_problem(client.post(f"/v1/models/{model_id}/train", json={"inputs": INPUTS, "targets": TARGETS},
                           headers={"Accept": "text/event-stream", "If-Match": '"9"'}), 412)
    with client.stream("POST", f"/v1/models/{model_id}/train", json={"inputs": INPUTS, "targets": [[1.0]]},
                       headers={"Accept": "text/event-stream"}) as stream:
        text = stream.read().decode()
    assert text.startswith("event: error\n")
    assert orjson.loads(text.split("data: ", 1)[1])["status"] == 400


@pytest.mark.parametrize("form", ["json", "base64", "npz"])
def test_state_export_import_continues_bit_for_bit(client, form):
    source, target = create(client), create(client, dict(SPEC, seed=6))
    client.post(f"/v1/models/{source}/train", json={"inputs": INPUTS, "targets": TARGETS, "steps": 3})
    if form == "npz":
        exported = client.get(f"/v1/models/{source}/state", headers={"Accept": "application/x-npz"})
        with np.load(io.BytesIO(exported.content)) as archive:
            assert archive["parameters/0.weight"].shape == (3, 2)
        imported = client.put(f"/v1/models/{target}/state", content=exported.content,
                              headers={"Content-Type": "application/x-npz", "If-Match": '"1"'})
    else:
        exported = client.get(f"/v1/models/{source}/state", params={"encoding": form})
        imported = client.put(f"/v1/models/{target}/state", json=exported.json(), headers={"If-Match": '"1"'})
    assert imported.status_code == 200, imported.text
    assert imported.json() == {"step": 3, "version": 2}
    more = {"inputs": INPUTS, "targets": TARGETS, "steps": 2}
    assert client.post(f"/v1/models/{source}/train", json=more).json()["losses"] == \
        client.post(f"/v1/models/{target}/train", json=more).json()["losses"]
    assert client.get(f"/v1/models/{source}/parameters").json()["parameters"] == \
        client.get(f"/v1/models/{target}/parameters").json()["parameters"]


def test_bad_state_imports_are_rejected(client):
    model_id = create(client)
    is_problem(client.put(f"/v1/models/{model_id}/state", content=b"junk",
                          headers={"Content-Type": "application/x-npz"}), 422)
    is_problem(client.put(f"/v1/models/{model_id}/state", json={"nothing": 1}), 422)
    state = client.get(f"/v1/models/{model_id}/state").json()
    state["parameters"]["0.weight"] = [[1.0, 2.0]]
    is_problem(client.put(f"/v1/models/{model_id}/state", json=state), 400)
    assert client.get(f"/v1/models/{model_id}").json()["version"] == 1


def test_parameter_selection(client):
    model_id = create(client)
    is_problem(client.get(f"/v1/models/{model_id}/parameters", params={"name": "9.weight"}), 400)
    is_problem(client.get(f"/v1/models/{model_id}/parameters", params={"name": "0.weight", "index": "7"}), 400)
    one = client.get(f"/v1/models/{model_id}/parameters", params={"name": "0.weight", "index": ":,1",
                                                                 "grads": False}).json()
    full = TrainableModel(SPEC).named_parameters()["0.weight"]
    np.testing.assert_array_equal(np.float32(one["parameters"]["0.weight"]["data"]), full[:, 1])
    assert one["parameters"]["0.weight"]["shape"] == [3] and "grads" not in one


def test_openapi_documents_model_problems(client):
    paths = client.get("/openapi.json").json()["paths"]
    step = paths["/v1/models/{model_id}/step"]["post"]
    assert {"404", "412", "507"} <= set(step["responses"])
    assert "application/problem+json" in step["responses"]["412"]["content"]


def test_a_store_that_cannot_open_answers_503_with_retry_after(tmp_path):
    settings = Settings(store=f"sqlite://{tmp_path}")  # a directory, not a database file
    with TestClient(create_app(settings)) as client:
        response = client.post("/v1/models", json=SPEC)
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "1"
    assert "the model store is busy" in response.json()["detail"]
