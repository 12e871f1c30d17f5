"""The tutorial replayed over HTTP, one test per cell, against the engine run in-process.

Each test runs the cell with ``import engine as torch`` here, sends the same
computation (same input values, as raw float32 bytes) to the live server, and
compares. Where the server runs the same elementwise ops in the same order the
numbers are identical: numpy's elementwise loops on one machine, with no BLAS
kernel or thread count in between. The TinyModel cells spell the model as a
program (the model resources are another endpoint family) and multiply
matrices, so they compare to float32 rounding.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import engine as torch
from service import codec

pytestmark = pytest.mark.integration

SIN_PROGRAM = "b = sin(a)\nc = 2 * b\nd = c + 1\nout = d.sum()\nreturn {}"


def wire(tensor, requires_grad=False):
    """An in-process tensor as exact float32 bytes on the wire."""
    encoded = codec.encode_tensor(tensor.detach(), "base64")
    return {**encoded, "requires_grad": requires_grad}


def array(wire_tensor):
    return codec.decode_to_array(wire_tensor)


def post(http, path, body):
    response = http.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def tutorial_a():
    return torch.linspace(0.0, 2.0 * math.pi, steps=25, requires_grad=True)


def test_cell_linspace(http):
    a = tutorial_a()
    body = post(http, "/v1/evaluate", {"inputs": {}, "program": "return linspace(0., 2. * pi, 25)"})
    np.testing.assert_array_equal(array(body["outputs"][0]), a.detach().numpy())


def test_cell_sin(http):
    a = tutorial_a()
    b = torch.sin(a)
    body = post(http, "/v1/grad", {"inputs": {"a": wire(a, True)}, "expr": "sin(a)",
                                   "grad_outputs": [[1.0] * 25]})
    np.testing.assert_array_equal(array(body["outputs"][0]), b.detach().numpy())
    assert body["graph"][0]["name"] == b.grad_fn.name() == "SinBackward0"


def test_cell_c_and_d(http):
    a = tutorial_a()
    c = 2 * torch.sin(a)
    d = c + 1
    ones = [1.0] * 25
    body = post(http, "/v1/grad", {"inputs": {"a": wire(a, True)}, "program": SIN_PROGRAM.format("c, d"),
                                   "grad_outputs": [ones, ones]})
    np.testing.assert_array_equal(array(body["outputs"][0]), c.detach().numpy())
    np.testing.assert_array_equal(array(body["outputs"][1]), d.detach().numpy())
    assert [node["name"] for node in body["graph"]] == [c.grad_fn.name(), d.grad_fn.name()]


def test_cell_out_sum(http):
    a = tutorial_a()
    out = (2 * torch.sin(a) + 1).sum()
    body = post(http, "/v1/evaluate", {"inputs": {"a": wire(a, True)}, "program": SIN_PROGRAM.format("out")})
    assert array(body["outputs"][0]) == out.item() == pytest.approx(25.0, abs=1e-4)


def structure(node):
    """An in-process grad_fn as (name, [children...]) — what the tutorial's prints walk."""
    if node is None:
        return None
    return node.name(), [(structure(child), index) for child, index in node.next_functions]


def wire_structure(node):
    if node is None:
        return None
    return node["name"], [(wire_structure(child), index) for child, index in node["next_functions"]]


def test_cell_next_functions(http):
    a = tutorial_a()
    d = 2 * torch.sin(a) + 1
    body = post(http, "/v1/grad", {"inputs": {"a": wire(a, True)}, "program": SIN_PROGRAM.format("d"),
                                   "grad_outputs": [[1.0] * 25]})
    graph = body["graph"][0]
    assert wire_structure(graph) == structure(d.grad_fn)
    assert wire_structure(graph) == (
        "AddBackward0", [(("MulBackward0", [(("SinBackward0", [(("AccumulateGrad", []), 0)]), 0), (None, 0)]), 0),
                         (None, 0)])
    leaf = graph["next_functions"][0][0]["next_functions"][0][0]["next_functions"][0][0]
    assert leaf["variable"] == "a"


def test_cell_backward(http):
    a = tutorial_a()
    out = (2 * torch.sin(a) + 1).sum()
    out.backward()
    body = post(http, "/v1/grad", {"inputs": {"a": wire(a, True)}, "program": SIN_PROGRAM.format("out")})
    np.testing.assert_array_equal(array(body["grads"]["a"]), a.grad.numpy())
    np.testing.assert_allclose(array(body["grads"]["a"]), 2 * np.cos(a.detach().numpy().astype(np.float64)),
                               atol=2e-6)


