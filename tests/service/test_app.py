"""The app in-process (FastAPI's TestClient): problems, limits, auth, info, metrics, docs assets."""

from __future__ import annotations

import math

import numpy as np
import pytest
from fastapi.testclient import TestClient

from engine.profiler import ProfileLimitError
from frontends.budget import BudgetExceeded
from frontends.model_spec import SpecError
from service import errors
from service.app import create_app
from service.codec import CodecError, ResponseTooLargeError
from service.config import Settings
from service.store import ModelNotFound, StoreFull, StoreUnavailable
from tests.problems import assert_problem

SIN = {"inputs": {"a": {"data": [0.0, 1.0, 2.0], "requires_grad": True}}, "expr": "(2 * sin(a) + 1).sum()"}


def test_grad_of_the_sin_example(client):
    body = client.post("/v1/grad", json=SIN).json()
    np.testing.assert_allclose(body["grads"]["a"]["data"], 2 * np.cos([0.0, 1.0, 2.0]), rtol=1e-6)
    assert body["outputs"][0]["shape"] == []
    assert body["graph"][0]["name"] == "SumBackward0"


def test_missing_function_is_a_readable_422(client):
    body = assert_problem(client.post("/v1/evaluate", json={"inputs": {"a": 1}}), 422)
    assert "exactly one of expr, program, graph" in body["detail"]


def test_schema_violations_name_the_field(client):
    body = assert_problem(client.post("/v1/evaluate", json={"inputs": {"a": 1}, "expr": "a", "encoding": "xml"}), 422)
    assert body["detail"].startswith("encoding:")
    assert body["errors"][0]["location"] == "encoding"


def test_invalid_input_names_are_422(client):
    assert_problem(client.post("/v1/evaluate", json={"inputs": {"not valid": 1}, "expr": "1"}), 422)


def test_invalid_json_is_422(client):
    response = client.post("/v1/evaluate", content=b"{nope", headers={"content-type": "application/json"})
    assert "not valid JSON" in assert_problem(response, 422)["detail"]


def test_bad_tensor_is_422_naming_the_input(client):
    body = assert_problem(client.post("/v1/evaluate", json={"inputs": {"a": [[1], [2, 3]]}, "expr": "a"}), 422)
    assert body["input"] == "inputs.a"


def test_engine_errors_are_400_with_the_op(client):
    response = client.post("/v1/evaluate", json={"inputs": {"a": [1.0, 2.0], "b": [1.0, 2.0, 3.0]}, "expr": "a * b"})
    body = assert_problem(response, 400)
    assert body["op"] == "mul" and body["line"] == 1


def test_non_scalar_backward_says_so(client):
    request = {"inputs": {"a": {"data": [1.0, 2.0], "requires_grad": True}}, "expr": "a * 2"}
    body = assert_problem(client.post("/v1/grad", json=request), 400)
    assert "only for scalar outputs" in body["detail"]


def test_unknown_route_and_method_are_problems(client):
    assert_problem(client.get("/v1/nothing"), 404)
    assert_problem(client.get("/v1/grad"), 405)


def test_cuda_without_gpu_names_what_is_missing(client):
    import engine

    if engine.cuda.is_available():
        pytest.skip("a GPU is present")
    body = assert_problem(client.post("/v1/evaluate", json={"inputs": {"a": 1}, "expr": "a", "device": "cuda"}), 400)
    assert "cupy" in body["detail"] and body["missing"]


def test_info_reports_limits_without_secrets():
    app = create_app(Settings(api_key="s3cret", max_graph_nodes=77))
    with TestClient(app) as client:
        response = client.get("/v1/info", headers={"X-API-Key": "s3cret"})
    body = response.json()
    assert body["limits"]["max_graph_nodes"] == 77 and body["auth"] is True
    assert "s3cret" not in response.text and "api_key" not in body["limits"]


def test_api_key_guards_everything_but_health_and_docs():
    with TestClient(create_app(Settings(api_key="k"))) as client:
        assert_problem(client.post("/v1/grad", json=SIN), 401)
        assert_problem(client.post("/v1/grad", json=SIN, headers={"X-API-Key": "wrong"}), 401)
        assert_problem(client.get("/metrics"), 401)
        assert client.post("/v1/grad", json=SIN, headers={"X-API-Key": "k"}).status_code == 200
        for path in ("/healthz", "/readyz", "/docs", "/redoc", "/openapi.json"):
            assert client.get(path).status_code == 200, path
        security = client.get("/openapi.json").json()["components"]["securitySchemes"]
        assert security["APIKeyHeader"]["name"] == "X-API-Key"


def test_body_limit_counts_declared_and_chunked_bodies():
    with TestClient(create_app(Settings(max_body_bytes=1000))) as client:
        big = {"inputs": {"a": list(range(500))}, "expr": "a"}
        assert_problem(client.post("/v1/evaluate", json=big), 413)

        def chunks():
            for _ in range(20):
                yield b" " * 100

        assert_problem(client.post("/v1/evaluate", content=chunks(), headers={"content-type": "application/json"}),
                       413)
        assert client.post("/v1/evaluate", json={"inputs": {"a": [1]}, "expr": "a"}).status_code == 200


