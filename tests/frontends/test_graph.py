"""JSON graphs: results and gradients equal to calling the engine, and validation naming the node."""

from __future__ import annotations

import numpy as np
import pytest

import engine
from frontends.budget import Budget, BudgetExceeded
from frontends.graph import GraphError, GraphRuntimeError, available_ops, compile_graph, validate
from tests import finite_differences

A = [[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]]


def node(op, inputs, output, **attrs):
    entry = {"op": op, "inputs": inputs, "output": output}
    if attrs:
        entry["attrs"] = attrs
    return entry


def graph(*nodes, outputs):
    return {"nodes": list(nodes), "outputs": outputs}


SIN_EXAMPLE = graph(
    node("sin", ["a"], "b"),
    node("mul", [2.0, "b"], "c"),
    node("add", ["c", {"const": 1}], "d"),
    node("sum", ["d"], "out"),
    outputs=["out"],
)


def test_tutorial_sin_example_value_and_gradient():
    a = engine.linspace(0.0, 2.0 * np.pi, 25, dtype="float64", requires_grad=True)
    out = compile_graph(SIN_EXAMPLE, ["a"])(a)
    assert out.item() == pytest.approx(25.0, abs=1e-9)
    assert out.grad_fn.name() == "SumBackward0"
    out.backward()
    np.testing.assert_allclose(a.grad.numpy(), 2 * np.cos(a.detach().numpy()), atol=1e-12)


CASES = [
    (
        [node("matmul", ["a", "bt"], "m"), node("softmax", ["m"], "s", dim=-1)],
        lambda a, b: engine.matmul(a, b.T).softmax(dim=-1),
    ),
    ([node("cat", ["a", "b"], "c", dim=0), node("mean", ["c"], "m", dim=0)], lambda a, b: engine.cat([a, b]).mean(0)),
    ([node("stack", ["a", "b", "a"], "s", dim=1)], lambda a, b: engine.stack([a, b, a], dim=1)),
    ([node("getitem", ["a"], "g", index=[0, {"slice": [1, None]}])], lambda a, b: a[0, 1:]),
    ([node("getitem", ["a"], "g", index=["...", None, {"slice": [None, None, 2]}])], lambda a, b: a[..., None, ::2]),
    ([node("getitem", ["a"], "g", index=[[1, 0, 1]])], lambda a, b: a[[1, 0, 1]]),
    ([node("getitem", ["a"], "g", index=[[True, False]])], lambda a, b: a[engine.tensor([True, False])]),
    ([node("getitem", ["a"], "g", index=1)], lambda a, b: a[1]),
    ([node("index_put", ["a", 7.0], "g", index=[{"slice": [None]}, 1])], lambda a, b: _put(a, 7.0)),
    ([node("gelu", ["a"], "g", approximate="tanh")], lambda a, b: engine.gelu(a, approximate="tanh")),
    ([node("norm", ["a"], "n", p="inf", dim=1)], lambda a, b: a.abs().amax(1)),
    ([node("clamp", ["a"], "c", min=0.0)], lambda a, b: a.clamp(min=0.0)),
    ([node("pow_scalar", ["a"], "p", exponent=3)], lambda a, b: a**3),
    ([node("where", ["mask", "a", 0.0], "w")], lambda a, b: engine.where(a > 0, a, 0.0)),
    ([node("linear", ["a", "b", None], "l")], lambda a, b: a @ b.T),
    ([node("expand", ["row"], "e", shape=[4, 3])], lambda a, b: a[:1].expand(4, 3)),
    (
        [node("reshape", ["a"], "r", shape=[3, -1]), node("transpose", ["r"], "t", dim0=0, dim1=1)],
        lambda a, b: a.reshape(3, 2).T,
    ),
    ([node("to_dtype", ["a"], "d", dtype="float64")], lambda a, b: a.double()),
    (
        [node("constant", [], "k", value=[[1, 2, 3]], dtype="float32"), node("add", ["a", "k"], "s")],
        lambda a, b: a + engine.tensor([[1.0, 2.0, 3.0]]),
    ),
]


def _put(a, value):
    out = a.clone()
    out[:, 1] = value
    return out


@pytest.mark.parametrize(("nodes", "direct"), CASES, ids=[c[0][-1]["op"] + str(i) for i, c in enumerate(CASES)])
def test_graph_matches_engine(nodes, direct):
    a = engine.tensor(A)
    b = engine.tensor([[1.0, 2.0, -1.0], [0.5, -0.5, 3.0]])
    inputs = {"a": a, "b": b, "bt": b.T, "mask": a > 0, "row": a[:1]}
    fn = compile_graph(graph(*nodes, outputs=[nodes[-1]["output"]]), list(inputs))
    got = fn(*inputs.values())
    want = direct(a, b)
    assert got.dtype == want.dtype and tuple(got.shape) == tuple(want.shape)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)


