"""``"batch"``: a batched request answers exactly what one request per point answers, for every transform."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings
from tests.metrics import sample
from tests.problems import assert_problem

POINTS = [[0.3, -1.2, 2.0], [1.5, 0.1, -0.7], [-2.0, 0.4, 0.9], [0.0, 1.0, 2.0]]
W = [0.5, -0.25, 2.0]
FUNCTION = {"expr": "(w * sin(x) * x).sum() + (x * x).sum()"}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with TestClient(create_app(Settings(data_dir=str(tmp_path_factory.mktemp("batch"))))) as client:
        yield client


def arrays(value):
    """A response's tensors, in order, as float64 arrays."""
    if value is None:
        return []
    if isinstance(value, dict) and "shape" in value:
        return [np.asarray(value["data"], np.float64).reshape(value["shape"])]
    if isinstance(value, dict):
        return [a for key in sorted(value) for a in arrays(value[key])]
    if isinstance(value, list):
        return [a for item in value for a in arrays(item)]
    return []


def one_by_one(client, path, body, batched_names, points=POINTS):
    """One request per point: the batched inputs' row ``i`` for point ``i``."""
    answers = []
    for i in range(len(points)):
        inputs = {name: ({**t, "data": t["data"][i]} if name in batched_names else t)
                  for name, t in body["inputs"].items()}
        response = client.post(path, json={**body, "inputs": inputs})
        assert response.status_code == 200, response.text
        answers.append(response.json())
    return answers


CASES = {
    "/v1/evaluate": {},
    "/v1/grad": {},
    "/v1/jacobian": {},
    "/v1/hessian": {},
    "/v1/vjp": {"v": 1.0},
    "/v1/jvp": {"v": [[1.0, 0.5, -1.0], [0.0, 1.0, 0.0]]},
    "/v1/hvp": {"v": [[1.0, 0.5, -1.0], [0.0, 1.0, 0.0]]},
    "/v1/vhp": {"v": [[1.0, 0.5, -1.0], [0.0, 1.0, 0.0]]},
}


@pytest.mark.parametrize("path", list(CASES))
@pytest.mark.parametrize("batch", [["x"], True])
def test_a_batch_equals_one_request_per_point(client, path, batch):
    inputs = {"x": {"data": POINTS, "requires_grad": True, "dtype": "float64"},
              "w": {"data": [W] * len(POINTS) if batch is True else W, "requires_grad": True, "dtype": "float64"}}
    body = {**FUNCTION, **CASES[path], "inputs": inputs, "dtype": "float64"}
    batched = client.post(path, json={**body, "batch": batch})
    assert batched.status_code == 200, batched.text
    names = {"x", "w"} if batch is True else {"x"}
    singles = one_by_one(client, path, body, names)
    content = batched.json()
    for key in content:
        if key == "graph":
            assert content[key] == singles[0][key]
            continue
        got = arrays(content[key])
        expected = [np.stack(column) for column in zip(*(arrays(single[key]) for single in singles))]
        assert len(got) == len(expected) > 0, key
        for g, e in zip(got, expected):
            assert g.shape == e.shape, key
            np.testing.assert_allclose(g, e, rtol=1e-12, atol=0, err_msg=key)


def test_a_batched_gradcheck_reports_every_point(client):
    body = {**FUNCTION, "inputs": {"x": POINTS, "w": W}, "batch": ["x"]}
    report = client.post("/v1/gradcheck", json=body).json()
    assert report["passed"] is True and 0 <= report["point"] < len(POINTS)
    # A point where the function has no derivative fails, and is the one named.
    kinked = {"expr": "x.relu().sum()", "inputs": {"x": [[1.0, 2.0], [0.5, 0.0], [3.0, 1.0]]}, "batch": True}
    report = client.post("/v1/gradcheck", json=kinked).json()
    assert report["passed"] is False and report["point"] == 1


