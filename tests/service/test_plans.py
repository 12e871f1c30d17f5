"""The plan cache (service.plans): keys, hits, misses, evictions, limits on a hit, the graph description."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings
from service.plans import PlanCache, function_source
from tests.metrics import sample
from tests.problems import assert_problem

SIN = {"inputs": {"a": {"data": [0.0, 0.5, 1.0], "requires_grad": True}}, "expr": "(2 * sin(a) + 1).sum()"}


def plan_of(response) -> str:
    timing = response.headers["server-timing"]
    return "hit" if 'plan;desc="hit"' in timing else "miss" if 'plan;desc="miss"' in timing else timing


def metric(client, name: str, **labels: str) -> float:
    value = sample(client, name, **labels)
    assert value is not None, f"{name} not in /metrics"
    return value


@pytest.fixture
def make_client(tmp_path):
    made = []

    def make(**settings):
        client = TestClient(create_app(Settings(data_dir=str(tmp_path), **settings)))
        made.append(client.__enter__())
        return made[-1]

    yield make
    for client in made:
        client.__exit__(None, None, None)


def test_canonical_ids_ignore_layout_and_defaults_only():
    assert function_source("expr", " a * 2\n").id == function_source("expr", "a * 2").id
    assert function_source("expr", "a * 2").id != function_source("expr", "a * 3").id
    assert function_source("program", "y = a\r\nreturn y   \n\n").id == function_source("program", "y = a\nreturn y").id
    # Leading blank lines stay: they move the lines that error messages name.
    assert function_source("program", "\nreturn a").id != function_source("program", "return a").id
    bare = {"nodes": [{"op": "sin", "inputs": ["a"], "output": "b"}], "outputs": ["b"]}
    full = {"outputs": ["b"], "nodes": [{"output": "b", "attrs": {}, "inputs": ["a"], "op": "sin"}]}
    assert function_source("graph", bare).id == function_source("graph", full).id
    assert function_source("graph", bare).id != function_source("expr", "sin(a)").id
    assert len(function_source("expr", "a").id) == 64


def test_repeats_hit_and_another_signature_misses(make_client):
    client = make_client()
    assert plan_of(client.post("/v1/grad", json=SIN)) == "miss"
    assert plan_of(client.post("/v1/grad", json={**SIN, "expr": "  (2 * sin(a) + 1).sum() "})) == "hit"
    assert plan_of(client.post("/v1/evaluate", json=SIN)) == "miss"  # another transform
    longer = {**SIN, "inputs": {"a": {"data": [0.0, 0.5], "requires_grad": True}}}
    assert plan_of(client.post("/v1/grad", json=longer)) == "miss"  # another shape
    assert plan_of(client.post("/v1/grad", json={**SIN, "dtype": "float64"})) == "miss"  # another dtype
    assert plan_of(client.post("/v1/grad", json={**SIN, "inputs": {"a": [0.0, 0.5, 1.0]}})) == "miss"  # no grad
    renamed = {"inputs": {"b": SIN["inputs"]["a"]}, "expr": "(2 * sin(b) + 1).sum()"}
    assert plan_of(client.post("/v1/grad", json=renamed)) == "miss"
    assert metric(client, "gradserve_plan_cache_hits_total") == 1
    assert metric(client, "gradserve_plan_cache_misses_total") == 6
    assert client.get("/v1/info").json()["limits"]["plan_cache_size"] == 256


def test_the_lru_evicts_the_least_recently_used_plan(make_client):
    client = make_client(plan_cache_size=2)
    bodies = [{"inputs": {"a": [1.0, 2.0]}, "expr": f"a * {k}"} for k in range(3)]
    assert [plan_of(client.post("/v1/evaluate", json=b)) for b in bodies[:2]] == ["miss", "miss"]
    assert plan_of(client.post("/v1/evaluate", json=bodies[0])) == "hit"  # 0 is now the most recent
    assert plan_of(client.post("/v1/evaluate", json=bodies[2])) == "miss"  # evicts 1
    assert metric(client, "gradserve_plan_cache_evictions_total") == 1
    assert plan_of(client.post("/v1/evaluate", json=bodies[0])) == "hit"
    assert plan_of(client.post("/v1/evaluate", json=bodies[1])) == "miss"
    assert metric(client, "gradserve_plan_cache_entries") == 2


def test_a_zero_size_cache_keeps_nothing(make_client):
    client = make_client(plan_cache_size=0)
    assert [plan_of(client.post("/v1/grad", json=SIN)) for _ in range(2)] == ["miss", "miss"]


def test_invalid_functions_are_reported_every_time_not_cached(make_client):
    client = make_client()
    bad = {"inputs": {"x": [1.0]}, "program": "return q + 1"}
    for _ in range(2):
        assert assert_problem(client.post("/v1/evaluate", json=bad), 400)["line"] == 1


def test_limits_hold_on_a_cache_hit(make_client):
    """The doubling loop runs more steps for smaller inputs: the second call hits the plan and is refused."""
    client = make_client(max_program_steps=60)
    doubling = "y = x * 2\nwhile y.norm() < 1000:\n    y = y * 2\nreturn y.sum()"
    ok = client.post("/v1/evaluate", json={"inputs": {"x": [500.0]}, "program": doubling})
    assert ok.status_code == 200 and plan_of(ok) == "miss"
    refused = client.post("/v1/evaluate", json={"inputs": {"x": [1e-30]}, "program": doubling})
    assert assert_problem(refused, 400)["kind"] == "steps"
    assert metric(client, "gradserve_plan_cache_hits_total") == 1
    # The element limit too: the same plan (same signature), a value that asks for more.
    client = make_client(max_program_elements=1000)
    ones = "return ones(int(n.item()))"
    assert client.post("/v1/evaluate", json={"inputs": {"n": 10.0}, "program": ones}).status_code == 200
    assert_problem(client.post("/v1/evaluate", json={"inputs": {"n": 100000.0}, "program": ones}), 413)


def test_the_graph_description_follows_the_path_a_program_took(make_client):
    """One plan, two branches: each response describes the graph its own call recorded."""
    branching = {"program": "if x.sum() > 0:\n    return x.sin().sum()\nreturn x.exp().sum()"}
    client = make_client()
    names = []
    for value in ([1.0, 2.0], [-1.0, -2.0], [3.0, 1.0]):
        response = client.post("/v1/grad", json={**branching, "inputs": {"x": {"data": value, "requires_grad": True}}})
        assert response.status_code == 200, response.text
        names.append(response.json()["graph"][0]["next_functions"][0][0]["name"])
    assert names == ["SinBackward0", "ExpBackward0", "SinBackward0"]
    # An expression that branches on a value is not taken for a fixed graph either.
    client = make_client()
    ifexp = {"expr": "x.sin().sum() if x.sum() > 0 else x.exp().sum()"}
    names = [client.post("/v1/grad", json={**ifexp, "inputs": {"x": {"data": v, "requires_grad": True}}}).json()
             ["graph"][0]["next_functions"][0][0]["name"] for v in ([1.0], [-1.0])]
    assert names == ["SinBackward0", "ExpBackward0"]


def test_the_described_graph_names_each_request_leaf(make_client):
    client = make_client()
    for name in ("a", "b"):
        body = {"inputs": {name: {"data": [1.0], "requires_grad": True}}, "expr": f"({name} * 2).sum()"}
        graph = client.post("/v1/grad", json=body).json()["graph"][0]
        leaf = graph["next_functions"][0][0]["next_functions"][0][0]
        assert leaf == {"name": "AccumulateGrad", "id": 2, "variable": name, "next_functions": []}


def test_plan_cache_is_thread_safe_and_bounded():
    from concurrent.futures import ThreadPoolExecutor

    from frontends.budget import Budget
    from service.plans import PlanKey

    cache = PlanCache(8)
    functions = [function_source("expr", f"a * {k}") for k in range(32)]

    def look_up(k):
        function = functions[k % 32]
        plan, _ = cache.plan(PlanKey(function.id, ("a",), ("evaluate",), Budget(), ()), function)
        return plan.function.id == function.id

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(look_up, range(400)))
    assert len(cache) == 8


def constant_graph(value: float, count: int) -> dict:
    """``x + c`` with ``c`` a constant of ``count`` numbers: a graph whose canonical text is large."""
    return {"nodes": [{"op": "constant", "attrs": {"value": [value] * count}, "output": "c"},
                      {"op": "add", "inputs": ["x", "c"], "output": "y"}], "outputs": ["y"]}


def test_plan_cache_is_bounded_by_its_functions_bytes():
    """Plans of large functions (a graph's constants) are evicted by the bytes of their text, not only
    by count: 20 graphs of ~40 KB under a 100 KB bound keep at most 2, and the count of bytes kept
    matches the plans kept."""
    from frontends.budget import Budget
    from service.plans import PlanKey

    bound = 100_000
    cache = PlanCache(256, max_bytes=bound)
    functions = [function_source("graph", constant_graph(float(k), 10_000)) for k in range(20)]
    assert all(30_000 < len(f.text) < 60_000 for f in functions)
    for function in functions:
        cache.plan(PlanKey(function.id, ("x",), ("evaluate",), Budget(), ()), function)
        assert cache.bytes <= bound
    assert 1 <= len(cache) <= 2
    assert cache.bytes == sum(len(f.text) for f in functions[-len(cache):])
    last = functions[-1]
    assert cache.plan(PlanKey(last.id, ("x",), ("evaluate",), Budget(), ()), last)[1]  # the newest is kept


def test_a_function_larger_than_the_plan_cache_bytes_runs_but_is_not_kept():
    from frontends.budget import Budget
    from service.plans import PlanKey

    cache = PlanCache(256, max_bytes=1000)
    small = function_source("expr", "x * 2")
    cache.plan(PlanKey(small.id, ("x",), ("evaluate",), Budget(), ()), small)
    large = function_source("graph", constant_graph(1.0, 1000))
    key = PlanKey(large.id, ("x",), ("evaluate",), Budget(), ())
    plan, hit = cache.plan(key, large)
    assert not hit and plan.fn is not None
    assert not cache.plan(key, large)[1]  # built again, never cached
    assert len(cache) == 1 and cache.bytes == len(small.text)  # and it did not evict the small one


def test_the_app_bounds_its_plan_cache_by_bytes(make_client):
    client = make_client(plan_cache_bytes=60_000)
    assert client.get("/v1/info").json()["limits"]["plan_cache_bytes"] == 60_000
    for k in range(6):
        body = {"inputs": {"x": [1.0]}, "graph": constant_graph(float(k), 5_000)}
        response = client.post("/v1/evaluate", json=body)
        assert response.status_code == 200, response.text[:300]
        assert response.json()["outputs"][0]["data"][:2] == [1.0 + k, 1.0 + k]
    assert metric(client, "gradserve_plan_cache_entries") <= 3  # 5 000 numbers: ~20 KB of text each