def test_several_outputs_and_extra_results():
    spec = graph(
        node("max_dim", ["a"], ["values", "indices"], dim=1),
        node("exp", ["a"], "e"),
        outputs=["values", "indices", "e"],
    )
    values, indices, e = compile_graph(spec, ["a"])(engine.tensor(A))
    np.testing.assert_array_equal(values.numpy(), np.max(A, axis=1).astype(np.float32))
    np.testing.assert_array_equal(indices.numpy(), np.argmax(A, axis=1))
    np.testing.assert_allclose(e.numpy(), np.exp(A), rtol=1e-6)


def test_graph_gradient_matches_finite_differences():
    spec = graph(
        node("mul", ["x", "w"], "xw"),
        node("tanh", ["xw"], "t"),
        node("matmul", ["t", "x"], "dot"),
        node("pow_scalar", ["dot"], "sq", exponent=2),
        outputs=["sq"],
    )
    fn = compile_graph(spec, ["x", "w"])
    x = engine.tensor([0.3, -0.8, 1.2], dtype="float64", requires_grad=True)
    w = engine.tensor([1.5, 0.5, -0.25], dtype="float64", requires_grad=True)
    fn(x, w).backward()
    inputs = [x.detach().numpy(), w.detach().numpy()]
    gx, gw = finite_differences.jacobian(finite_differences.on_tensors(fn), inputs)[0]  # the one output
    np.testing.assert_allclose(x.grad.numpy(), gx, rtol=1e-6)
    np.testing.assert_allclose(w.grad.numpy(), gw, rtol=1e-6)


# ---- validation, naming the node -------------------------------------------------------

INVALID = [
    (graph(node("sinn", ["a"], "b"), outputs=["b"]), 0, "unknown op 'sinn'"),
    (graph(node("to_device", ["a"], "b", device="cpu"), outputs=["b"]), 0, "unknown op"),
    (graph(node("sin", ["a"], "b"), node("cos", ["q"], "c"), outputs=["c"]), 1, "input 'q' is not defined"),
    (graph(node("sin", ["c"], "b"), node("cos", ["b"], "c"), outputs=["c"]), 0, "topological order"),
    (graph(node("sin", ["a"], "a"), outputs=["a"]), 0, "already defined by an input"),
    (graph(node("sin", ["a"], "b"), node("cos", ["a"], "b"), outputs=["b"]), 1, "already defined by node 0"),
    (graph(node("add", ["a"], "b"), outputs=["b"]), 0, "takes 2 input(s)"),
    (graph(node("add", [1.0, 2.0], "b"), outputs=["b"]), 0, "at least one tensor"),
    (graph(node("cat", ["a", 1.0], "b"), outputs=["b"]), 0, "tensor names to join"),
    (graph(node("sum", ["a"], "b", dimm=1), outputs=["b"]), 0, "unknown attribute(s) ['dimm']"),
    (graph(node("sum", ["a"], "b", keepdim=1), outputs=["b"]), 0, "must be true or false"),
    (graph(node("reshape", ["a"], "b"), outputs=["b"]), 0, "missing required attribute(s) ['shape']"),
    (graph(node("reshape", ["a"], "b", shape=[2, "x"]), outputs=["b"]), 0, "list of integers"),
    (graph(node("gelu", ["a"], "b", approximate="fast"), outputs=["b"]), 0, "must be one of"),
    (graph(node("to_dtype", ["a"], "b", dtype="complex7"), outputs=["b"]), 0, "unknown dtype"),
    (graph(node("getitem", ["a"], "b", index=[{"slice": [0, 1, 0]}]), outputs=["b"]), 0, "step cannot be zero"),
    (graph(node("getitem", ["a"], "b", index=[{"range": 1}]), outputs=["b"]), 0, "a slice is"),
    (graph(node("getitem", ["a"], "b", index=[[1, 0.5]]), outputs=["b"]), 0, "integers or booleans"),
    (graph(node("constant", ["a"], "k", value=1), outputs=["k"]), 0, "takes no inputs"),
    (graph(node("constant", [], "k"), outputs=["k"]), 0, "needs attrs.value"),
    (graph(node("constant", [], "k", value=[1, "two"]), outputs=["k"]), 0, "numbers only"),
    (graph(node("max_dim", ["a"], ["v", "i", "j"], dim=0), outputs=["v"]), 0, "3 output names"),
    (graph({"op": "sin", "inputs": ["a"], "output": "b", "name": "x"}, outputs=["b"]), 0, "unknown key(s) ['name']"),
    (graph("sin", outputs=["b"]), 0, "a node is an object"),
    (graph(node("sin", "a", "b"), outputs=["b"]), 0, "'inputs' must be a list"),
    (graph(node("sin", [["a"]], "b"), outputs=["b"]), 0, "an input must be"),
    (graph(node("sin", ["a"], 3), outputs=["b"]), 0, "output must be a name"),
    (graph(node("sin", ["a"], "b"), outputs=["c"]), None, "output 'c' is not defined"),
    (graph(node("sin", ["a"], "b"), outputs=[]), None, "non-empty list"),
    ({"nodes": [], "outputs": ["a"], "extra": 1}, None, "unknown key(s) ['extra']"),
    ({"nodes": {}, "outputs": ["a"]}, None, "'nodes' must be a list"),
    ([], None, "a graph is an object"),
]


