"""/v1/models against real uvicorn processes: the tutorial's training loop, crashes, races, replicas.

- The tutorial's training section over HTTP gives the numbers of
  ``frontends.model_spec.TrainableModel`` in-process with the same seed, and the
  numbers the tutorial's own formulas give (weights unchanged by backward,
  ``step`` moves them by ``-lr * grad`` to float32 rounding, five more backward
  calls add five gradients, ``zero_grad(set_to_none=False)`` leaves zeros).
- Durability: the server is SIGKILLed in the middle of a stream of ``step``
  requests; restarted on the same data dir, the model holds every
  acknowledged step.
- Concurrency: 50 parallel steps advance the model by exactly 50; a stale
  ``If-Match`` gets 412.
- Scale-out: two uvicorn processes sharing one redis-server serve one model
  consistently, also under parallel steps sent to both.

What the server computes with BLAS (losses, gradients, steps) is compared with
the in-process model up to summation order (``tests/floats.py``): the server is
another process, and its BLAS thread count, which decides how a matrix product
is split, is its own setting. Copies (seeded weights, weights after backward,
grads after step, zeros) are compared bit for bit.
"""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import numpy as np
import pybase64
import pytest

import engine
from frontends.model_spec import TINY_MODEL_SPEC, TrainableModel
from tests.floats import assert_close_up_to_summation_order, assert_within_ulps
from tests.integration.conftest import LiveServer, assert_no_server_errors
from tests.redis_server import running_redis

pytestmark = pytest.mark.integration

SMALL_MODEL = {
    "layers": [{"type": "linear", "in_features": 8, "out_features": 16}, {"type": "tanh"},
               {"type": "linear", "in_features": 16, "out_features": 4}],
    "optimizer": {"type": "sgd", "lr": 0.01, "momentum": 0.9},
    "seed": 7,
}


def wire(array: np.ndarray) -> dict:
    array = np.ascontiguousarray(array, dtype=np.float32)
    return {"b64": pybase64.b64encode(array.tobytes()).decode(), "shape": list(array.shape), "dtype": "float32"}


def unwire(tensor: dict | None):
    if tensor is None:
        return None
    data = np.frombuffer(pybase64.b64decode(tensor["b64"]), dtype=np.dtype(tensor["dtype"]).newbyteorder("<"))
    return data.reshape(tensor["shape"])


def fetch_parameters(client: httpx.Client, model_id: str) -> tuple[dict, dict]:
    response = client.get(f"/v1/models/{model_id}/parameters", params={"encoding": "base64"})
    assert response.status_code == 200, response.text
    body = response.json()
    return ({n: unwire(t) for n, t in body["parameters"].items()}, {n: unwire(t) for n, t in body["grads"].items()})


def create(client: httpx.Client, spec: dict) -> str:
    response = client.post("/v1/models", json=spec)
    assert response.status_code == 201, response.text
    assert response.headers["location"] == f"/v1/models/{response.json()['id']}"
    assert response.headers["etag"] == '"1"'
    return response.json()["id"]


def data(seed: int, rows: int, width: int, out: int):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((rows, width)).astype(np.float32), rng.standard_normal((rows, out)).astype(np.float32)


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory):
    live = LiveServer({"GRADSERVE_DATA_DIR": str(tmp_path_factory.mktemp("models-data")),
                       "GRADSERVE_MAX_CONCURRENCY": "4", "GRADSERVE_QUEUE_TIMEOUT_S": "60"})
    yield live
    live.stop_clean()


@pytest.fixture(scope="module")
def client(sqlite_server):
    with sqlite_server.client() as http:
        yield http


# ---- the tutorial's training section ------------------------------------------------------


def layer2_weight_grad(params: dict, x, target) -> np.ndarray:
    """d loss / d layer2.weight for loss = ((target - prediction) ** 2).sum(), in float64 by hand."""
    x = x.astype(np.float64)
    hidden = np.maximum(x @ params["0.weight"].astype(np.float64).T + params["0.bias"], 0)
    prediction = hidden @ params["2.weight"].astype(np.float64).T + params["2.bias"]
    return (-2 * (target - prediction)).T @ hidden