def test_a_batched_profile_runs_every_point(client):
    body = {"expr": "x.sin().sum()", "inputs": {"x": {"data": POINTS, "requires_grad": True}}, "batch": ["x"]}
    content = client.post("/v1/profile", json=body).json()
    rows = {row["name"]: row["count"] for row in content["rows"]}
    assert rows["engine::sin"] == len(POINTS)
    assert content["outputs"][0]["shape"] == [len(POINTS)]


def test_batches_are_checked(client):
    inputs = {"x": POINTS, "w": W}
    assert_problem(client.post("/v1/evaluate", json={**FUNCTION, "inputs": inputs, "batch": ["q"]}), 400)
    assert_problem(client.post("/v1/evaluate", json={**FUNCTION, "inputs": inputs, "batch": True}), 422)  # 4 vs 3
    assert_problem(client.post("/v1/evaluate", json={**FUNCTION, "inputs": {"x": 1.0, "w": W}, "batch": ["x"]}), 422)
    assert_problem(client.post("/v1/grad", json={**FUNCTION, "inputs": inputs, "batch": ["x"], "profile": True}), 400)


def test_limits_count_the_whole_batch(tmp_path):
    """Each point's answer fits the response limit of 40 numbers; the batch's does not: refused."""
    settings = Settings(data_dir=str(tmp_path), max_response_elements=40)
    with TestClient(create_app(settings)) as client:
        point, batch = {"x": [0.1, 0.2, 0.3]}, {"x": [[0.1, 0.2, 0.3]] * 5}
        for path, expr in (("/v1/jacobian", "x.exp()"), ("/v1/hessian", "(x * x).sum()")):
            assert client.post(path, json={"expr": expr, "inputs": point}).status_code == 200  # 12 and 10 numbers
            body = assert_problem(client.post(path, json={"expr": expr, "inputs": batch, "batch": True}), 413)
            assert body["type"] == "/problems/response-too-large"
        assert client.post("/v1/evaluate", json={"expr": "x.exp()", "inputs": batch, "batch": True}).status_code == 200
        many = {"x": [[0.1, 0.2, 0.3]] * 20}  # 60 numbers
        before = ops_run(client, "exp")
        assert_problem(client.post("/v1/evaluate", json={"expr": "x.exp()", "inputs": many, "batch": True}), 413)
        assert ops_run(client, "exp") == before + 1  # bounded once the first point showed its size: 19 never ran


def ops_run(client, op: str) -> float:
    return sample(client, "gradserve_engine_ops_total", op=op) or 0.0


MANY = np.random.default_rng(16).uniform(-2.0, 2.0, size=(40, 3)).tolist()


def assert_batch_equals_points(client, path, body, batched_names, points):
    """The batched answer against one request per point (float64, 1e-12 relative)."""
    batched = client.post(path, json={**body, "batch": sorted(batched_names)})
    assert batched.status_code == 200, batched.text
    content = batched.json()
    singles = one_by_one(client, path, body, batched_names, points)
    for key in content:
        if key == "graph":
            continue
        got = arrays(content[key])
        expected = [np.stack(column) for column in zip(*(arrays(single[key]) for single in singles))]
        assert len(got) == len(expected) > 0, key
        for g, e in zip(got, expected):
            assert g.shape == e.shape, key
            np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-300, err_msg=key)
    return content


SIN = {"expr": "(w * sin(x) * x).sum() + (x * x).sum()"}
VECTOR_CASES = {
    "/v1/evaluate": ({}, {}),
    "/v1/grad": ({}, {}),
    "/v1/jacobian": ({}, {"strategy": "forward-mode"}),
    "/v1/hessian": ({}, {}),
    "/v1/vjp": ({"v": 1.0}, {"v": -2.5}),
    "/v1/jvp": ({"v": [[1.0, 0.5, -1.0], [0.0, 1.0, 0.0]]}, {"v": [[0.0, 0.0, 1.0], [2.0, 1.0, 0.0]]}),
    "/v1/hvp": ({"v": [[1.0, 0.5, -1.0], [0.0, 1.0, 0.0]]}, {"v": [[0.0, 0.0, 1.0], [2.0, 1.0, 0.0]]}),
    "/v1/vhp": ({"v": [[1.0, 0.5, -1.0], [0.0, 1.0, 0.0]]}, {"v": [[0.0, 0.0, 1.0], [2.0, 1.0, 0.0]]}),
}


