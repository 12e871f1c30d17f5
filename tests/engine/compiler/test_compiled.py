"""engine.compile as a user meets it: calls, variants, fallbacks, the backward node, explain().

Every compiled result is held to the eager call of the same function (the
reference), and gradients also to float64 central differences or their
closed form.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import engine
from engine.autograd import grad
from engine.compiler import CompiledFunction
from tests import finite_differences

RTOL, ATOL = 1e-5, 1e-6


def sin_example(a):
    return (2 * engine.sin(a) + 1).sum()


def _leaf(values, dtype=engine.float32):
    return engine.tensor(values, dtype=dtype, requires_grad=True)


# ---- the calling conventions ---------------------------------------------------------------------


def test_compile_as_call_decorator_and_decorator_factory():
    @engine.compile
    def plain(x):
        return x * 2

    @engine.compile()
    def called(x):
        return x * 3

    @engine.compile(max_variants=2)
    def bounded(x):
        return x * 4

    x = engine.tensor([1.0, 2.0])
    assert isinstance(plain, CompiledFunction) and plain.__name__ == "plain"
    assert plain(x).tolist() == [2.0, 4.0]
    assert called(x).tolist() == [3.0, 6.0]
    assert bounded.max_variants == 2 and bounded(x).tolist() == [4.0, 8.0]
    assert engine.compile(lambda t: t + 1)(x).tolist() == [2.0, 3.0]


def test_compile_refuses_what_it_cannot_call():
    with pytest.raises(TypeError, match=r"function or an nn\.Module"):
        engine.compile(3)
    with pytest.raises(ValueError, match="max_variants"):
        engine.compile(sin_example, max_variants=0)


# ---- the tutorial's sin example ----------------------------------------------------------------------


def test_sin_example_replays_with_eager_values_and_gradients():
    compiled = engine.compile(sin_example)
    for call, stop in enumerate((2.0 * math.pi, 3.0, 1.0, 5.5)):
        a = engine.linspace(0.0, stop, steps=25, requires_grad=True)
        reference = engine.linspace(0.0, stop, steps=25, requires_grad=True)
        out = compiled(a)
        expected = sin_example(reference)
        assert out.item() == expected.item()  # the same kernels on the same arrays: bit for bit
        out.backward()
        expected.backward()
        np.testing.assert_allclose(a.grad.numpy(), reference.grad.numpy(), rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(a.grad.numpy(), 2 * np.cos(a.detach().numpy().astype(np.float64)), rtol=1e-5,
                                   atol=1e-6)
        if call:
            assert type(out.grad_fn).__name__ == "CompiledFunctionBackward"
            assert out.grad_fn.next_functions == ((a._accumulator, 0),)
            assert type(a._accumulator).__name__ == "AccumulateGrad"
    assert [r.kind for r in compiled.history] == ["recompiled", "replayed", "replayed", "replayed"]
    assert "new signature (Tensor[25] float32, requires_grad)" in compiled.explain()


def test_gradients_accumulate_and_hooks_on_inputs_fire():
    compiled = engine.compile(sin_example)
    a = _leaf([0.1, 0.2, 0.3])
    compiled(a).backward()  # traces
    seen = []
    a.register_hook(lambda g: seen.append(g.numpy().copy()))
    compiled(a).backward()  # replays: 2 cos(a) added to what is there
    expected = 2 * np.cos(np.array([0.1, 0.2, 0.3]))
    np.testing.assert_allclose(a.grad.numpy(), 2 * expected, rtol=RTOL)
    np.testing.assert_allclose(seen[0], expected, rtol=RTOL)


def test_autograd_grad_and_backward_with_a_gradient_for_a_non_scalar_output():
    compiled = engine.compile(lambda x, y: x * y.exp())
    x_data, y_data, v = np.array([0.5, -1.0, 2.0]), np.array([0.1, 0.2, -0.3]), np.array([1.0, 0.5, -2.0])
    for _ in range(2):
        x, y = _leaf(x_data, engine.float64), _leaf(y_data, engine.float64)
        out = compiled(x, y)
        gx, gy = grad(out, (x, y), grad_outputs=engine.tensor(v, dtype=engine.float64))
        np.testing.assert_allclose(gx.numpy(), v * np.exp(y_data), rtol=1e-12)
        np.testing.assert_allclose(gy.numpy(), v * x_data * np.exp(y_data), rtol=1e-12)
        out2 = compiled(x, y)
        out2.backward(engine.tensor(v, dtype=engine.float64))
        np.testing.assert_allclose(x.grad.numpy(), v * np.exp(y_data), rtol=1e-12)
    assert compiled.last_call.kind == "replayed"


def test_second_backward_needs_retain_graph_as_in_eager():
    compiled = engine.compile(sin_example)
    a = _leaf([0.1, 0.2])
    compiled(a)
    out = compiled(a)
    out.backward(retain_graph=True)
    out.backward()
    np.testing.assert_allclose(a.grad.numpy(), 4 * np.cos([0.1, 0.2]), rtol=RTOL)
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        out.backward()


def test_an_input_modified_in_place_after_the_call_raises_at_backward_as_in_eager():
    compiled = engine.compile(lambda x, w: (x * w).sum())
    x = engine.tensor([1.0, 2.0])
    w = _leaf([3.0, 4.0])
    compiled(x, w)
    out = compiled(x, w)  # the gradient of w is x: saved
    x.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.backward()


def test_create_graph_through_a_compiled_call_gives_second_derivatives():
    def cube_sum(x):
        return (x * x * x).sum()

    compiled = engine.compile(cube_sum)
    data = np.array([0.5, -1.5, 2.0])
    for _ in range(3):
        x = _leaf(data, engine.float64)
        (g,) = grad(compiled(x), x, create_graph=True)
        np.testing.assert_allclose(g.detach().numpy(), 3 * data**2, rtol=1e-12)
        (h,) = grad(g.sum(), x)
        np.testing.assert_allclose(h.numpy(), 6 * data, rtol=1e-12)
    assert compiled.last_call.kind == "replayed"


def test_several_outputs_each_get_a_compiled_node():
    def both(x):
        return x.sin(), (x * x).sum()

    compiled = engine.compile(both)
    data = np.array([0.3, 0.7])
    for _ in range(2):
        x = _leaf(data, engine.float64)
        s, q = compiled(x)
        (s.sum() + q).backward()
        np.testing.assert_allclose(x.grad.numpy(), np.cos(data) + 2 * data, rtol=1e-12)
    assert isinstance(compiled(x), tuple)
    assert compiled.last_call.kind == "replayed"


def test_no_grad_calls_and_grad_calls_have_their_own_plans():
    compiled = engine.compile(sin_example)
    a = _leaf([0.5, 1.0])
    with engine.no_grad():
        out = compiled(a)
        assert not out.requires_grad and out.grad_fn is None
        compiled(a)
    out = compiled(a)
    assert out.requires_grad
    assert [r.kind for r in compiled.history] == ["recompiled", "replayed", "recompiled"]


def test_non_tensor_arguments_are_part_of_the_signature():
    compiled = engine.compile(lambda x, power, *, scale=1.0: (x**power) * scale)
    x = engine.tensor([2.0, 3.0])
    assert compiled(x, 2).tolist() == [4.0, 9.0]
    assert compiled(x, 3).tolist() == [8.0, 27.0]
    assert compiled(x, 2, scale=0.5).tolist() == [2.0, 4.5]
    assert compiled(x, 3).tolist() == [8.0, 27.0]
    assert [r.kind for r in compiled.history] == ["recompiled", "recompiled", "recompiled", "replayed"]


def test_many_inputs_per_signature_against_central_differences():
    def fn(x, y):
        return (engine.tanh(x @ y) * x.sum(dim=1, keepdim=True)).sum()

    compiled = engine.compile(fn)
    rng = np.random.default_rng(3)
    for _ in range(5):
        xs = [rng.standard_normal((2, 3)), rng.standard_normal((3, 4))]
        x, y = (_leaf(v, engine.float64) for v in xs)
        gx, gy = grad(compiled(x, y), (x, y))
        numeric = finite_differences.jacobian(finite_differences.on_tensors(fn), xs)[0]
        np.testing.assert_allclose(gx.numpy(), numeric[0], rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(gy.numpy(), numeric[1], rtol=1e-6, atol=1e-8)
    assert [r.kind for r in compiled.history][1:] == ["replayed"] * 4


# ---- guards: the tutorial's doubling loop ---------------------------------------------------------------


def doubling(x):
    y = x * 2
    while y.data.norm() < 1000:
        y = y * 2
    return y


def _iterations(values):
    norm = 2 * np.linalg.norm(values)
    count = 0
    while norm < 1000:
        norm *= 2
        count += 1
    return count


@pytest.mark.parametrize("order", ["small first", "large first"])
def test_doubling_loop_guards_pick_the_variant_with_the_right_number_of_iterations(order):
    compiled = engine.compile(doubling)
    inputs = [[0.3, -1.1, 2.0], [30.0, -11.0, 20.0], [0.31, -1.0, 2.1], [29.0, -12.0, 21.0], [0.001, 0.002, 0.0]]
    if order == "large first":
        inputs = inputs[::-1]
    v = np.array([0.1, 1.0, 0.0001])
    for values in inputs:
        x = _leaf(values)
        y = compiled(x)
        y.backward(engine.tensor(v, dtype=engine.float32))
        factor = 2.0 ** (1 + _iterations(np.array(values, dtype=np.float32)))
        np.testing.assert_allclose(y.detach().numpy(), factor * np.array(values, dtype=np.float32), rtol=1e-6)
        np.testing.assert_allclose(x.grad.numpy(), factor * v, rtol=1e-6)
    kinds = [r.kind for r in compiled.history]
    assert kinds.count("recompiled") == 3  # three different iteration counts
    assert kinds.count("replayed") == 2
    assert "guard failed at item()" in compiled.explain()


def test_past_max_variants_the_signature_stays_eager_and_says_why():
    compiled = engine.compile(doubling, max_variants=2)
    for values in ([0.3, -1.1, 2.0], [30.0, -11.0, 20.0], [0.001, 0.002, 0.0], [0.3, -1.0, 2.0]):
        x = _leaf(values)
        y = compiled(x)
        y.sum().backward()
        factor = 2.0 ** (1 + _iterations(np.array(values, dtype=np.float32)))
        np.testing.assert_allclose(x.grad.numpy(), [factor] * 3, rtol=1e-6)
    kinds = [r.kind for r in compiled.history]
    assert kinds == ["recompiled", "recompiled", "eager", "eager"]
    assert "max_variants=2" in compiled.history[2].reason


def test_item_and_tolist_are_guarded():
    def scaled(x, table):
        return x * table[int(x.sum().item()) % 3] + engine.tensor(x.tolist()).sum()

    compiled = engine.compile(scaled)
    table = (10.0, 20.0, 30.0)
    for values in ([1.0, 0.0], [1.0, 0.0], [1.0, 1.0], [2.0, 0.0], [1.0, 1.0]):
        x = engine.tensor(values)
        np.testing.assert_array_equal(compiled(x, table).numpy(), scaled(x, table).numpy())
    assert [r.kind for r in compiled.history] == ["recompiled", "replayed", "recompiled", "recompiled", "replayed"]


# ---- captured tensors: modules and closures --------------------------------------------------------------


def test_captured_tensors_are_read_at_every_call_and_get_gradients():
    w = _leaf([1.0, 2.0])
    compiled = engine.compile(lambda x: (x * w).sum())
    x = engine.tensor([3.0, 4.0])
    compiled(x).backward()
    with engine.no_grad():
        w.mul_(10.0)  # an optimizer's update: seen by the next replay
    out = compiled(x)
    assert out.item() == 110.0
    out.backward()
    np.testing.assert_allclose(w.grad.numpy(), [6.0, 8.0])
    assert compiled.last_call.kind == "replayed"


def test_a_captured_tensor_that_changes_shape_records_a_new_variant():
    holder = {"w": engine.tensor([1.0, 2.0])}
    compiled = engine.compile(lambda x: x * holder["w"].sum())
    x = engine.tensor([1.0])
    assert compiled(x).item() == 3.0
    holder["w"].data = engine.tensor([1.0, 2.0, 3.0])
    assert compiled(x).item() == 6.0
    assert compiled.last_call.kind == "recompiled" and "captured tensor" in compiled.last_call.reason


def test_compiled_module_trains_like_the_eager_module():
    def make():
        engine.manual_seed(7)
        return engine.nn.Sequential(engine.nn.Linear(5, 8), engine.nn.ReLU(), engine.nn.Linear(8, 2))

    eager_model, model = make(), make()
    compiled = engine.compile(model)
    assert compiled.parameters is not None and len(list(compiled.parameters())) == 4
    optimizers = [engine.optim.SGD(m.parameters(), lr=0.05) for m in (eager_model, model)]
    rng = np.random.default_rng(0)
    for _ in range(6):
        x = engine.tensor(rng.standard_normal((4, 5)), dtype=engine.float32)
        target = engine.tensor(rng.standard_normal((4, 2)), dtype=engine.float32)
        for m, opt in zip((eager_model, compiled), optimizers):
            opt.zero_grad()
            loss = ((m(x) - target) ** 2).sum()
            loss.backward()
            opt.step()
    for p, q in zip(eager_model.parameters(), model.parameters()):
        np.testing.assert_allclose(q.detach().numpy(), p.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert [r.kind for r in compiled.history] == ["recompiled"] + ["replayed"] * 5
    model.eval()  # module state is part of the signature
    compiled(x)
    assert compiled.last_call.kind == "recompiled"


# ---- random ops ------------------------------------------------------------------------------------------


def test_random_draws_are_fresh_at_every_replay_and_follow_the_seed():
    def noisy(x):
        return x + engine.rand(3)

    compiled = engine.compile(noisy)
    x = engine.zeros(3)
    engine.manual_seed(5)
    eager = [noisy(x).numpy() for _ in range(3)]
    engine.manual_seed(5)
    got = [compiled(x).numpy() for _ in range(3)]
    for e, g in zip(eager, got):
        np.testing.assert_array_equal(g, e)
    assert not np.array_equal(got[1], got[2])
    assert compiled.last_call.kind == "replayed"


def test_dropout_masks_are_fresh_and_gradients_follow_the_mask():
    model = engine.nn.Dropout(0.5)
    compiled = engine.compile(model)
    masks = []
    for _ in range(3):
        x = engine.ones(64, requires_grad=True)
        out = compiled(x)
        out.sum().backward()
        np.testing.assert_array_equal(x.grad.numpy(), out.detach().numpy())  # d out / d x is the scaled mask
        masks.append(out.detach().numpy())
    assert not np.array_equal(masks[1], masks[2])
    assert set(np.unique(masks[2])) <= {0.0, 2.0}
    assert compiled.last_call.kind == "replayed"


def test_create_graph_through_a_replay_with_random_ops_uses_that_calls_draws():
    compiled = engine.compile(lambda x: (x * x * engine.rand(4)).sum())
    data = np.array([0.5, 1.0, 1.5, 2.0])
    for _ in range(2):
        x = _leaf(data, engine.float64)
        out = compiled(x)
        (g,) = grad(out, x, create_graph=True)
        (h,) = grad(g.sum(), x)
        r = g.detach().numpy() / (2 * data)  # the draw of this call
        np.testing.assert_allclose(out.item(), (data * data * r).sum(), rtol=1e-6)
        np.testing.assert_allclose(h.numpy(), 2 * r, rtol=1e-6)


# ---- graph breaks: eager, never wrong --------------------------------------------------------------------


def _in_place_on_intermediate(x):
    y = x * 2
    y.add_(1.0)
    return y * 3


def _data_write(x):
    y = x * 2
    y.data = y.data * 10
    return y + 1


def _hook_inside(x):
    y = x * 2
    y.register_hook(lambda g: g * 100)
    return (y * 3).sum()


def _numpy_inside(x):
    values = x.detach().numpy()
    return x * float(values.max())


def _copied(x):
    return engine.tensor(x * 2) + x


def _tensor_index(x):
    return x[x.argmax()] * 2 + x[engine.tensor([0, 0])].sum()


@pytest.mark.parametrize(
    ("fn", "reason"),
    [
        (_in_place_on_intermediate, "in-place op"),
        (_data_write, ".data replaced"),
        (_hook_inside, "hook"),
        # host only: with --device fake-cuda, conftest replaces Tensor.numpy (and its hook) by a lambda
        pytest.param(_numpy_inside, "numpy()", marks=pytest.mark.host_only),
        (_tensor_index, "indexed by a tensor"),
        (_copied, "copied into a new tensor"),
    ],
    ids=["in-place", "data-write", "hook", "numpy", "tensor-index", "copy"],
)
def test_graph_breaks_run_eagerly_with_eager_results(fn, reason):
    compiled = engine.compile(fn)
    for values in ([0.5, -1.0, 2.0], [3.0, 1.0, -2.0]):
        x, reference = _leaf(values), _leaf(values)
        out, expected = compiled(x), fn(reference)
        np.testing.assert_array_equal(out.detach().numpy(), expected.detach().numpy())
        out.sum().backward()
        expected.sum().backward()
        np.testing.assert_array_equal(x.grad.numpy(), reference.grad.numpy())
    assert [r.kind for r in compiled.history] == ["eager", "eager"]
    assert reason in compiled.history[0].reason and "graph break" in compiled.history[0].reason


def test_fullgraph_raises_on_a_graph_break():
    with pytest.raises(RuntimeError, match=r"fullgraph=True.*in-place"):
        engine.compile(_in_place_on_intermediate, fullgraph=True)(_leaf([1.0]))


def test_returning_an_input_or_a_python_value_runs_eagerly():
    identity = engine.compile(lambda x: x)
    x = engine.tensor([1.0])
    assert identity(x) is x and identity(x) is x
    assert identity.last_call.kind == "eager"
    total = engine.compile(lambda x: x.sum().item())
    assert total(engine.tensor([1.0, 2.0])) == 3.0 and total(engine.tensor([2.0, 2.0])) == 4.0
    assert "returns float" in total.last_call.reason


def test_an_in_place_op_on_an_argument_runs_eagerly_and_keeps_its_effect():
    def bump(x):
        x.add_(1.0)
        return x * 2

    compiled = engine.compile(bump)
    x = engine.tensor([1.0, 2.0])
    assert compiled(x).tolist() == [4.0, 6.0]
    assert compiled(x).tolist() == [6.0, 8.0]
    assert x.tolist() == [3.0, 4.0]
    assert compiled.last_call.kind == "eager"


# ---- what must see every op -------------------------------------------------------------------------------


def test_under_the_profiler_calls_run_eagerly_so_every_op_is_seen():
    compiled = engine.compile(sin_example)
    a = _leaf([0.1, 0.2])
    compiled(a)
    with engine.profiler.profile() as prof:
        compiled(a)
    assert compiled.last_call.kind == "eager" and "observers" in compiled.last_call.reason
    assert any("sin" in row.key for row in prof.key_averages())


def test_cost_says_steps_and_buffer_sizes_before_a_replay():
    compiled = engine.compile(lambda x: (x.sin() * x).sum())
    x = engine.ones(1000, requires_grad=True)
    assert compiled.cost(x) is None
    compiled(x)
    cost = compiled.cost(x)
    assert cost["steps"] >= 3 + 3  # sin, mul, sum; and their backward
    assert cost["max_buffer_elements"] == 1000
    assert cost["peak_live_elements"] >= 3000 and cost["total_elements"] >= cost["peak_live_elements"]


def test_large_plans_drop_buffers_after_their_last_use():
    compiled = engine.compile(lambda x: ((x * 2).sin() * 3).cos().sum())
    x = engine.ones(1 << 17)
    compiled(x)
    (plan,) = compiled.plans(x)
    env = plan.replay([x._data])
    live = [value for value in env if value is not None and getattr(value, "size", 0) > 1]
    assert live == []  # every buffer (the argument's slot too) dropped after its last use
    assert env[plan.output_slots[0]] is not None  # the 0-d output stays
    assert plan.free


def test_no_grad_blocks_and_detach_inside_stop_gradients_as_in_eager():
    def partly_constant(x):
        with engine.no_grad():
            scale = x.sum() * 2
        return (x * scale + x.detach() ** 2).sum()

    compiled = engine.compile(partly_constant)
    for values in ([0.5, 1.0], [2.0, -1.0], [3.0, 0.25]):
        x = _leaf(values, engine.float64)
        compiled(x).backward()
        np.testing.assert_allclose(x.grad.numpy(), [2 * sum(values)] * 2, rtol=1e-12)
    assert compiled.last_call.kind == "replayed"


def test_nested_compiled_functions_record_into_the_outer_trace():
    inner = engine.compile(lambda x: x.sin() * 2)
    outer = engine.compile(lambda x: inner(x).sum() + 1)
    for values in ([0.1, 0.2], [0.3, 0.4]):
        x = _leaf(values, engine.float64)
        outer(x).backward()
        np.testing.assert_allclose(x.grad.numpy(), 2 * np.cos(values), rtol=1e-12)
    assert inner.history[0].kind == "eager" and "another traced function" in inner.history[0].reason
    assert outer.last_call.kind == "replayed"


def test_a_held_grad_survives_later_replays_of_a_large_plan():
    """The backward plan's buffers are reused by the next replay: a leaf's .grad must never be one."""
    f = engine.compile(lambda x: (x * engine.sin(x)).sum())
    held = []
    for scale in (1.0, 2.0, 3.0, 4.0):
        x = (engine.linspace(-3.0, 3.0, 100_000, dtype=engine.float64) * scale).requires_grad_()
        f(x).backward()
        held.append((x.grad, x.detach().numpy().copy()))
    for held_grad, values in held:
        np.testing.assert_allclose(held_grad.numpy(), np.sin(values) + values * np.cos(values), rtol=1e-12, atol=1e-12)
