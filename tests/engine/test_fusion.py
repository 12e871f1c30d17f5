"""Fused GPU kernels, and the fake cupy held to the real one.

Two things are checked here without a GPU:

- The elementwise chains the engine fuses (``engine.backend.fused``: the
  activations' backward ops and the optimizers' updates) run on the fake
  device as one kernel each, and give the CPU's numbers. The fake's
  ``cupy.fuse`` traces the function on proxies that allow only what cupy's
  tracer allows, so a kernel that passes here also traces in cupy.
- Where cupy is installed (``.ci/run`` installs it; it imports without a
  GPU), the fake offers nothing the real cupy lacks: its runtime classes,
  its fusion proxy and the functions it lets a kernel call all exist in
  cupy. The fake's module namespaces refuse names cupy lacks, so every
  fake-backed test checks the engine's calls as well.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import engine
from engine import backend
from engine.nn import functional as F
from tests import fake_cupy

# These tests place tensors themselves; --device leaves their default device alone.
pytestmark = pytest.mark.host_only

real_cupy = fake_cupy.real_cupy
requires_gpu = pytest.mark.skipif(not engine.cuda.is_available(),
                                  reason=f"needs a CUDA GPU: {engine.cuda.unavailable_reason()}")
requires_cupy = pytest.mark.skipif(real_cupy is None, reason="cupy is not installed (pip install 'gradserve[gpu]')")

ACTIVATIONS = {
    "tanh": engine.tanh,
    "sigmoid": engine.sigmoid,
    "relu": engine.relu,
    "gelu": F.gelu,
    "gelu-tanh": lambda x: F.gelu(x, approximate="tanh"),
    "softplus": F.softplus,
}


def _grads(f, values, device, create_graph=False):
    x = engine.tensor(values, dtype=engine.float64, device=device, requires_grad=True)
    (g,) = engine.autograd.grad(f(x).sum(), x, create_graph=create_graph)
    if create_graph:
        (gg,) = engine.autograd.grad(g.sum(), x)
        return g.detach().cpu().numpy(), gg.cpu().numpy()
    return g.cpu().numpy()


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_backward_is_one_kernel_with_the_cpu_values(fake_cuda, name):
    f = ACTIVATIONS[name]
    values = np.linspace(-2.5, 2.5, 12).reshape(3, 4) + 0.01  # no value on relu's kink
    fake_cupy.kernels["launched"] = 0
    on_device = _grads(f, values, "cuda")
    assert fake_cupy.kernels["launched"] == 1, "the backward op should be a single fused kernel"
    np.testing.assert_array_equal(on_device, _grads(f, values, "cpu"))


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_second_derivatives_through_fused_backward_ops(fake_cuda, name, torch):
    f = ACTIVATIONS[name]
    values = np.linspace(-2.5, 2.5, 7) + 0.01
    g, gg = _grads(f, values, "cuda", create_graph=True)
    torch_f = {"gelu": torch.nn.functional.gelu, "softplus": torch.nn.functional.softplus,
               "gelu-tanh": lambda x: torch.nn.functional.gelu(x, approximate="tanh")}.get(
        name, getattr(torch, name, None))
    x = torch.tensor(values, dtype=torch.float64, requires_grad=True)
    (tg,) = torch.autograd.grad(torch_f(x).sum(), x, create_graph=True)
    (tgg,) = torch.autograd.grad(tg.sum(), x)
    np.testing.assert_allclose(g, tg.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(gg, tgg.numpy(), rtol=1e-10, atol=1e-12)


OPTIMIZERS = pytest.mark.parametrize("name, kwargs", [
    ("Adam", {}), ("Adam", {"amsgrad": True}), ("AdamW", {"weight_decay": 0.1}),
    ("RMSprop", {}), ("RMSprop", {"centered": True, "momentum": 0.9}), ("Adagrad", {"lr_decay": 0.01}),
])
START = [np.random.default_rng(0).normal(size=(3, 4)), np.random.default_rng(1).normal(size=(4,))]
GRADS = [[np.random.default_rng(10 + i).normal(size=p.shape) for p in START] for i in range(3)]


def _train(name, kwargs, device):
    params = [engine.tensor(p, dtype=engine.float32, device=device, requires_grad=True) for p in START]
    optimizer = getattr(engine.optim, name)(params, lr=0.05, **kwargs)
    for step in GRADS:
        for p, g in zip(params, step, strict=True):
            p.grad = engine.tensor(g, dtype=engine.float32, device=device)
        optimizer.step()
    return [p.detach().cpu().numpy() for p in params]


@OPTIMIZERS
def test_optimizer_update_is_one_kernel_per_parameter(fake_cuda, name, kwargs):
    fake_cupy.kernels["launched"] = 0
    on_device = _train(name, kwargs, "cuda")
    assert fake_cupy.kernels["launched"] == len(GRADS) * len(START)
    for got, want in zip(on_device, _train(name, kwargs, "cpu"), strict=True):
        np.testing.assert_array_equal(got, want)  # the same expression, evaluated by numpy both times


@pytest.mark.gpu
@requires_gpu
@OPTIMIZERS
def test_fused_optimizer_updates_agree_with_the_cpu_on_a_real_gpu(name, kwargs):
    for got, want in zip(_train(name, kwargs, "cuda"), _train(name, kwargs, "cpu"), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
@requires_gpu
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_fused_activation_backward_agrees_with_the_cpu_on_a_real_gpu(name):
    values = np.linspace(-2.5, 2.5, 12).reshape(3, 4) + 0.01
    g, gg = _grads(ACTIVATIONS[name], values, "cuda", create_graph=True)
    want_g, want_gg = _grads(ACTIVATIONS[name], values, "cpu", create_graph=True)
    np.testing.assert_allclose(g, want_g, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(gg, want_gg, rtol=1e-10, atol=1e-12)


def test_the_fusion_benchmark_runs_on_the_device(fake_cuda, monkeypatch):
    from bench import bench_gpu

    monkeypatch.setattr(bench_gpu, "ELEMENTS", 1000)
    monkeypatch.setattr(bench_gpu, "MATMUL", 16)
    fake_cupy.kernels["launched"] = 0
    table = bench_gpu._fusion_table(None)
    assert [row[0] for row in table.rows] == ["tanh backward, n = 1e+03", "Adam step, 16x16 parameter"]
    assert fake_cupy.kernels["launched"] > 2  # the fused side ran as kernels, each timed call one


def test_float_arguments_reach_the_kernel_in_the_arrays_dtype(fake_cuda):
    seen = []

    def body(xp, x, scale):
        seen.append(type(scale))
        return x * scale

    x = fake_cuda.asarray(np.ones(3, dtype=np.float32))
    out = backend.fused(body)(fake_cuda, x, 0.1)
    assert seen == [np.float32] and out.dtype == np.float32
    backend.fused(body)(np, np.ones(3, dtype=np.float32), 0.1)
    assert seen[-1] is float  # on the CPU, as written


# ---- the fake's tracer refuses what cupy.fuse cannot trace ----------------------------------


@pytest.mark.parametrize("body", [
    lambda xp, x: abs(x),  # cupy's proxy has no __abs__: xp.absolute(x) traces
    lambda xp, x: 2 ** x,  # nor __rpow__
    lambda xp, x: x if x.sum() > 0 else -x,  # no data-dependent control flow
    lambda xp, x: x.reshape(-1),  # no methods beyond copy/astype and reductions
    lambda xp, x: xp.concatenate([x, x]),  # no functions beyond ufuncs and a few routines
])
def test_fake_fuse_refuses_what_cupy_cannot_trace(fake_cuda, body):
    kernel = backend.fused(body)
    with pytest.raises((TypeError, AttributeError)):
        kernel(fake_cuda, fake_cuda.asarray(np.arange(3.0)))


def test_fake_fuse_runs_what_cupy_traces(fake_cuda):
    def body(xp, x, y, out, scale):
        out += scale * xp.where(x > 0, xp.exp(-x), y.astype(x.dtype)) - xp.absolute(x) ** 2
        return out.sum()

    x, y = np.array([-1.0, 0.5, 2.0]), np.array([1, 2, 3])
    out = fake_cuda.asarray(np.ones(3))
    total = backend.fused(body)(fake_cuda, fake_cuda.asarray(x), fake_cuda.asarray(y), out, 0.5)
    expected = 1 + 0.5 * np.where(x > 0, np.exp(-x), y) - np.abs(x) ** 2
    np.testing.assert_allclose(out.get(), expected)
    np.testing.assert_allclose(float(total), expected.sum())


# ---- the fake against the installed cupy --------------------------------------------------


def _public_members(cls) -> set[str]:
    return {n for n, v in vars(cls).items() if not n.startswith("_") and callable(v)}


@requires_cupy
def test_the_fake_runtime_exists_in_cupy():
    cuda = real_cupy.cuda
    pairs = [
        (fake_cupy.Device, cuda.Device),
        (fake_cupy.Event, cuda.Event),
        (fake_cupy.MemoryPool, cuda.MemoryPool),
        (fake_cupy._Runtime, cuda.runtime),
    ]
    for fake_cls, real in pairs:
        missing = sorted(n for n in _public_members(fake_cls) if not hasattr(real, n))
        assert not missing, f"{fake_cls.__name__}: cupy lacks {missing}"
    missing = sorted(n for n in vars(fake_cupy.cuda) if not hasattr(cuda, n))
    assert not missing, f"cupy.cuda lacks {missing}"
    assert issubclass(cuda.memory.OutOfMemoryError, MemoryError)
    for name in ("asnumpy", "get_array_module", "fuse", "get_default_memory_pool", "ndarray"):
        assert hasattr(real_cupy, name)
    for name in ("get", "device", "item", "tolist"):
        assert hasattr(real_cupy.ndarray, name)


@requires_cupy
def test_the_fake_fusion_proxy_offers_only_what_cupys_does():
    from cupy._core import _fusion_interface

    proxy = _fusion_interface._ArrayProxy
    ours = {n for n in vars(fake_cupy.FusionProxy) if n.startswith("__") and n not in (
        "__init__", "__slots__", "__module__", "__doc__", "__getattr__", "__setitem__", "array")}
    ours |= set(fake_cupy.PROXY_METHODS) | set(fake_cupy.PROXY_ATTRIBUTES) | {"__setitem__"}
    missing = sorted(n for n in ours if not hasattr(proxy, n))
    assert not missing, f"cupy's fusion proxy lacks {missing}"
    assert not hasattr(proxy, "__abs__") and not hasattr(proxy, "__rpow__")  # what the fake refuses


@requires_cupy
@pytest.mark.parametrize("name", sorted(fake_cupy.FUSABLE_FUNCTIONS))
def test_functions_the_fake_lets_a_kernel_call_are_fusable_in_cupy(name):
    function = getattr(real_cupy, name)
    source = inspect.getsource(function)
    assert "is_fusing()" in source, f"cupy.{name} does not handle being called inside cupy.fuse"


@requires_cupy
def test_every_ufunc_the_fused_kernels_call_is_a_cupy_ufunc():
    import cupyx.scipy.special

    for name in ("tanh", "exp", "sqrt", "maximum"):
        assert isinstance(getattr(real_cupy, name), real_cupy.ufunc)
    for name in ("erf", "expit"):
        assert isinstance(getattr(cupyx.scipy.special, name), real_cupy.ufunc)


@requires_cupy
def test_the_fake_namespace_refuses_names_cupy_lacks(fake_cuda):
    missing = next(n for n in sorted(dir(np)) if not n.startswith("_") and not hasattr(real_cupy, n))
    with pytest.raises(AttributeError, match="the installed cupy lacks it"):
        getattr(fake_cuda, missing)
