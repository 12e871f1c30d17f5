"""service.errors: the one place failures become problems; here, what a client over HTTP reads."""

from __future__ import annotations

import pytest

UNKNOWN_NAMES = [
    ({"expr": "frobnicate(a)"}, "unknown function 'frobnicate'"),
    ({"program": "y = a.frobnicate()\nreturn y"}, "unknown attribute 'frobnicate'"),
    ({"graph": {"nodes": [{"op": "frobnicate", "inputs": ["a"], "output": "b"}], "outputs": ["b"]}},
     "node 0 (frobnicate -> b): unknown op 'frobnicate'"),
]


@pytest.mark.parametrize(("function", "fact"), UNKNOWN_NAMES, ids=["expr", "program", "graph"])
def test_an_unknown_name_points_to_get_v1_ops_not_to_python(client, function, fact):
    response = client.post("/v1/evaluate", json={"inputs": {"a": [1.0, 2.0]}, **function})
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert detail == f"{fact}; see GET /v1/ops"
    published = client.get("/v1/ops").json()
    assert "sin" in published["functions"] and "sin" in {op["name"] for op in published["ops"]}