def test_tutorial_training_section_over_http(client):
    some_input, ideal_output = data(0, 16, 1000, 10)
    model_id = create(client, TINY_MODEL_SPEC)
    local = TrainableModel(TINY_MODEL_SPEC)  # the same spec and seed, in-process

    initial, grads = fetch_parameters(client, model_id)
    assert all(g is None for g in grads.values())  # print(model.layer2.weight.grad) -> None
    engine.manual_seed(0)  # the spec's weights are manual_seed(seed) + nn.Sequential built by hand
    by_hand = engine.nn.Sequential(engine.nn.Linear(1000, 100), engine.nn.ReLU(), engine.nn.Linear(100, 10))
    for name, param in by_hand.named_parameters():
        np.testing.assert_array_equal(initial[name], param.detach().numpy())

    response = client.post(f"/v1/models/{model_id}/backward", json={"input": wire(some_input),
                                                                     "target": wire(ideal_output)})
    assert response.status_code == 200 and response.headers["etag"] == '"2"'
    # Losses are float32 numbers sent as JSON doubles: ulps of float32.
    assert_close_up_to_summation_order(np.float32(response.json()["loss"]), local.backward(some_input, ideal_output))
    after_backward, first_grads = fetch_parameters(client, model_id)
    for name in initial:
        np.testing.assert_array_equal(after_backward[name], initial[name])  # backward leaves the weights alone
        assert_close_up_to_summation_order(first_grads[name], local.named_grads()[name], err_msg=name)
    np.testing.assert_allclose(first_grads["2.weight"], layer2_weight_grad(initial, some_input, ideal_output),
                               rtol=1e-4, atol=1e-4)

    response = client.post(f"/v1/models/{model_id}/step")
    assert response.json() == {"step": 1, "version": 3}
    local.step()
    stepped, grads_after_step = fetch_parameters(client, model_id)
    lr = np.float64(np.float32(0.001))
    for name in initial:
        # w - lr * g, exact in float64; fused into one rounding or not (the BLAS kernel decides),
        # the float32 step is within one ulp of |w| + |lr g| of it.
        exact = initial[name].astype(np.float64) - lr * first_grads[name].astype(np.float64)
        assert_within_ulps(stepped[name], exact, 1, scale=np.abs(initial[name]) + np.abs(lr * first_grads[name]),
                           err_msg=name)
        np.testing.assert_array_equal(grads_after_step[name], first_grads[name])  # step leaves grads alone

    for _ in range(5):
        assert client.post(f"/v1/models/{model_id}/backward",
                           json={"input": wire(some_input), "target": wire(ideal_output)}).status_code == 200
        local.backward(some_input, ideal_output)
    _, accumulated = fetch_parameters(client, model_id)
    for name in initial:
        assert_close_up_to_summation_order(accumulated[name], local.named_grads()[name], err_msg=name)
    expected = first_grads["2.weight"] + 5 * layer2_weight_grad(stepped, some_input, ideal_output)
    np.testing.assert_allclose(accumulated["2.weight"], expected, rtol=1e-4, atol=1e-3)

    response = client.post(f"/v1/models/{model_id}/zero_grad", json={"set_to_none": False})
    assert response.status_code == 200
    _, zeroed = fetch_parameters(client, model_id)
    for name, grad in zeroed.items():
        np.testing.assert_array_equal(grad, np.zeros_like(initial[name]))
    sliced = client.get(f"/v1/models/{model_id}/parameters", params={"name": "2.weight", "index": "0,0:10"}).json()
    assert sliced["grads"]["2.weight"] == {"shape": [10], "dtype": "float32", "data": [0.0] * 10}
    assert sliced["parameters"]["2.weight"]["data"] == pytest.approx(stepped["2.weight"][0, :10].tolist())
    client.post(f"/v1/models/{model_id}/zero_grad")
    assert all(g is None for g in fetch_parameters(client, model_id)[1].values())


