"""What transforms cost: result sizes from shapes alone, the elements one row of a batched pass
allocates, and chunk sizes that keep a pass within a bound; the profiler's ``max_events``.

Result sizes are checked against the transforms' actual results and PyTorch's (when
installed); memory against tracemalloc's count of numpy's allocations (so those tests stay
on the host). Nothing is timed.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import engine
from engine.autograd import functional as F
from engine.profiler import ProfileLimitError, profile

CASES = {
    "one input, one output": (lambda x: x.sin() * 2, [(5,)]),
    "matrix output": (lambda x: engine.outer(x, x), [(4,)]),
    "scalar output": (lambda x: (x * x).sum(), [(3, 2)]),
    "two inputs, two outputs": (lambda x, y: (x * y.sum(), (x.sum() * y).exp()), [(3,), (2, 2)]),
    "three inputs": (lambda x, y, z: (x.sum() + y.sum() * z.sum()), [(2,), (3,), (1, 4)]),
}


def _blocks(result):
    """The tensors of a (nested) transform result."""
    if isinstance(result, engine.Tensor):
        return [result]
    return [t for part in result for t in _blocks(part)]


def _arguments(shapes, dtype=engine.float64):
    tensors = [engine.randn(*shape, dtype=dtype) for shape in shapes]
    return tensors[0] if len(tensors) == 1 else tuple(tensors)


@pytest.mark.parametrize("name", list(CASES))
def test_jacobian_elements_is_the_size_of_the_result(name):
    fn, shapes = CASES[name]
    inputs = _arguments(shapes)
    outputs = fn(*inputs) if isinstance(inputs, tuple) else fn(inputs)
    output_shapes = [tuple(o.shape) for o in (outputs if isinstance(outputs, tuple) else (outputs,))]
    actual = sum(t.numel() for t in _blocks(F.jacobian(fn, inputs)))
    assert F.jacobian_elements(output_shapes, shapes) == actual


@pytest.mark.parametrize("name", ["scalar output", "three inputs"])
def test_hessian_elements_is_the_size_of_the_result(name):
    fn, shapes = CASES[name]
    inputs = _arguments(shapes)
    assert F.hessian_elements(shapes) == sum(t.numel() for t in _blocks(F.hessian(fn, inputs)))


@pytest.mark.parametrize("name", list(CASES))
def test_the_sizes_agree_with_pytorch(name):
    torch = pytest.importorskip("torch")
    fn, shapes = CASES[name]

    def torch_fn(*xs):  # the same function on torch tensors
        return fn(*xs) if name not in ("matrix output",) else torch.outer(*xs, *xs)

    inputs = tuple(torch.randn(*shape, dtype=torch.float64) for shape in shapes)
    outputs = torch_fn(*inputs)
    output_shapes = [tuple(o.shape) for o in (outputs if isinstance(outputs, tuple) else (outputs,))]
    result = torch.autograd.functional.jacobian(torch_fn, inputs if len(inputs) > 1 else inputs[0])
    flat = [result] if isinstance(result, torch.Tensor) else [
        t for part in result for t in ([part] if isinstance(part, torch.Tensor) else part)]
    assert F.jacobian_elements(output_shapes, shapes) == sum(t.numel() for t in flat)


# ---- batched passes within a bound ---------------------------------------------------------

BIG = engine.ones(4000, dtype=engine.float64)


def wide(x):  # 40 inputs, 40 outputs, intermediates of 40 x 4000
    return (engine.outer(x, BIG).sin() * 2).sum(1)


def wide_scalar(x):
    return (engine.outer(x, BIG).sin() * x.sum()).sum()


def recorded(fn, x):
    with engine.enable_grad():
        out = fn(x.detach().requires_grad_())
    return out if isinstance(out, tuple) else (out,)


TRANSFORMS = {  # name -> (the transform with a chunk_size, the elements one of its rows allocates)
    "jacobian, reverse mode": (lambda x, k: F.jacobian(wide, x, strategy="reverse-mode", chunk_size=k),
                               lambda x: F.pass_elements(recorded(wide, x))),
    "jacobian, forward mode": (lambda x, k: F.jacobian(wide, x, strategy="forward-mode", chunk_size=k),
                               lambda x: F.pass_elements(recorded(wide, x))),
    "hessian": (lambda x, k: F.hessian(wide_scalar, x, chunk_size=k),
                lambda x: F.hessian_pass_elements(recorded(wide_scalar, x))),
    "hessian, reverse mode": (lambda x, k: F.hessian(wide_scalar, x, outer_jacobian_strategy="reverse-mode",
                                                     chunk_size=k),
                              lambda x: F.hessian_pass_elements(recorded(wide_scalar, x))),
}


def _peak_bytes(work):
    tracemalloc.start()
    try:
        result = work()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.host_only
@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_a_chunk_size_that_fits_keeps_each_pass_within_the_bound(name):
    transform, row_elements = TRANSFORMS[name]
    x = engine.linspace(-1.0, 1.0, 40, dtype=engine.float64)
    expected, unbounded_peak = _peak_bytes(lambda: transform(x, None))
    bound = 2_000_000  # elements: a pass of all 40 rows holds several times that
    chunk = F.fitting_chunk_size(bound, row_elements(x))
    assert 1 <= chunk < 40
    result, bounded_peak = _peak_bytes(lambda: transform(x, chunk))
    np.testing.assert_allclose(result.numpy(), expected.numpy(), rtol=1e-12, atol=1e-12)
    assert bounded_peak < unbounded_peak / 2
    assert bounded_peak < 2 * bound * 8  # float64: the passes, plus the forward graph they run through


@pytest.mark.host_only
def test_pass_elements_bounds_what_one_row_of_a_pass_allocates():
    x = engine.linspace(-1.0, 1.0, 40, dtype=engine.float64).requires_grad_()
    outputs = (wide(x),)
    seed = engine.zeros(1, 40, dtype=engine.float64)
    seed[0, 0] = 1
    _, peak = _peak_bytes(lambda: engine.autograd.grad(outputs[0], x, seed, retain_graph=True,
                                                       is_grads_batched=True))
    assert peak / 8 <= F.pass_elements(outputs)


def test_fitting_chunk_size():
    assert F.fitting_chunk_size(1000, 30) == 33  # 33 rows of 30 fit in 1000
    assert F.fitting_chunk_size(1000, 30, chunk_size=5) == 5  # a smaller chunk_size stands
    assert F.fitting_chunk_size(1000, 30, chunk_size=500) == 33  # a larger one is lowered
    assert F.fitting_chunk_size(10, 30) == 1  # one row at a time, at least
    assert F.fitting_chunk_size(10, 0) == 10


# ---- the profiler ----------------------------------------------------------------------------


def test_the_profiler_refuses_events_past_max_events():
    x = engine.ones(3, requires_grad=True)
    with pytest.raises(ProfileLimitError) as raised, profile(max_events=50):
        for _ in range(100):
            x = x * 1.0
    assert raised.value.limit == 50 and isinstance(raised.value, RuntimeError)
    with profile(max_events=50) as prof:  # backward nodes count too
        (engine.ones(3, requires_grad=True) * 2).sum().backward()
    assert len(prof.events()) <= 50
    with pytest.raises(ProfileLimitError), profile(max_events=3):
        (engine.ones(3, requires_grad=True) * 2).sin().sum().backward()