# ---- the training section: TinyModel spelled as a program -------------------------------

MODEL = "prediction = relu(x @ w1.t() + b1) @ w2.t() + b2\nreturn (ideal - prediction).pow(2).sum()"


class TinyModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layer1 = torch.nn.Linear(1000, 100)
        self.relu = torch.nn.ReLU()
        self.layer2 = torch.nn.Linear(100, 10)

    def forward(self, x):
        return self.layer2(self.relu(self.layer1(x)))


@pytest.fixture
def training():
    torch.manual_seed(0)
    some_input = torch.randn(16, 1000, requires_grad=False)
    ideal_output = torch.randn(16, 10, requires_grad=False)
    model = TinyModel()
    return model, some_input, ideal_output


def model_request(model, some_input, ideal_output, requires_grad=True):
    weights = {"w1": model.layer1.weight, "b1": model.layer1.bias, "w2": model.layer2.weight, "b2": model.layer2.bias}
    inputs = {"x": wire(some_input), "ideal": wire(ideal_output)}
    inputs.update({name: wire(p, requires_grad) for name, p in weights.items()})
    return {"inputs": inputs, "program": MODEL, "encoding": "base64"}


def test_cell_weights_before_backward(http, training):
    model, _, _ = training
    body = post(http, "/v1/grad", {"inputs": {"w2": wire(model.layer2.weight)}, "expr": "w2[0][0:10]",
                                   "grad_outputs": [[1.0] * 10]})
    np.testing.assert_array_equal(array(body["outputs"][0]), model.layer2.weight[0][0:10].detach().numpy())
    assert body["grads"]["w2"] is None and model.layer2.weight.grad is None


def test_cell_loss(http, training):
    model, some_input, ideal_output = training
    loss = (ideal_output - model(some_input)).pow(2).sum()
    body = post(http, "/v1/evaluate", model_request(model, some_input, ideal_output))
    assert array(body["outputs"][0]) == pytest.approx(loss.item(), rel=1e-5)


def test_cell_loss_backward(http, training):
    model, some_input, ideal_output = training
    (ideal_output - model(some_input)).pow(2).sum().backward()
    body = post(http, "/v1/grad", model_request(model, some_input, ideal_output))
    np.testing.assert_allclose(array(body["grads"]["w2"])[0][0:10], model.layer2.weight.grad[0][0:10].numpy(),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(array(body["grads"]["w1"]), model.layer1.weight.grad.numpy(), rtol=1e-4, atol=1e-5)


def sgd_step_over_http(http, weight, grad, lr=0.001):
    body = post(http, "/v1/evaluate", {"inputs": {"w": weight, "g": grad}, "expr": f"w - {lr} * g",
                                       "encoding": "base64"})
    return body["outputs"][0]


def test_cell_optimizer_step(http, training):
    model, some_input, ideal_output = training
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001)
    request = model_request(model, some_input, ideal_output)
    (ideal_output - model(some_input)).pow(2).sum().backward()
    optimizer.step()
    grads = post(http, "/v1/grad", request)["grads"]
    stepped = sgd_step_over_http(http, request["inputs"]["w2"], grads["w2"])
    np.testing.assert_allclose(array(stepped)[0][0:10], model.layer2.weight[0][0:10].detach().numpy(), atol=1e-6)


def test_cell_gradient_accumulation_and_zero_grad(http, training):
    model, some_input, ideal_output = training
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001)
    first = post(http, "/v1/grad", model_request(model, some_input, ideal_output))["grads"]
    (ideal_output - model(some_input)).pow(2).sum().backward()
    optimizer.step()
    for _ in range(5):
        (ideal_output - model(some_input)).pow(2).sum().backward()
    # Over HTTP: the step, then five gradients at the new weights, accumulated by the client.
    stepped = model_request(model, some_input, ideal_output)  # the in-process model already holds W'
    total = array(first["w2"]).astype(np.float64)
    for _ in range(5):
        total += array(post(http, "/v1/grad", stepped)["grads"]["w2"])
    np.testing.assert_allclose(total[0][0:10], model.layer2.weight.grad[0][0:10].numpy(), rtol=1e-3, atol=1e-3)
    optimizer.zero_grad(set_to_none=False)
    zeros = post(http, "/v1/evaluate", {"inputs": {"g": first["w2"]}, "expr": "zeros_like(g)"})["outputs"][0]
    np.testing.assert_array_equal(array(zeros)[0][0:10], model.layer2.weight.grad[0][0:10].numpy())


# ---- turning autograd off and on -----------------------------------------------------------