def test_training_streams_server_sent_events(client):
    x, y = data(4, 6, 8, 4)
    model_id = create(client, SMALL_MODEL)
    body = {"inputs": wire(x), "targets": wire(y), "steps": 5, "batch_size": 4}
    events = []
    with client.stream("POST", f"/v1/models/{model_id}/train", json=body,
                       headers={"Accept": "text/event-stream"}) as stream:
        assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((kind, httpx.Response(200, content=line.removeprefix("data: ")).json()))
    expected = TrainableModel(SMALL_MODEL).train(x, y, 5, 4)
    assert [k for k, _ in events] == ["progress"] * 5 + ["result"]
    assert [e["step"] for _, e in events[:5]] == [1, 2, 3, 4, 5]
    losses = [e["loss"] for _, e in events[:5]]
    for step, (loss, want) in enumerate(zip(losses, expected, strict=True), 1):
        assert_close_up_to_summation_order(np.float32(loss), want, err_msg=f"step {step}")  # float32 losses
    assert events[-1][1] == {"losses": losses, "step": 5, "version": 2}


# ---- concurrency ------------------------------------------------------------------------------


async def parallel_steps(urls: list[str], model_id: str, count: int) -> list[httpx.Response]:
    clients = [httpx.AsyncClient(base_url=url, timeout=120.0) for url in urls]
    try:
        return await asyncio.gather(*(clients[i % len(clients)].post(f"/v1/models/{model_id}/step")
                                      for i in range(count)))
    finally:
        for c in clients:
            await c.aclose()


def replayed(spec: dict, x, y, steps: int) -> TrainableModel:
    model = TrainableModel(spec)
    model.backward(x, y)
    for _ in range(steps):
        model.step()
    return model


def assert_parameters_match(client: httpx.Client, model_id: str, model: TrainableModel) -> None:
    """The served model's parameters and grads are the in-process ``model``'s, up to summation order:
    a lost or repeated step would move them by about ``lr * grad``, far more than that."""
    params, grads = fetch_parameters(client, model_id)
    for name, value in model.named_parameters().items():
        assert_close_up_to_summation_order(params[name], value, err_msg=name)
        assert_close_up_to_summation_order(grads[name], model.named_grads()[name], err_msg=name)


def test_fifty_parallel_steps_advance_by_exactly_fifty(sqlite_server, client):
    x, y = data(1, 4, 8, 4)
    model_id = create(client, SMALL_MODEL)
    client.post(f"/v1/models/{model_id}/backward", json={"input": wire(x), "target": wire(y)})
    responses = asyncio.run(parallel_steps([sqlite_server.url], model_id, 50))
    assert [r.status_code for r in responses] == [200] * 50
    assert sorted(r.json()["step"] for r in responses) == list(range(1, 51))
    assert sorted(int(r.headers["etag"].strip('"')) for r in responses) == list(range(3, 53))
    info = client.get(f"/v1/models/{model_id}").json()
    assert (info["step"], info["version"]) == (50, 52)
    assert_parameters_match(client, model_id, replayed(SMALL_MODEL, x, y, 50))


def test_stale_if_match_gets_412_and_changes_nothing(client):
    model_id = create(client, SMALL_MODEL)
    current = client.post(f"/v1/models/{model_id}/step", headers={"If-Match": '"1"'})
    assert current.status_code == 200 and current.headers["etag"] == '"2"'
    stale = client.post(f"/v1/models/{model_id}/step", headers={"If-Match": '"1"'})
    assert stale.status_code == 412
    assert stale.headers["content-type"] == "application/problem+json"
    assert stale.json()["status"] == 412 and stale.json()["etag"] == '"2"'
    deleted = client.delete(f"/v1/models/{model_id}", headers={"If-Match": '"1"'})
    assert deleted.status_code == 412
    assert client.get(f"/v1/models/{model_id}").json()["step"] == 1
    assert client.delete(f"/v1/models/{model_id}", headers={"If-Match": '"2"'}).status_code == 204
    missing = client.get(f"/v1/models/{model_id}")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"


