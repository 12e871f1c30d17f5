"""Hostile but valid functions against a real, capped server: the plan cache and the function registry.

Every request here is small enough to pass each input limit, and each function is valid: a
JSON graph ``x + c`` whose constant ``c`` has 200 000 numbers (~0.8 MB of canonical text,
~9 MB of Python floats once parsed). What makes them hostile is their number: each is a new
function, so each is a new plan, and each registered one a new entry in the registry's cache.
Before those caches were bounded in bytes (``GRADSERVE_PLAN_CACHE_BYTES``,
``service.functions.CACHE_BYTES``) as well as in entries, the server's resident memory grew by
the size of every function it had seen, up to 256 plans and 1024 registry entries of them
(tens of GB from a few hundred requests). Here the resident memory after many such functions
must stay within a bound that a few of them fit and all of them do not.
"""

from __future__ import annotations

import shutil

import httpx
import pytest

from tests.integration.conftest import LiveServer

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit (util-linux)"),
]

CONSTANT_NUMBERS = 200_000
FUNCTIONS = 40
CAP_BYTES = 3 << 30  # far above what a bounded server needs; below what 40 unbounded plans and entries take
PLAN_CACHE_BYTES = 4 << 20  # ~5 of these functions' texts


def resident_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS"))


def constant_graph(k: int) -> dict:
    return {"nodes": [{"op": "constant", "attrs": {"value": [float(k)] * CONSTANT_NUMBERS}, "output": "c"},
                      {"op": "add", "inputs": ["x", "c"], "output": "y"}], "outputs": ["y"]}


@pytest.fixture(scope="module")
def capped(tmp_path_factory):
    live = LiveServer({"GRADSERVE_DATA_DIR": str(tmp_path_factory.mktemp("data")),
                       "GRADSERVE_PLAN_CACHE_BYTES": str(PLAN_CACHE_BYTES), "GRADSERVE_QUEUE_TIMEOUT_S": "120",
                       "GRADSERVE_DEADLINE_S": "30"},
                      prefix=["prlimit", f"--as={CAP_BYTES}"])
    yield live
    live.stop_clean()  # not one 500


@pytest.fixture(scope="module")
def client(capped):
    with httpx.Client(base_url=capped.url, timeout=120.0) as http:
        yield http


def test_many_large_functions_do_not_grow_the_server(capped, client):
    """Each function is run inline, registered, and run through its id; the memory the server holds
    afterwards grows by less than a third of what keeping every function once would take (~9 MB each)."""
    def use(k: int) -> None:
        graph = constant_graph(k)
        inline = client.post("/v1/evaluate", json={"inputs": {"x": [1.0]}, "graph": graph, "encoding": "base64"})
        assert inline.status_code == 200, inline.text[:300]
        registered = client.post("/v1/functions", json={"graph": graph})
        assert registered.status_code == 201, registered.text[:300]
        by_id = client.post(registered.json()["location"] + "/grad",
                            json={"inputs": {"x": {"data": [1.0], "requires_grad": True}},
                                  "grad_outputs": [{"data": [1.0] * CONSTANT_NUMBERS}], "encoding": "base64"})
        assert by_id.status_code == 200, by_id.text[:300]
        assert by_id.json()["grads"]["x"]["shape"] == [1]

    for k in range(4):  # warm: the worker threads, the allocator's arenas, the caches' first entries
        use(k)
    before = resident_mb(capped.process.pid)
    for k in range(4, FUNCTIONS):
        use(k)
    grown = resident_mb(capped.process.pid) - before
    every_function_kept = (FUNCTIONS - 4) * 9
    assert grown < every_function_kept / 3, f"resident memory grew by {grown:.0f} MB over {FUNCTIONS - 4} functions"
    assert client.get("/healthz").status_code == 200


def test_the_plan_cache_holds_no_more_than_its_bytes(client):
    info = client.get("/v1/info").json()["limits"]
    assert info["plan_cache_bytes"] == PLAN_CACHE_BYTES
    entries = next(float(line.split()[1]) for line in client.get("/metrics").text.splitlines()
                   if line.startswith("gradserve_plan_cache_entries "))
    text_bytes = len(str(constant_graph(0)).replace(" ", ""))  # about its canonical JSON's length
    assert 1 <= entries <= PLAN_CACHE_BYTES // text_bytes + 1


def test_registering_deleting_and_calling_one_function_at_once(client):
    """Eight clients register, delete and call the same function in a race: each gets an answer that
    one order of those operations explains (never a 500, which ``stop_clean`` checks in the log), and
    a call that is answered computes the function."""
    from concurrent.futures import ThreadPoolExecutor

    function = {"expr": "(x * 3).sum()"}
    location = client.post("/v1/functions", json=function).json()["location"]

    def act(k: int) -> tuple[str, int, float | None]:
        kind = ("register", "delete", "call")[k % 3]
        if kind == "register":
            return kind, client.post("/v1/functions", json=function).status_code, None
        if kind == "delete":
            return kind, client.delete(location).status_code, None
        response = client.post(location + "/evaluate", json={"inputs": {"x": [1.0, 2.0]}})
        value = response.json()["outputs"][0]["data"] if response.status_code == 200 else None
        return kind, response.status_code, value

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(act, range(240)))
    allowed = {"register": {200, 201}, "delete": {204, 404}, "call": {200, 404}}
    assert all(status in allowed[kind] for kind, status, _ in results), results
    assert all(value == [9.0] for kind, status, value in results if kind == "call" and status == 200), results
    assert client.post("/v1/functions", json=function).status_code in {200, 201}
    assert client.post(location + "/evaluate", json={"inputs": {"x": [1.0, 2.0]}}).json()["outputs"][0]["data"] == [9.0]
