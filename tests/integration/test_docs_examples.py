"""The /docs page read top to bottom: every operation, tried with its first example, succeeds.

This is what a person does on the Swagger page: for each operation in the order the page
lists them, "Try it out" and "Execute" with the first example pre-filled, and the model id
copied from the answer of ``POST /v1/models``. So the first model example must accept the
forward, backward and train examples' shapes, the state example must load, and no call may
delete the model before the calls that use it.
"""

from __future__ import annotations

import pytest

from tests.integration.docs_walk import NO_EXAMPLE, first_example, operation_label, page_order, resolve

pytestmark = pytest.mark.integration

MODEL_ID = "model_id"


def build_request(spec: dict, method: str, path: str, operation: dict, model_id: str | None) -> dict:
    """The request Swagger UI sends for ``operation`` with its first examples pre-filled."""
    label = operation_label(method, path)
    path_values, query, headers = {}, {}, {}
    for parameter in operation.get("parameters", []):
        parameter = resolve(spec, parameter)
        name, where = parameter["name"], parameter["in"]
        if where == "path" and name == MODEL_ID:
            assert model_id is not None, f"{label} comes before any POST /v1/models on the page"
            path_values[name] = model_id
            continue
        value = first_example(spec, parameter)
        if value is NO_EXAMPLE:
            assert not parameter.get("required"), f"{label}: required {where} parameter {name!r} has no example"
            continue  # left empty on the page, so not sent
        {"path": path_values, "query": query, "header": headers}[where][name] = value
    request = {"method": method.upper(), "url": path.format(**path_values), "params": query, "headers": headers}
    body = operation.get("requestBody")
    if body is not None:
        media = body["content"].get("application/json")
        assert media is not None, f"{label}: the page offers no JSON body to try"
        example = first_example(spec, media)
        assert example is not NO_EXAMPLE, f"{label}: its JSON body has no example to pre-fill"
        request["json"] = example
    return request


def test_every_operation_succeeds_with_its_first_example_in_page_order(http):
    spec = http.get("/openapi.json").json()
    operations = page_order(spec)
    assert len(operations) == sum(len(item) for item in spec["paths"].values())
    model_id = None
    tried = []
    for method, path, operation in operations:
        request = build_request(spec, method, path, operation, model_id)
        response = http.request(**request)
        tried.append(operation_label(method, path))
        assert 200 <= response.status_code < 300, (
            f"{tried[-1]} with its first example answered {response.status_code}: {response.text[:1500]}\n"
            f"after: {tried[:-1]}")
        if method == "post" and path == "/v1/models" and model_id is None:
            model_id = response.json()["id"]
    assert model_id is not None, "the page never creates a model"
    # The walk ends with the model gone: its DELETE came after every call that needed it.
    assert http.get(f"/v1/models/{model_id}").status_code == 404


def test_the_state_example_fits_the_train_example_exactly(http):
    """The state example sets out = relu(x[1] - x[0]), which is the train example's targets: no loss."""
    spec = http.get("/openapi.json").json()
    paths = spec["paths"]
    create = http.post("/v1/models", json=first_example(spec, paths["/v1/models"]["post"]["requestBody"]["content"]
                                                        ["application/json"]))
    assert create.status_code == 201, create.text
    model = f"/v1/models/{create.json()['id']}"
    state = first_example(spec, paths["/v1/models/{model_id}/state"]["put"]["requestBody"]["content"]
                          ["application/json"])
    assert http.put(f"{model}/state", json=state).status_code == 200
    train = first_example(spec, paths["/v1/models/{model_id}/train"]["post"]["requestBody"]["content"]
                          ["application/json"])
    response = http.post(f"{model}/train", json=train)
    assert response.status_code == 200, response.text
    assert response.json()["losses"] == [0.0] * train["steps"]
    assert http.delete(model).status_code == 204