@pytest.mark.parametrize("path", list(VECTOR_CASES))
def test_a_batch_runs_in_one_pass_and_equals_the_loop(client, path):
    """40 points: the function's sin runs a handful of times (one vmapped pass), not 40, and the
    answer is one request per point's, with either option variant of the transform."""
    for options in VECTOR_CASES[path]:
        inputs = {"x": {"data": MANY, "requires_grad": True, "dtype": "float64"},
                  "w": {"data": W, "requires_grad": True, "dtype": "float64"}}
        body = {**SIN, **options, "inputs": inputs, "dtype": "float64"}
        before = ops_run(client, "sin")
        response = client.post(path, json={**body, "batch": ["x"]})
        assert response.status_code == 200, response.text
        assert ops_run(client, "sin") - before <= 6
        assert_batch_equals_points(client, path, body, {"x"}, MANY)


def test_grad_outputs_and_several_outputs_in_one_pass(client):
    body = {"expr": "(x.sin() * w, (x * x).sum(), w.exp().sum())", "dtype": "float64",
            "grad_outputs": [[1.0, -2.0, 0.5], 3.0, None],
            "inputs": {"x": {"data": MANY, "requires_grad": True}, "w": {"data": W, "requires_grad": True},
                       "unused": {"data": W, "requires_grad": True}}}
    before = ops_run(client, "sin")
    content = assert_batch_equals_points(client, "/v1/grad", body, {"x"}, MANY)
    assert ops_run(client, "sin") - before <= 6 + len(MANY)  # the one-by-one requests ran 40
    assert content["grads"]["unused"] is None  # as at every point: the function does not use it
    vjp = {**body, "v": [[1.0, -2.0, 0.5], 3.0, -1.5]}
    del vjp["grad_outputs"]
    assert_batch_equals_points(client, "/v1/vjp", vjp, {"x"}, MANY)


# Programs vmap refuses (a batched value decides Python control flow, or is read into Python):
# the loop runs them, and the answer is still one request per point's.
BRANCHING = {
    "if": {"program": "if x.sum() > 0:\n    return (x.sin() * x).sum()\nreturn (x.cos() * x).sum()"},
    "while": {"program": "y = x\nwhile y.norm() < 10:\n    y = y * 2\nreturn (y.sin() * y).sum()"},
    "float": {"expr": "(x.sin() * float(x.sum())).sum()"},
    "item": {"program": "s = x.sum().item()\nreturn (x.sin() * s).sum()"},
}


@pytest.mark.parametrize("kind", list(BRANCHING))
@pytest.mark.parametrize("path", ["/v1/evaluate", "/v1/grad", "/v1/jacobian", "/v1/hessian", "/v1/hvp"])
def test_data_dependent_control_flow_falls_back_to_the_loop(client, kind, path):
    body = {**BRANCHING[kind], "dtype": "float64", "inputs": {"x": {"data": MANY, "requires_grad": True}}}
    if path == "/v1/hvp":
        body["v"] = [1.0, 0.5, -1.0]
    before = ops_run(client, "sin") + ops_run(client, "cos")
    assert client.post(path, json={**body, "batch": True}).status_code == 200
    assert ops_run(client, "sin") + ops_run(client, "cos") - before >= len(MANY)  # point by point
    assert_batch_equals_points(client, path, body, {"x"}, MANY)


