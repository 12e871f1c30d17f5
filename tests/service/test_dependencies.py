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


def test_overridden_runtime_and_metrics_reach_the_compute_routes(tmp_path):
    """A test's own Runtime (its own plan cache) and Metrics are the ones the routes use."""
    import dataclasses

    from service.dependencies import app_services
    from service.metrics import Metrics
    from service.runtime import Runtime

    app = create_app(Settings(data_dir=str(tmp_path)))
    own_metrics = Metrics()
    own_runtime = Runtime(Settings(plan_cache_size=0), own_metrics)
    own_runtime.start()
    try:
        with TestClient(app) as client:
            assert 'plan;desc="miss"' in client.post("/v1/evaluate", json=THREE).headers["server-timing"]
            assert 'plan;desc="hit"' in client.post("/v1/evaluate", json=THREE).headers["server-timing"]
            own = dataclasses.replace(app.state.services, runtime=own_runtime, metrics=own_metrics)
            app.dependency_overrides[app_services] = lambda: own
            # The override's cache keeps nothing: a miss, counted in the override's metrics.
            assert 'plan;desc="miss"' in client.post("/v1/evaluate", json=THREE).headers["server-timing"]
            assert "gradserve_plan_cache_misses_total 1.0" in client.get("/metrics").text
            assert 'gradserve_engine_ops_total{op="mul"} 1.0' in own_metrics.render().decode()
    finally:
        own_runtime.close()


def test_no_route_reads_app_state():
    """Routes get the app's services through service.dependencies, so tests can override every one."""
    from pathlib import Path

    routes = Path(__file__).resolve().parents[2] / "service" / "routes"
    for module in routes.glob("*.py"):
        assert "app.state" not in module.read_text(), module.name
