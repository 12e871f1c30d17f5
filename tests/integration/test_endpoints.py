"""Every endpoint over a real socket: each function form, each encoding, each error class."""

from __future__ import annotations

import base64
import math

import numpy as np
import pytest

from service.codec import decode_to_array
from tests.integration.conftest import LiveServer

pytestmark = pytest.mark.integration

X = [0.3, -1.2, 2.0]
SCALAR_FORMS = {
    "expr": {"expr": "(x.sin() * x).sum()"},
    "program": {"program": "y = x.sin()\nz = y * x\nreturn z.sum()"},
    "graph": {"graph": {"nodes": [{"op": "sin", "inputs": ["x"], "output": "y"},
                                  {"op": "mul", "inputs": ["y", "x"], "output": "z"},
                                  {"op": "sum", "inputs": ["z"], "output": "out"}], "outputs": ["out"]}},
}


def f64(values):
    return {"data": values, "dtype": "float64"}


def array(wire):
    return decode_to_array(wire)


def ok(http, path, body):
    response = http.post(path, json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()


def problem(http, path, body, status):
    response = http.post(path, json=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    detail = response.json()
    assert {"type", "title", "status", "detail"} <= set(detail) and detail["status"] == status
    return detail


# analytic: f(x) = sum(x sin x); f' = sin x + x cos x; f'' = 2 cos x - x sin x (diagonal)
def grad_f(x):
    x = np.asarray(x, np.float64)
    return np.sin(x) + x * np.cos(x)


def hess_f(x):
    x = np.asarray(x, np.float64)
    return np.diag(2 * np.cos(x) - x * np.sin(x))


@pytest.mark.parametrize("form", sorted(SCALAR_FORMS))
def test_evaluate_each_form(http, form):
    body = ok(http, "/v1/evaluate", {"inputs": {"x": f64(X)}, **SCALAR_FORMS[form]})
    expected = sum(v * math.sin(v) for v in X)
    assert body["outputs"][0]["shape"] == [] and body["outputs"][0]["dtype"] == "float64"
    assert array(body["outputs"][0]) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("form", sorted(SCALAR_FORMS))
@pytest.mark.parametrize("encoding", ["json", "base64"])
def test_grad_each_form_and_encoding(http, form, encoding):
    request = {"inputs": {"x": {**f64(X), "requires_grad": True}}, "encoding": encoding, **SCALAR_FORMS[form]}
    body = ok(http, "/v1/grad", request)
    grad = body["grads"]["x"]
    assert ("b64" in grad) == (encoding == "base64")
    np.testing.assert_allclose(array(grad), grad_f(X), rtol=1e-12)
    assert body["graph"][0]["name"] == "SumBackward0"


def test_grad_of_several_inputs_and_outputs_with_grad_outputs(http):
    request = {
        "inputs": {"a": {"data": [1.0, 2.0], "requires_grad": True}, "b": {"data": [3.0, 4.0], "requires_grad": True},
                   "c": [5.0, 6.0]},
        "program": "return a * b, (a + c).sum()",
        "grad_outputs": [[1.0, 10.0], 2.0],
    }
    body = ok(http, "/v1/grad", request)
    # d/da = g1 * b + g2; d/db = g1 * a; c does not require grad
    np.testing.assert_allclose(array(body["grads"]["a"]), [1 * 3 + 2, 10 * 4 + 2])
    np.testing.assert_allclose(array(body["grads"]["b"]), [1 * 1, 10 * 2])
    assert body["grads"]["c"] is None
    assert [g["name"] for g in body["graph"]] == ["MulBackward0", "SumBackward0"]


def test_grad_wrt_marks_inputs(http):
    body = ok(http, "/v1/grad", {"inputs": {"x": X}, "wrt": ["x"], "expr": "(x * x).sum()"})
    np.testing.assert_allclose(array(body["grads"]["x"]), 2 * np.asarray(X, np.float32), rtol=1e-6)


def test_grad_graph_shares_nodes_once(http):
    body = ok(http, "/v1/grad", {"inputs": {"x": {"data": [2.0], "requires_grad": True}},
                                 "program": "y = x.sin()\nreturn (y * y).sum()"})
    mul = body["graph"][0]["next_functions"][0][0]
    first, second = (edge[0] for edge in mul["next_functions"])
    assert first["name"] == second["name"] == "SinBackward0"
    assert first["id"] == second["id"] and second.get("repeat") is True


def test_jacobian_hessian_of_each_form(http):
    for form in SCALAR_FORMS.values():
        jac = ok(http, "/v1/jacobian", {"inputs": {"x": f64(X)}, **form})
        np.testing.assert_allclose(array(jac["jacobian"]), grad_f(X), rtol=1e-10)
        hess = ok(http, "/v1/hessian", {"inputs": {"x": f64(X)}, **form})
        np.testing.assert_allclose(array(hess["hessian"]), hess_f(X), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("strategy", ["reverse-mode", "forward-mode"])
def test_jacobian_options_and_tuple_nesting(http, strategy):
    request = {"inputs": {"x": f64([0.5, 0.7]), "y": f64([0.6, 0.4])}, "program": "return 2 * x.exp() + 3 * y, x * y",
               "strategy": strategy, "vectorize": True, "chunk_size": 1}
    body = ok(http, "/v1/jacobian", request)
    rows = body["jacobian"]  # outputs x inputs, as torch nests it
    assert len(rows) == 2 and all(len(row) == 2 for row in rows)
    np.testing.assert_allclose(array(rows[0][0]), np.diag(2 * np.exp([0.5, 0.7])))
    np.testing.assert_allclose(array(rows[0][1]), 3 * np.eye(2))
    np.testing.assert_allclose(array(rows[1][0]), np.diag([0.6, 0.4]))


def test_vector_products(http):
    x, v = [0.5, 0.7, 0.2], [1.0, -2.0, 0.5]
    scalar = {"inputs": {"x": f64(x)}, "expr": "(x.exp() * x).sum()", "v": v}
    # f = sum(x e^x): grad (1 + x) e^x, Hessian diag (2 + x) e^x
    hvp = ok(http, "/v1/hvp", scalar)
    vhp = ok(http, "/v1/vhp", scalar)
    expected = (2 + np.asarray(x)) * np.exp(x) * v
    np.testing.assert_allclose(array(hvp["hvp"]), expected, rtol=1e-12)
    np.testing.assert_allclose(array(vhp["vhp"]), expected, rtol=1e-12)
    vector = {"inputs": {"x": f64(x)}, "expr": "x.exp() * 2", "v": v}
    np.testing.assert_allclose(array(ok(http, "/v1/vjp", vector)["vjp"]), 2 * np.exp(x) * v, rtol=1e-12)
    np.testing.assert_allclose(array(ok(http, "/v1/jvp", vector)["jvp"]), 2 * np.exp(x) * v, rtol=1e-12)


def test_vjp_with_several_outputs_takes_a_list(http):
    body = ok(http, "/v1/vjp", {"inputs": {"x": f64([1.0, 2.0])}, "program": "return x * 3, x * x",
                                "v": [[1.0, 1.0], [1.0, 0.0]]})
    np.testing.assert_allclose(array(body["vjp"]), [3 + 2 * 1.0, 3.0])
    assert len(body["outputs"]) == 2


def test_jvp_with_several_inputs_takes_a_list(http):
    body = ok(http, "/v1/jvp", {"inputs": {"x": f64([1.0]), "y": f64([2.0])}, "expr": "x * y",
                                "v": [[1.0], [0.0]]})
    np.testing.assert_allclose(array(body["jvp"]), [2.0])


def test_gradcheck_passes_and_names_failures(http):
    body = ok(http, "/v1/gradcheck", {"inputs": {"x": X}, "expr": "(x.sin() * x).sum()"})
    assert body["passed"] is True and body["max_abs_error"] < 1e-6
    # float32 differences with a tiny eps are too noisy to pass: gradcheck says which input
    body = ok(http, "/v1/gradcheck", {"inputs": {"x": X}, "expr": "x.exp()", "dtype": "float32", "eps": 1e-6})
    assert body["passed"] is False and body["input"] == "x"


def test_profile_endpoint_and_profile_flag(http):
    body = ok(http, "/v1/profile", {"inputs": {"x": {"data": [1.0, 2.0], "requires_grad": True}},
                                    "expr": "(x.sin() * x).sum()", "repeat": 3, "backward": True})
    counts = {row["name"]: row["count"] for row in body["rows"]}
    assert counts["engine::sin"] == 3 and counts["SinBackward0"] == 3
    assert "engine::sin" in body["table"] and body["trace"]["traceEvents"]
    flagged = ok(http, "/v1/evaluate", {"inputs": {"x": [1.0]}, "expr": "x.sin()", "profile": True})
    assert {row["name"] for row in flagged["profile"]["rows"]} == {"engine::sin"}


def test_large_tensor_round_trip_in_both_encodings(http):
    values = np.random.default_rng(0).standard_normal(100_000).astype("<f4")
    b64 = {"b64": base64.b64encode(values.tobytes()).decode(), "shape": [100_000], "requires_grad": True}
    for wire in (b64, {"data": values.tolist(), "requires_grad": True}):
        for encoding in ("base64", "json"):
            body = ok(http, "/v1/grad", {"inputs": {"x": wire}, "expr": "(x * x).sum()", "encoding": encoding})
            np.testing.assert_array_equal(array(body["grads"]["x"]), 2 * values)


def test_nonfinite_in_and_out(http):
    body = ok(http, "/v1/evaluate", {"inputs": {"x": ["NaN", "Infinity", "-Infinity", 1.0]}, "expr": "x * 2"})
    assert body["outputs"][0]["data"] == ["NaN", "Infinity", "-Infinity", 2.0]


def test_ops_info_health_metrics(http):
    ops = http.get("/v1/ops").json()
    by_name = {op["name"]: op for op in ops["ops"]}
    assert by_name["sin"]["grad_fn"] == "SinBackward0" and by_name["sum"]["params"]["keepdim"] is False
    assert "sin" in ops["functions"]
    info = http.get("/v1/info").json()
    assert info["devices"]["cpu"] is True and info["limits"]["max_program_steps"] > 0
    assert http.get("/healthz").json() == {"status": "ok"}
    assert http.get("/readyz").json() == {"status": "ready"}
    ok(http, "/v1/evaluate", {"inputs": {"x": [1.0]}, "expr": "x.cos()"})
    metrics = http.get("/metrics").text
    assert 'gradserve_engine_ops_total{op="cos"}' in metrics
    assert 'route="/v1/evaluate",status="200"' in metrics


# ---- each error class ------------------------------------------------------------------


def test_error_classes(http):
    x = {"x": [1.0, 2.0]}
    assert problem(http, "/v1/evaluate", {"inputs": x, "expr": "x @ zeros(3)"}, 400)["op"] == "matmul"
    assert problem(http, "/v1/evaluate", {"inputs": x, "expr": "x +"}, 400)["line"] == 1
    graph = {"nodes": [{"op": "sin", "inputs": ["x"], "output": "x"}], "outputs": ["x"]}
    assert problem(http, "/v1/evaluate", {"inputs": x, "graph": graph}, 400)["node"] == 0
    assert problem(http, "/v1/grad", {"inputs": {"x": {"data": [1.0, 2.0], "requires_grad": True}},
                                      "expr": "x * 2"}, 400)["type"] == "/problems/engine-error"
    assert problem(http, "/v1/evaluate", {"inputs": x, "expr": "x", "device": "cuda"}, 400)
    assert problem(http, "/v1/evaluate", {"inputs": x}, 422)["errors"]
    assert problem(http, "/v1/evaluate", {"inputs": {"x": [[1], [2, 3]]}, "expr": "x"}, 422)["input"] == "inputs.x"
    assert problem(http, "/v1/evaluate", {"inputs": x, "expr": "zeros(10**9)"}, 413)["kind"] == "elements"
    response = http.get("/v1/missing")
    assert response.status_code == 404 and response.headers["content-type"] == "application/problem+json"


@pytest.fixture(scope="module")
def strict_server():
    live = LiveServer({"GRADSERVE_API_KEY": "secret-key", "GRADSERVE_MAX_BODY_BYTES": "100000",
                       "GRADSERVE_DEADLINE_S": "0.2", "GRADSERVE_MAX_PROGRAM_STEPS": "100000000",
                       "GRADSERVE_MAX_CONCURRENCY": "1",
                       "GRADSERVE_QUEUE_TIMEOUT_S": "0.05"})
    yield live
    log = live.stop()
    assert "Exception in ASGI application" not in log, log[-3000:]


def test_auth_body_limit_deadline_and_overload(strict_server):
    import concurrent.futures

    with strict_server.client() as open_client, strict_server.client(headers={"X-API-Key": "secret-key"}) as client:
        response = open_client.post("/v1/evaluate", json={"inputs": {"x": 1.0}, "expr": "x"})
        assert response.status_code == 401 and response.headers["content-type"] == "application/problem+json"
        assert open_client.get("/healthz").status_code == 200 and open_client.get("/docs").status_code == 200
        assert client.post("/v1/evaluate", json={"inputs": {"x": 1.0}, "expr": "x"}).status_code == 200

        big = {"inputs": {"x": list(range(30_000))}, "expr": "x"}
        assert client.post("/v1/evaluate", json=big).status_code == 413

        def chunked():
            for _ in range(30):
                yield b" " * 10_000

        response = client.post("/v1/evaluate", content=chunked(), headers={"content-type": "application/json"})
        assert response.status_code == 413

        slow = {"inputs": {"x": [1.0]}, "program": "for i in range(10**7):\n    x = x * 1.0\nreturn x"}
        assert client.post("/v1/evaluate", json=slow).status_code == 408

        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            statuses = list(pool.map(lambda _: client.post("/v1/evaluate", json=slow).status_code, range(6)))
        assert 503 in statuses and set(statuses) <= {408, 503}
        assert client.get("/readyz").status_code == 200