def test_cell_requires_grad_toggle(http):
    a = torch.ones(2, 3, requires_grad=True)
    b1 = 2 * a
    a.requires_grad = False
    b2 = 2 * a
    ones = [[1.0] * 3] * 2
    with_grad = post(http, "/v1/grad", {"inputs": {"a": {"data": ones, "requires_grad": True}}, "expr": "2 * a",
                                        "grad_outputs": [ones]})
    without = post(http, "/v1/grad", {"inputs": {"a": ones}, "expr": "2 * a", "grad_outputs": [ones]})
    assert with_grad["graph"][0]["name"] == b1.grad_fn.name() == "MulBackward0"
    assert without["graph"] == [None] and b2.grad_fn is None
    np.testing.assert_array_equal(array(without["outputs"][0]), b2.numpy())


NO_GRAD_PROGRAM = """a = x * 2
b = y * 3
c1 = a + b
with no_grad():
    c2 = a + b
c3 = a * b
return c1, c2, c3"""


def test_cell_no_grad(http):
    a = torch.ones(2, 3, requires_grad=True) * 2
    b = torch.ones(2, 3, requires_grad=True) * 3
    c1 = a + b
    with torch.no_grad():
        c2 = a + b
    c3 = a * b
    ones = [[1.0] * 3] * 2
    leaf = {"data": ones, "requires_grad": True}
    body = post(http, "/v1/grad", {"inputs": {"x": leaf, "y": leaf}, "program": NO_GRAD_PROGRAM,
                                   "grad_outputs": [ones, ones, ones]})
    names = [node["name"] if node else None for node in body["graph"]]
    assert names == [c1.grad_fn.name(), None, c3.grad_fn.name()] and c2.grad_fn is None
    for got, expected in zip(body["outputs"], (c1, c2, c3)):
        np.testing.assert_array_equal(array(got), expected.detach().numpy())


def test_cell_no_grad_as_decorator(http):
    @torch.no_grad()
    def add_tensors2(x, y):
        return x + y

    a = torch.ones(2, 3, requires_grad=True) * 2
    b = torch.ones(2, 3, requires_grad=True) * 3
    c2 = add_tensors2(a, b)
    leaf = {"data": [[1.0] * 3] * 2, "requires_grad": True}
    program = "a = x * 2\nb = y * 3\nwith no_grad():\n    return a + b"
    body = post(http, "/v1/evaluate", {"inputs": {"x": leaf, "y": leaf}, "program": program})
    np.testing.assert_array_equal(array(body["outputs"][0]), c2.numpy())
    # As in PyTorch, backward from a result made under no_grad is refused: it has no grad_fn.
    response = http.post("/v1/grad", json={"inputs": {"x": leaf, "y": leaf}, "program": program})
    assert response.status_code == 400 and "no output depends on an input" in response.json()["detail"]
    assert c2.grad_fn is None and not c2.requires_grad


def test_cell_detach(http):
    x = torch.rand(5, requires_grad=True)
    y = x.detach()
    body = post(http, "/v1/grad", {"inputs": {"x": wire(x, True)}, "program": "return x, x.detach()",
                                   "grad_outputs": [[1.0] * 5, [1.0] * 5]})
    np.testing.assert_array_equal(array(body["outputs"][1]), y.numpy())
    assert body["graph"] == [None, None] and y.grad_fn is None and not y.requires_grad
    np.testing.assert_array_equal(array(body["grads"]["x"]), np.ones(5, np.float32))


def test_cell_inplace_on_leaf_is_refused(http):
    a = tutorial_a()
    with pytest.raises(RuntimeError):
        torch.sin_(a) if hasattr(torch, "sin_") else a.mul_(2)
    for program in ("sin_(a)\nreturn a", "a.mul_(2)\nreturn a"):
        response = http.post("/v1/grad", json={"inputs": {"a": wire(a, True)}, "program": program})
        assert response.status_code == 400 and response.headers["content-type"] == "application/problem+json"


def test_cell_profiler(http):
    torch.manual_seed(0)
    x = torch.randn(2, 3, requires_grad=True)
    y = torch.rand(2, 3, requires_grad=True)
    z = torch.ones(2, 3, requires_grad=True)
    inputs = {"x": wire(x, True), "y": wire(y, True), "z0": wire(z, True)}
    with torch.autograd.profiler.profile(use_cuda=False) as prf, np.errstate(over="ignore", invalid="ignore"):
        for _ in range(1000):
            z = (z / x) * y  # overflows to inf/nan, as it does in the tutorial's float32
    expected = {row.key: row.count for row in prf.key_averages()}
    body = post(http, "/v1/profile", {"inputs": inputs,
                                      "program": "z = z0\nfor i in range(1000):\n    z = (z / x) * y\nreturn z"})
    counts = {row["name"]: row["count"] for row in body["rows"]}
    assert counts == expected == {"engine::div": 1000, "engine::mul": 1000}
    assert "engine::div" in body["table"] and "Self CPU" in body["table"]
    np.testing.assert_allclose(array(body["outputs"][0]), z.detach().numpy(), rtol=1e-5)


