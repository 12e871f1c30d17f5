"""Hostile client code gets a clear 4xx problem, and the server stays healthy and correct."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration

HOSTILE = {
    "class walk": ("expr", "().__class__.__bases__[0].__subclasses__()"),
    "dunder import": ("expr", "__import__('os').system('true')"),
    "import statement": ("program", "import os\nreturn x"),
    "attribute walk": ("expr", "x.grad_fn.next_functions"),
    "private attribute": ("expr", "x._data"),
    "globals": ("expr", "globals()"),
    "eval": ("expr", "eval('1')"),
    "open": ("expr", "open('/etc/passwd')"),
    "huge range": ("program", "for i in range(10**12):\n    x = x + 1\nreturn x"),
    "while true": ("program", "while True:\n    x = x + 1\nreturn x"),
    "empty while true": ("program", "while True:\n    pass\nreturn x"),
    "deep nesting": ("expr", "(" * 300 + "x" + ")" * 300),
    "deep unary": ("expr", "-" * 5000 + "x"),
    "giant zeros": ("expr", "zeros(10**10)"),
    "giant expand": ("expr", "x.expand(10**6, 10**6)"),
    "giant outer": ("program", "y = ones(10**5)\nreturn outer(y, y)"),
    "giant power": ("expr", "10**10**10"),
    "def recursion": ("program", "def f(n):\n    return f(n)\nreturn f(1)"),
    "lambda": ("expr", "(lambda: 1)()"),
    "class": ("program", "class A:\n    pass\nreturn x"),
    "huge list": ("expr", "tensor([0] * 10**9)"),
    "string multiply": ("expr", "'a' * 10**9"),
    "no return": ("program", "y = x"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_program_is_a_clear_4xx(http, name):
    form, source = HOSTILE[name]
    response = http.post("/v1/grad", json={"inputs": {"x": {"data": [1.0, 2.0], "requires_grad": True}},
                                           form: source})
    assert 400 <= response.status_code < 500, (name, response.status_code, response.text)
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["detail"] and problem["status"] == response.status_code


def test_server_is_healthy_and_correct_after_the_hostile_programs(http):
    for form, source in HOSTILE.values():
        http.post("/v1/evaluate", json={"inputs": {"x": [1.0]}, form: source})
    assert http.get("/healthz").status_code == 200
    assert http.get("/readyz").json() == {"status": "ready"}
    body = http.post("/v1/grad", json={"inputs": {"x": {"data": [3.0], "requires_grad": True}},
                                       "expr": "(x * x).sum()"}).json()
    assert body["grads"]["x"]["data"] == [6.0]


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b'"just a string"',
        b"{" * 5000,
        b'{"inputs": {"x": ' + b"[" * 3000 + b"]" * 3000 + b'}, "expr": "x"}',
        b'{"inputs": {"x": {"b64": "@@@@", "shape": [1]}}, "expr": "x"}',
        b'{"inputs": {"x": {"data": [1], "shape": [1000000000, 1000000000]}}, "expr": "x"}',
        b'{"inputs": {"x": 1}, "expr": "x", "graph": {"nodes": [], "outputs": ["x"]}}',
        b'{"inputs": {"__class__": 1}, "expr": "1"}',
    ],
)
def test_malformed_bodies_are_4xx(http, body):
    response = http.post("/v1/evaluate", content=body, headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"] == "application/problem+json"


# Issue 14: these two killed the server (a segfault in orjson encoding 9e8 and 4e8 numbers).
CRASHERS = {
    "/v1/hessian": ({"inputs": {"x": {"data": [0.0] * 30000}}, "expr": "(x.sin()).sum()"}, 30000 * 30000 + 1,
                    "the Hessian of inputs [[30000]]"),
    "/v1/jacobian": ({"inputs": {"x": {"data": [0.0] * 20000}}, "expr": "x.sin()"}, 20000 * 20000 + 20000,
                     "the Jacobian of outputs [[20000]] by inputs [[20000]]"),
}


@pytest.mark.parametrize("path", list(CRASHERS))
def test_a_result_too_large_to_send_is_413_naming_its_size(http, path):
    body, elements, what = CRASHERS[path]
    limit = http.get("/v1/info").json()["limits"]["max_response_elements"]
    response = http.post(path, json=body)
    assert response.status_code == 413, response.text[:300]
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "/problems/response-too-large" and problem["status"] == 413
    assert problem["elements"] == elements and problem["limit"] == limit
    assert what in problem["detail"] and str(limit) in problem["detail"]
    assert http.get("/healthz").status_code == 200