def test_tensor_element_limit_is_413():
    with TestClient(create_app(Settings(max_tensor_elements=10))) as client:
        body = assert_problem(client.post("/v1/evaluate", json={"inputs": {"a": list(range(11))}, "expr": "a"}), 413)
        assert body["input"] == "inputs.a"


def test_deadline_is_408():
    with TestClient(create_app(Settings(deadline_s=0.05, max_program_steps=10**8))) as client:
        program = "x = a\nfor i in range(10**7):\n    x = x * 1.0\nreturn x"
        body = assert_problem(client.post("/v1/evaluate", json={"inputs": {"a": [1.0]}, "program": program}), 408)
        assert body["kind"] == "deadline"


def test_metrics_count_requests_by_route_and_engine_ops(client):
    client.post("/v1/grad", json=SIN)
    text = client.get("/metrics").text
    assert 'gradserve_requests_total{method="POST",route="/v1/grad",status="200"}' in text
    assert 'gradserve_engine_ops_total{op="sin"}' in text
    assert "gradserve_request_duration_seconds_bucket" in text


def test_docs_assets_are_served_by_the_app(client):
    page = client.get("/docs").text
    assert "cdn" not in page.lower()
    assert client.get("/static-offline-docs/swagger-ui-bundle.js").status_code == 200
    assert "cdn" not in client.get("/redoc").text.lower()


def test_every_error_response_is_documented_as_problem_json(client):
    spec = client.get("/openapi.json").json()
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if path.startswith("/v1/") and method == "post":
                for status in ("400", "408", "413", "422", "503"):
                    assert "application/problem+json" in operation["responses"][status]["content"], (path, status)


# ---- errors.problem_for: one mapping, unit-tested ---------------------------------------


@pytest.mark.parametrize(
    ("error", "status", "extra"),
    [
        (BudgetExceeded("deadline", 1.0, "too slow"), 408, {"kind": "deadline"}),
        (BudgetExceeded("elements", 10, "too big"), 413, {"limit": 10}),
        (BudgetExceeded("steps", 5, "too long", line=3), 400, {"line": 3}),
        (CodecError("bad", input="inputs.a"), 422, {"input": "inputs.a"}),
        (CodecError("big", input="inputs.a", too_large=True), 413, {}),
        (errors.EngineError(RuntimeError("shape"), op="matmul"), 400, {"op": "matmul"}),
        (errors.EngineError(MemoryError()), 503, {"type": "/problems/memory-exhausted", "kind": "memory"}),
        (MemoryError(), 503, {"type": "/problems/memory-exhausted"}),  # raised outside engine work
        (ResponseTooLargeError("huge", elements=9, limit=5), 413,
         {"type": "/problems/response-too-large", "elements": 9, "limit": 5}),
        (errors.EngineError(ProfileLimitError(7)), 413, {"type": "/problems/profile-too-large", "limit": 7}),
        (errors.OverloadedError("busy"), 503, {}),
        (ModelNotFound("m1"), 404, {"type": "/problems/model-not-found", "model": "m1"}),
        (StoreFull(3), 507, {"type": "/problems/model-limit", "limit": 3}),
        (StoreUnavailable("the model store is busy (locked)"), 503, {"type": "/problems/overloaded"}),
        (SpecError("layers[2]", "bad width"), 422, {"type": "/problems/invalid-model-spec", "layer": "layers[2]"}),
        (AttributeError("secret internals"), 500, {}),
    ],
)
def test_problem_for_maps_each_failure(error, status, extra):
    body = errors.problem_for(error)
    assert body["status"] == status
    for key, value in extra.items():
        assert body[key] == value
    if status == 500:
        assert "secret internals" not in body["detail"]


def test_an_allocation_larger_than_the_machine_is_413_and_a_full_memory_503():
    """numpy's MemoryError says what it asked for: more than the process may ever hold cannot be retried."""
    try:
        np.empty(1 << 62, dtype=np.uint8)
    except MemoryError as error:
        too_big = error
    body = errors.problem_for(errors.EngineError(too_big, op="empty"))
    assert body["status"] == 413 and body["type"] == "/problems/memory-limit"
    assert body["limit"] == errors.memory_limit_bytes() < 1 << 62
    assert errors.problem_for(errors.EngineError(MemoryError("out of memory")))["status"] == 503
    try:  # what a C function that lost a MemoryError makes of it
        raise SystemError("<method 'get' of 'dict' objects> returned a result with an exception set") \
            from MemoryError()
    except SystemError as error:
        assert errors.problem_for(error)["status"] == 503
    assert errors.problem_for(SystemError("a real bug"))["status"] == 500


def test_engine_errors_wraps_only_engine_exception_types():
    with pytest.raises(errors.EngineError) as caught, errors.engine_errors(lambda: "sin"):
        raise ValueError("bad dim")
    assert caught.value.op == "sin"
    with pytest.raises(AttributeError), errors.engine_errors():
        raise AttributeError("a bug stays a bug")
    with pytest.raises(AssertionError), errors.engine_errors():
        raise AssertionError("so does a broken invariant")


