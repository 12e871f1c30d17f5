"""service.dependencies: handlers get the app's settings through ``Depends``, so a test can override them."""

from __future__ import annotations

from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings
from service.dependencies import app_settings
from tests.problems import assert_problem

THREE = {"inputs": {"a": [1.0, 2.0, 3.0]}, "expr": "a * 2"}


def test_overridden_settings_reach_compute_and_info():
    app = create_app(Settings())
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.post("/v1/evaluate", json=THREE).status_code == 200
        app.dependency_overrides[app_settings] = lambda: Settings(max_tensor_elements=2)
        body = assert_problem(client.post("/v1/evaluate", json=THREE), 413)
        assert body["input"] == "inputs.a"
        assert client.get("/v1/info").json()["limits"]["max_tensor_elements"] == 2
        app.dependency_overrides.clear()
        assert client.post("/v1/evaluate", json=THREE).status_code == 200


def test_overridden_settings_reach_the_model_routes(tmp_path):
    app = create_app(Settings(data_dir=str(tmp_path)))
    spec = {"layers": [{"type": "linear", "in_features": 2, "out_features": 1}], "seed": 0}
    with TestClient(app, raise_server_exceptions=False) as client:
        created = client.post("/v1/models", json=spec)
        assert created.status_code == 201, created.text
        forward = {"input": [[1.0, 2.0], [3.0, 4.0]]}
        assert client.post(f"{created.headers['location']}/forward", json=forward).status_code == 200
        # The engine work's limits come from the injected settings: a two-number output is over one.
        app.dependency_overrides[app_settings] = lambda: Settings(data_dir=str(tmp_path), max_response_elements=1)
        body = assert_problem(client.post(f"{created.headers['location']}/forward", json=forward), 413)
        assert body["type"] == "/problems/response-too-large"