DOUBLING = "y = x * 2\nwhile y.data.norm() < 1000:\n    y = y * 2\nreturn y"


def do_some_doubling(x):
    y = x * 2
    while y.data.norm() < 1000:
        y = y * 2
    return y


def test_cell_backward_with_a_vector(http):
    torch.manual_seed(0)
    x = torch.randn(3, requires_grad=True)
    y = do_some_doubling(x)
    v = torch.tensor([0.1, 1.0, 0.0001], dtype=torch.float)
    y.backward(v)
    body = post(http, "/v1/grad", {"inputs": {"x": wire(x, True)}, "program": DOUBLING,
                                   "grad_outputs": [[0.1, 1.0, 0.0001]]})
    np.testing.assert_array_equal(array(body["outputs"][0]), y.detach().numpy())
    np.testing.assert_array_equal(array(body["grads"]["x"]), x.grad.numpy())
    response = http.post("/v1/grad", json={"inputs": {"x": wire(x, True)}, "program": DOUBLING})
    assert response.status_code == 400 and "implicitly created only for scalar outputs" in response.json()["detail"]


EXP_ADDER = "return 2 * x.exp() + 3 * y"


def exp_adder(x, y):
    return 2 * x.exp() + 3 * y


@pytest.mark.parametrize("size", [1, 3])
def test_cell_jacobian_of_exp_adder(http, size):
    torch.manual_seed(size)
    inputs = (torch.rand(size), torch.rand(size))
    expected = torch.autograd.functional.jacobian(exp_adder, inputs)
    body = post(http, "/v1/jacobian", {"inputs": {"x": wire(inputs[0]), "y": wire(inputs[1])}, "program": EXP_ADDER})
    assert len(body["jacobian"]) == 2
    for got, want in zip(body["jacobian"], expected):
        np.testing.assert_array_equal(array(got), want.numpy())
    np.testing.assert_allclose(array(body["jacobian"][0]), np.diag(2 * np.exp(inputs[0].numpy())), rtol=1e-6)
    np.testing.assert_array_equal(array(body["jacobian"][1]), 3 * np.eye(size))


def test_cell_vjp_of_do_some_doubling(http):
    torch.manual_seed(0)
    inputs = torch.randn(3)
    my_gradients = torch.tensor([0.1, 1.0, 0.0001])
    outputs, vjp = torch.autograd.functional.vjp(do_some_doubling, inputs, v=my_gradients)
    body = post(http, "/v1/vjp", {"inputs": {"x": wire(inputs)}, "program": DOUBLING, "v": wire(my_gradients)})
    np.testing.assert_array_equal(array(body["outputs"][0]), outputs.numpy())
    np.testing.assert_array_equal(array(body["vjp"]), vjp.numpy())


def test_cell_hessian_jvp_hvp_vhp(http):
    torch.manual_seed(0)
    x, y = torch.rand(3), torch.rand(3)
    v = (torch.ones(3), torch.zeros(3))
    functional = torch.autograd.functional

    def scalar(x, y):
        return exp_adder(x, y).sum()

    inputs = {"x": wire(x), "y": wire(y)}
    scalar_program = "return (2 * x.exp() + 3 * y).sum()"
    v_wire = [wire(t) for t in v]
    hessian = post(http, "/v1/hessian", {"inputs": inputs, "program": scalar_program})["hessian"]
    for got_row, want_row in zip(hessian, functional.hessian(scalar, (x, y))):
        for got, want in zip(got_row, want_row):
            np.testing.assert_allclose(array(got), want.numpy(), rtol=1e-6)
    jvp = post(http, "/v1/jvp", {"inputs": inputs, "program": EXP_ADDER, "v": v_wire})["jvp"]
    np.testing.assert_allclose(array(jvp), functional.jvp(exp_adder, (x, y), v)[1].numpy(), rtol=1e-6)
    for name in ("hvp", "vhp"):
        got = post(http, f"/v1/{name}", {"inputs": inputs, "program": scalar_program, "v": v_wire})[name]
        want = getattr(functional, name)(scalar, (x, y), v)[1]
        for g, w in zip(got, want):
            np.testing.assert_allclose(array(g), w.numpy(), rtol=1e-6)