@pytest.mark.parametrize(("spec", "index", "words"), INVALID, ids=[w for _, _, w in INVALID])
def test_invalid_graphs_are_refused_before_running(spec, index, words):
    with pytest.raises(GraphError) as caught:
        compile_graph(spec, ["a"])
    assert caught.value.node == index
    assert words in caught.value.message
    if index is not None:
        assert str(caught.value).startswith(f"node {index} (")


def test_error_names_the_op_and_output():
    with pytest.raises(GraphError) as caught:
        compile_graph(graph(node("sin", ["a"], "b"), node("sum", ["b"], "total", dimm=0), outputs=["total"]), ["a"])
    error = caught.value
    assert (error.node, error.op, error.output) == (1, "sum", "total")
    assert str(error).startswith("node 1 (sum -> total): unknown attribute")


def test_an_unknown_op_suggests_close_names_or_points_to_available_ops():
    with pytest.raises(GraphError) as caught:
        validate(graph(node("sinn", ["a"], "b"), outputs=["b"]), ["a"])
    assert caught.value.hint is None and "did you mean sin" in caught.value.message
    with pytest.raises(GraphError) as caught:
        validate(graph(node("frobnicate", ["a"], "b"), outputs=["b"]), ["a"])
    error = caught.value
    assert error.message == "unknown op 'frobnicate'" and error.where == "node 0 (frobnicate -> b)"
    assert str(error) == f"node 0 (frobnicate -> b): unknown op 'frobnicate'; {error.hint}"
    assert error.hint.startswith("frontends.graph.available_ops()") and "/v1/" not in str(error)
    assert "sin" in available_ops() and "frobnicate" not in available_ops()


def test_runtime_errors_name_the_node():
    spec = graph(node("sin", ["a"], "b"), node("reshape", ["b"], "c", shape=[4, 4]), outputs=["c"])
    fn = compile_graph(spec, ["a"])
    with pytest.raises(GraphRuntimeError) as caught:
        fn(engine.tensor(A))
    assert (caught.value.node, caught.value.op, caught.value.output) == (1, "reshape", "c")
    assert isinstance(caught.value.error, RuntimeError) and "is invalid for input of size 6" in caught.value.message


def test_an_engine_bug_is_not_reported_as_the_graphs_error(engine_bug):
    with pytest.raises(engine_bug):
        compile_graph(SIN_EXAMPLE, ["a"])(engine.tensor(A))


def test_numbers_where_an_op_needs_tensors_are_runtime_errors():
    for op_name, inputs in [("dot", ["a", 2.0]), ("matmul", [2.0, "a"]), ("linear", ["a", 2.0, None])]:
        with pytest.raises(GraphRuntimeError) as caught:
            compile_graph(graph(node(op_name, inputs, "b"), outputs=["b"]), ["a"])(engine.tensor([1.0, 2.0]))
        assert isinstance(caught.value.error, RuntimeError) and "1D" in caught.value.message


def test_node_budget():
    spec = graph(*[node("neg", ["a" if i == 0 else f"n{i - 1}"], f"n{i}") for i in range(11)], outputs=["n10"])
    with pytest.raises(BudgetExceeded) as caught:
        compile_graph(spec, ["a"], Budget(max_nodes=10))
    assert caught.value.kind == "nodes"
    assert compile_graph(spec, ["a"], Budget(max_nodes=11))(engine.tensor(1.0)).item() == -1.0


def test_huge_results_are_refused_naming_the_node():
    spec = graph(node("sin", ["a"], "b"), node("expand", ["b"], "c", shape=[10**6, 10**6]), outputs=["c"])
    with pytest.raises(BudgetExceeded) as caught:
        compile_graph(spec, ["a"])(engine.tensor([1.0]))
    assert caught.value.kind == "elements"
    assert caught.value.message.startswith("node 1 (expand -> c)")


def test_huge_constants_are_refused_before_running():
    spec = graph(node("constant", [], "k", value=[0.0] * 101), outputs=["k"])
    with pytest.raises(BudgetExceeded) as caught:
        compile_graph(spec, [], Budget(max_elements=100))
    assert caught.value.kind == "elements"


def test_deadline_applies_while_the_graph_runs():
    spec = graph(*[node("neg", ["a" if i == 0 else f"n{i - 1}"], f"n{i}") for i in range(50)], outputs=["n49"])
    with pytest.raises(BudgetExceeded) as caught:
        compile_graph(spec, ["a"], Budget(deadline_s=0.0))(engine.tensor(1.0))
    assert caught.value.kind == "deadline"


def test_wrong_number_of_inputs():
    with pytest.raises(TypeError, match="expected 1 inputs"):
        compile_graph(SIN_EXAMPLE, ["a"])()


def test_available_ops_cover_the_table_but_internal_ops():
    names = available_ops()
    assert {"sin", "matmul", "getitem", "cat", "constant"} <= set(names)
    for internal in ("to_device", "getitem_adjoint", "sum_to_size", "copy_from", "first_extreme_mask"):
        assert internal not in names
    assert all(isinstance(doc, str) and doc for doc in names.values())