def test_random_ops_fall_back_to_the_loop(client):
    """A random draw is refused under vmap: the loop draws each point's numbers as one request per
    point would (a draw per point), and a result that does not depend on the draw is exact."""
    body = {"expr": "(x * (rand(3) < 1.0)).sin().sum()", "dtype": "float64",
            "inputs": {"x": {"data": MANY, "requires_grad": True}}}
    for path in ("/v1/evaluate", "/v1/grad"):
        before = ops_run(client, "sin")
        assert client.post(path, json={**body, "batch": True}).status_code == 200
        assert ops_run(client, "sin") - before >= len(MANY)  # point by point
        assert_batch_equals_points(client, path, body, {"x"}, MANY)


def test_a_vmapped_batch_keeps_the_limits(tmp_path):
    """A vmapped batch is bounded as the loop is: the whole response before the pass, and the live
    elements by taking fewer points at a time (same answer)."""
    settings = Settings(data_dir=str(tmp_path), max_response_elements=200, max_live_elements=400)
    with TestClient(create_app(settings)) as small:
        batch = {"x": {"data": MANY, "dtype": "float64"}}
        body = assert_problem(small.post("/v1/jacobian", json={"expr": "x.exp()", "inputs": batch, "batch": True}),
                              413)
        assert body["type"] == "/problems/response-too-large"
        few = {"x": {"data": MANY[:12], "requires_grad": True, "dtype": "float64"}}
        assert_batch_equals_points(small, "/v1/grad", {"expr": "(x.sin() * x).sum()", "inputs": few,
                                                       "dtype": "float64"}, {"x"}, MANY[:12])


@pytest.mark.parametrize("path", ["/v1/evaluate", "/v1/grad", "/v1/jacobian", "/v1/vjp"])
@pytest.mark.parametrize("expr", ["((x.sin() * w).sum(), 2.0)", "((x.sin() * w).sum(), w.exp().sum())",
                                  "((x.sin() * w).sum(), x.sum() > 0)", "(x * x.shape[0]).sin().sum()"])
def test_outputs_no_input_reaches_answer_as_the_loop(client, path, expr):
    """Constants, outputs of an input not differentiated, booleans: as one request per point."""
    body = {"expr": expr, "dtype": "float64", "wrt": ["x"],
            "inputs": {"x": {"data": MANY[:6]}, "w": {"data": W}}}
    if path == "/v1/vjp":
        body["v"] = [1.0, 1.0] if expr.startswith("((") else 1.0
        del body["wrt"]
    if path == "/v1/jacobian" or path == "/v1/evaluate":
        del body["wrt"]
    assert_batch_equals_points(client, path, body, {"x"}, MANY[:6])
@pytest.mark.parametrize(("path", "seed", "result"), [("/v1/grad", "grad_outputs", "grads"), ("/v1/vjp", "v", "vjp")])
def test_a_tensor_the_same_at_every_point_counts_once_against_the_request_limit(tmp_path, path, seed, result):
    """grad_outputs and v are one tensor for the whole batch: 20 points with a 10 000-number seed hold
    10 020 numbers, within a request limit of 50 000 (they were decoded and counted once per point,
    200 000 numbers, and refused 413). Each point's gradient is 2 x * sum(seed), whatever the others did
    with the shared seed."""
    settings = Settings(data_dir=str(tmp_path), max_request_elements=50_000)
    points = np.arange(1, 21, dtype=np.float64) / 8  # exact in float32
    seed_value = [0.5] * 10_000
    body = {"inputs": {"x": {"data": points.tolist(), "shape": [20, 1], "requires_grad": True}},
            "expr": "x * x * ones(10000)", "batch": True,
            seed: [{"data": seed_value}] if seed == "grad_outputs" else {"data": seed_value}}
    with TestClient(create_app(settings)) as client:
        response = client.post(path, json=body)
    assert response.status_code == 200, response.text[:300]
    content = response.json()[result]
    (gradient,) = arrays(content["x"] if result == "grads" else content)
    np.testing.assert_allclose(gradient.reshape(20), 2 * points * 5000.0, rtol=1e-6)