# ---- durability -------------------------------------------------------------------------------


def test_sigkill_mid_stream_loses_no_acknowledged_step(tmp_path):
    x, y = data(2, 4, 8, 4)
    env = {"GRADSERVE_DATA_DIR": str(tmp_path)}
    server = LiveServer(env)
    acknowledged = []  # step numbers the server answered 200 for
    try:
        with server.client() as http:
            model_id = create(http, SMALL_MODEL)
            assert http.post(f"/v1/models/{model_id}/backward",
                             json={"input": wire(x), "target": wire(y)}).status_code == 200

        def send_steps():
            with server.client() as http:
                while True:
                    try:
                        response = http.post(f"/v1/models/{model_id}/step")
                    except httpx.TransportError:
                        return
                    assert response.status_code == 200, response.text
                    acknowledged.append(response.json()["step"])

        sender = threading.Thread(target=send_steps)
        sender.start()
        deadline = time.monotonic() + 60
        while len(acknowledged) < 30 and time.monotonic() < deadline:
            time.sleep(0.005)
        server.process.kill()  # SIGKILL: no shutdown hooks, no flush
        server.process.wait()
        sender.join()
    finally:
        server.stop()
    assert len(acknowledged) >= 30 and acknowledged == list(range(1, len(acknowledged) + 1))

    restarted = LiveServer(env)
    try:
        with restarted.client() as http:
            info = http.get(f"/v1/models/{model_id}").json()
            # Every acknowledged step is there; at most the one request in flight at the kill
            # committed without its answer reaching the client.
            assert acknowledged[-1] <= info["step"] <= acknowledged[-1] + 1
            assert info["version"] == info["step"] + 2
            assert_parameters_match(http, model_id, replayed(SMALL_MODEL, x, y, info["step"]))
            assert http.post(f"/v1/models/{model_id}/step").json()["step"] == info["step"] + 1
    finally:
        restarted.stop_clean()


# ---- scale-out: two replicas, one redis ----------------------------------------------------------


def test_two_replicas_sharing_redis_stay_consistent():
    x, y = data(3, 4, 8, 4)
    with running_redis() as url:
        env = {"GRADSERVE_STORE": url, "GRADSERVE_QUEUE_TIMEOUT_S": "60"}
        replicas = [LiveServer(env), LiveServer(env)]
        try:
            a, b = (replica.client() for replica in replicas)
            model_id = create(a, SMALL_MODEL)
            assert b.get(f"/v1/models/{model_id}").json()["version"] == 1
            assert b.post(f"/v1/models/{model_id}/backward", json={"input": wire(x), "target": wire(y)}).json()[
                "version"] == 2
            for i in range(10):  # alternate replicas: each sees the other's last write
                client = (a, b)[i % 2]
                assert client.post(f"/v1/models/{model_id}/step").json() == {"step": i + 1, "version": i + 3}
            assert fetch_parameters(a, model_id)[0].keys() == fetch_parameters(b, model_id)[0].keys()
            assert_parameters_match(a, model_id, replayed(SMALL_MODEL, x, y, 10))
            assert_parameters_match(b, model_id, replayed(SMALL_MODEL, x, y, 10))

            # Both replicas at once: the per-process locks do not see each other, the compare-and-set does.
            responses = asyncio.run(parallel_steps([r.url for r in replicas], model_id, 40))
            assert [r.status_code for r in responses] == [200] * 40, [r.text for r in responses if r.status_code != 200]
            assert sorted(r.json()["step"] for r in responses) == list(range(11, 51))
            assert b.get(f"/v1/models/{model_id}").json()["step"] == 50
            assert_parameters_match(b, model_id, replayed(SMALL_MODEL, x, y, 50))

            stale = a.post(f"/v1/models/{model_id}/step", headers={"If-Match": '"3"'})
            assert stale.status_code == 412
            assert b.get("/v1/models").json()["total"] == 1
            a.close()
            b.close()
        finally:
            logs = [replica.stop() for replica in replicas]  # stop both before judging either
        for log in logs:
            assert_no_server_errors(log)
