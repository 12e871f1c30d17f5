"""The Python client (clients/python, ``gradserve_client``) against a real server, in every encoding.

Values are checked against analytic derivatives, and the client's answers
against the raw HTTP API's; the adapters' gradients against the server's own
``/grad``. The retry policy is checked against a real HTTP server on a socket
that answers 503 before it answers.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import subprocess
import sys
import threading

import numpy as np
import pytest
from gradserve_client import (
    AsyncClient,
    BadRequestError,
    Client,
    NotFoundError,
    PreconditionFailedError,
    ProblemError,
    UnavailableError,
    ValidationError,
)
from gradserve_client.wire import ENCODINGS

pytestmark = pytest.mark.integration

X = np.linspace(0.0, 2 * np.pi, 9, dtype=np.float32)
TINY_MODEL = {"layers": [{"type": "linear", "in_features": 3, "out_features": 2}, {"type": "relu"},
                         {"type": "linear", "in_features": 2, "out_features": 1}],
              "loss": {"type": "mse"}, "optimizer": {"type": "sgd", "lr": 0.05}, "seed": 0}


@pytest.fixture(params=ENCODINGS)
def client(server, request):
    with Client(server.url, encoding=request.param) as client:
        yield client


def close(actual, expected, rtol=1e-5, atol=1e-6):
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected, rtol=rtol, atol=atol)


def test_grad_of_the_tutorial_sin_example(client):
    result = client.grad(expr="(2 * sin(a) + 1).sum()", inputs={"a": X}, requires_grad=["a"])
    close(result.outputs[0], np.sum(2 * np.sin(X.astype(np.float64)) + 1), atol=1e-5)
    close(result.grads["a"], 2 * np.cos(X.astype(np.float64)))
    assert result.grads["a"].dtype == np.float32
    assert result.graph[0]["name"] == "SumBackward0"


def test_grad_outputs_and_inputs_that_need_no_grad(client):
    v = np.array([0.1, 1.0, 1e-4], dtype=np.float32)
    a = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    result = client.grad(expr="a * b", inputs={"a": a, "b": [4.0, 5.0, 6.0]}, requires_grad="a", grad_outputs=[v])
    close(result.grads["a"], v * np.array([4.0, 5.0, 6.0]))
    assert result.grads["b"] is None


def test_evaluate_keeps_non_finite_values(client):
    a = np.array([1.0, np.nan, np.inf, -np.inf], dtype=np.float32)
    (out,) = client.evaluate(expr="a * 2", inputs={"a": a}).outputs
    np.testing.assert_array_equal(out, a * 2)


def test_jacobian_and_hessian_nest_as_torch_does(client):
    a, b = np.array([1.0, 2.0], np.float32), np.array([3.0, -1.0], np.float32)
    jac = client.jacobian(expr="a * b", inputs={"a": a, "b": b}).jacobian
    assert isinstance(jac, tuple) and len(jac) == 2
    close(jac[0], np.diag(b))
    close(jac[1], np.diag(a))
    hessian = client.hessian(expr="(a ** 3).sum()", inputs={"a": a}).hessian
    close(hessian, np.diag(6 * a))


def test_vector_products(client):
    a = np.array([0.5, -1.0, 2.0], np.float32)
    v = np.array([1.0, 2.0, 3.0], np.float32)
    close(client.vjp(expr="sin(a)", inputs={"a": a}, v=v).vjp, v * np.cos(a))
    close(client.jvp(expr="sin(a)", inputs={"a": a}, v=v).jvp, v * np.cos(a))
    close(client.hvp(expr="(a ** 3).sum()", inputs={"a": a}, v=v).hvp, 6 * a * v)
    close(client.vhp(expr="(a ** 3).sum()", inputs={"a": a}, v=v).vhp, 6 * a * v)


def test_gradcheck_and_profile(client):
    assert client.gradcheck(expr="(a * a).sum()", inputs={"a": [0.5, 1.5]}).passed is True
    profile = client.profile(expr="(a * a).sum()", inputs={"a": X}, requires_grad=["a"], backward=True)
    assert "Self CPU" in profile.table and profile.rows


def test_answers_equal_the_raw_api(client, http):
    ours = client.jacobian(expr="a * a", inputs={"a": [1.0, 2.0]}).jacobian
    raw = http.post("/v1/jacobian", json={"expr": "a * a", "inputs": {"a": [1.0, 2.0]}}).json()["jacobian"]
    close(ours, np.asarray(raw["data"]).reshape(raw["shape"]))


def test_problems_are_exceptions_with_their_fields(client):
    with pytest.raises(BadRequestError) as raised:
        client.evaluate(expr="a +* 2", inputs={"a": [1.0]})
    assert raised.value.status == 400 and raised.value.line == 1 and raised.value.column >= 1
    with pytest.raises(ValidationError):
        client.grad(expr="a", inputs={"a": [1.0]}, chunk_size=-1)
    with pytest.raises(NotFoundError):
        client.model("0" * 32).forward(np.ones((1, 3), np.float32))
    with pytest.raises(TypeError):
        client.evaluate(expr="a", program="return a", inputs={"a": [1.0]})


def test_registered_functions(client, http):
    function = client.function(expr="(a * a * b).sum()")
    assert function.id and function.id == client.function(expr="(a * a * b).sum()").id
    a, b = np.array([1.0, 2.0], np.float32), np.array([3.0, 4.0], np.float32)
    result = function.grad(inputs={"a": a, "b": b}, requires_grad=["a", "b"])
    close(result.grads["a"], 2 * a * b)
    close(result.grads["b"], a * a)
    with pytest.raises(TypeError):
        function.grad(expr="a", inputs={"a": a})
    function.delete()
    with pytest.raises(NotFoundError):
        function.evaluate(inputs={"a": a, "b": b})


def test_a_model_trains_and_its_state_travels(client):
    model = client.create_model(TINY_MODEL)
    inputs = np.linspace(-1, 1, 24, dtype=np.float32).reshape(8, 3)
    targets = inputs.sum(axis=1, keepdims=True)
    first = model.forward(inputs, targets).loss
    assert model.backward(inputs, targets) == pytest.approx(first)
    assert set(model.parameters().grads) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert model.step() == 1
    model.zero_grad(set_to_none=True)
    assert all(g is None for g in model.parameters().grads.values())
    seen = []
    losses = model.train(inputs, targets, steps=5, on_progress=lambda step, loss: seen.append((step, loss)))
    assert len(losses) == 5 and [loss for _, loss in seen] == pytest.approx(losses)
    state = model.state()
    copy = client.create_model(TINY_MODEL)
    copy.load_state(state)
    for name, value in model.parameters().parameters.items():
        np.testing.assert_array_equal(copy.parameters().parameters[name], value)
    model.delete()
    copy.delete()


def test_a_change_made_elsewhere_is_a_precondition_failure(client):
    model = client.create_model(TINY_MODEL)
    other = client.model(model.id)
    other.refresh()
    model.step()
    with pytest.raises(PreconditionFailedError):
        other.step()
    other.refresh()
    assert other.step() == 2
    model.delete()


def test_async_client(server):
    async def run():
        async with AsyncClient(server.url) as client:
            result = await client.grad(expr="(a * a).sum()", inputs={"a": X}, requires_grad=True)
            function = await client.function(expr="sin(a)")
            outputs = (await function.evaluate(inputs={"a": X})).outputs
            model = await client.create_model(TINY_MODEL)
            losses = await model.train(np.ones((4, 3), np.float32), np.zeros((4, 1), np.float32), steps=3,
                                       on_progress=lambda step, loss: None)
            await model.delete()
            return result, outputs, losses

    result, outputs, losses = asyncio.run(run())
    close(result.grads["a"], 2 * X)
    close(outputs[0], np.sin(X))
    assert len(losses) == 3


def test_as_torch_sits_inside_a_torch_graph(server, http):
    torch = pytest.importorskip("torch")
    with Client(server.url) as client:
        remote = client.function(expr="(a * sin(b)).sum()").as_torch("a", "b")
        a = torch.tensor([0.5, 1.0, 2.0], requires_grad=True)
        b = torch.tensor([0.1, -0.3, 0.7], requires_grad=True)
        out = remote(a * 2, b)  # a local op before the remote one: the chain rule crosses the wire
        out.backward()
    inputs = {"a": {"data": (a * 2).tolist(), "requires_grad": True},
              "b": {"data": b.tolist(), "requires_grad": True}}
    raw = http.post("/v1/grad", json={"expr": "(a * sin(b)).sum()", "inputs": inputs}).json()
    close(a.grad.numpy(), 2 * np.asarray(raw["grads"]["a"]["data"]))
    close(b.grad.numpy(), raw["grads"]["b"]["data"])
    assert type(out.grad_fn).__name__ == "RemoteFunctionBackward"


def test_as_engine_sits_inside_an_engine_graph(server):
    import engine

    with Client(server.url) as client:
        remote = client.function(expr="a * a").as_engine("a")
        a = engine.tensor([1.0, -2.0, 3.0], requires_grad=True)
        remote(a).sum().backward()
    close(a.grad.numpy(), 2 * a.detach().numpy())


class _Flaky(http.server.BaseHTTPRequestHandler):
    """503 (with Retry-After: 0) for the first ``failures`` requests, then a real evaluate answer."""

    failures = 0
    seen = 0

    def do_POST(self):
        type(self).seen += 1
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if type(self).seen <= type(self).failures:
            body, status = json.dumps({"status": 503, "title": "busy"}).encode(), 503
        else:
            body, status = json.dumps({"outputs": [{"shape": [], "dtype": "float32", "data": [1.0]}]}).encode(), 200
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Retry-After", "0")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def flaky():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Flaky.seen = 0
    yield server
    server.shutdown()


def test_idempotent_calls_are_retried_on_503(flaky):
    _Flaky.failures = 2
    with Client(f"http://127.0.0.1:{flaky.server_port}", encoding="json", retries=3) as client:
        assert client.evaluate(expr="a", inputs={"a": [1.0]}).outputs[0] == 1.0
    assert _Flaky.seen == 3


def test_retries_give_up_and_non_idempotent_calls_are_sent_once(flaky):
    _Flaky.failures = 10
    with Client(f"http://127.0.0.1:{flaky.server_port}", encoding="json", retries=2) as client:
        with pytest.raises(UnavailableError):
            client.evaluate(expr="a", inputs={"a": [1.0]})
        assert _Flaky.seen == 3
        _Flaky.seen = 0
        with pytest.raises(ProblemError):
            client.model("m").step()
    assert _Flaky.seen == 1


def test_the_client_imports_neither_the_service_nor_the_engine():
    code = ("import sys, gradserve_client; "
            "bad = {'fastapi', 'engine', 'service', 'torch'} & set(sys.modules); assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