@pytest.mark.parametrize(("raised", "status"), [(AttributeError, 500), (AssertionError, 500), (ValueError, 400)])
def test_an_op_failing_is_the_clients_error_only_for_engine_errors(client, monkeypatch, raised, status):
    """Expressions, programs and graphs classify an op's exception alike: 400 for what the engine
    raises on bad input, 500 (a bug) for anything else."""
    import engine

    def failing(xp, x):
        raise raised("the op failed")

    monkeypatch.setattr(engine.ops.table["sin"], "forward", failing)
    graph = {"nodes": [{"op": "sin", "inputs": ["a"], "output": "b"}], "outputs": ["b"]}
    for function in ({"expr": "sin(a) * 2"}, {"program": "y = a.sin()\nreturn y"}, {"graph": graph}):
        body = assert_problem(client.post("/v1/evaluate", json={"inputs": {"a": [1.0]}, **function}), status)
        assert ("the op failed" in body["detail"]) == (status == 400)


def test_ops_publish_what_tensor_and_engine_really_have(client):
    """Each op's flags against Tensor and ``engine`` themselves, not against the table's declarations."""
    import engine
    from frontends.graph import available_ops

    published = client.get("/v1/ops").json()["ops"]
    assert {op["name"] for op in published} == set(engine.ops.table)
    for op in published:
        name = op["name"]
        assert op["method"] == callable(getattr(engine.Tensor, name, None)), name
        assert (name in op["functions"]) == callable(getattr(engine.functions, name, None)), name
        for method in op["methods"] + op["inplace"]:
            assert callable(getattr(engine.Tensor, method, None)), (name, method)
        for function in op["functions"]:
            assert callable(getattr(engine, function, None)), (name, function)
        assert op["public"] == (name in available_ops()), name
    by_name = {op["name"]: op for op in published}
    for name in ("gelu", "softplus", "linear", "tile", "isnan", "isfinite", "logical_and", "logical_or",
                 "pow_scalar", "sum_to_size"):
        assert by_name[name]["method"] is False, name
    assert by_name["max"]["method"] and by_name["min"]["method"]
    assert by_name["tile"]["methods"] == ["repeat"] and "pow" in by_name["pow_scalar"]["methods"]


def test_nonfinite_outputs_travel_as_strings(client):
    body = client.post("/v1/evaluate", json={"inputs": {"a": [0.0, 1.0, -1.0]}, "expr": "log(a)"}).json()
    assert body["outputs"][0]["data"][:1] == ["-Infinity"] and body["outputs"][0]["data"][2] == "NaN"
    assert not math.isnan(body["outputs"][0]["data"][1])


def test_union_branches_do_not_leak_into_422_locations(client):
    body = assert_problem(client.post("/v1/evaluate", json={"inputs": {"a": 1}, "program": "x" * 100_001}), 422)
    assert body["detail"] == "program: String should have at most 100000 characters"
    graph = {"nodes": [{"op": "sin", "inputs": [[1]], "output": "y"}], "outputs": ["y"]}
    body = assert_problem(client.post("/v1/evaluate", json={"inputs": {"a": 1}, "graph": graph}), 422)
    assert body["errors"][0]["location"] == "graph.nodes.0.inputs.0"


def test_explicit_nulls_count_as_absent(client):
    response = client.post("/v1/evaluate", json={"inputs": {"a": 2.0}, "expr": "a * 2", "program": None})
    assert response.status_code == 200 and response.json()["outputs"][0]["data"] == [4.0]


def test_fastapis_opentelemetry_hooks_follow_the_setting():
    quiet, traced = create_app(Settings()), create_app(Settings(opentelemetry=True))
    config = getattr(quiet, "_telemetry", None)
    if config is None:
        pytest.skip("this FastAPI has no native telemetry")
    assert not (config["tracing"] or config["metrics"] or config["logs"])
    assert traced._telemetry["tracing"] and traced._telemetry["metrics"]
    with TestClient(traced) as client:
        response = client.post("/v1/evaluate", json={"inputs": {"a": 2.0}, "expr": "a * 3"})
    assert response.json()["outputs"][0]["data"] == [6.0]


def test_a_restarted_app_reopens_its_model_store(tmp_path):
    app = create_app(Settings(data_dir=str(tmp_path)))
    spec = {"layers": [{"type": "linear", "in_features": 2, "out_features": 1}], "seed": 0}
    with TestClient(app) as client:
        model_id = client.post("/v1/models", json=spec).json()["id"]
    with TestClient(app) as client:  # shutdown closed the store and the workers; startup works again
        assert client.get(f"/v1/models/{model_id}").status_code == 200
        assert client.post("/v1/evaluate", json={"inputs": {"a": 1.0}, "expr": "a + 1"}).status_code == 200


def test_blas_threads_below_one_is_refused(monkeypatch):
    monkeypatch.setenv("GRADSERVE_BLAS_THREADS", "0")
    with pytest.raises(ValueError, match="blas_threads"):
        Settings()
