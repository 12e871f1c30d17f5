"""0-d tensors through every op of the derivative table, against PyTorch (skipped without torch).

Parametrised over ``engine.ops.table``: every entry has probes in ``zero_dim_probes.SWEEP``
(0-d inputs through the methods, functions and in-place variants users call; dim 0 and -1,
keepdim, out-of-range dims; 0-d and vector operands), or a reason in ``NOT_SWEPT``; an op in
neither fails ``test_every_table_op_is_swept``. Each probe runs the same call on engine and
on torch (float64 inputs) and compares:

- forward: where torch raises, ours raises the same kind of exception (IndexError for a
  dim out of range, RuntimeError for a shape torch rejects); otherwise every output's
  shape, dtype and values, and whether it shares memory with an input (a view exactly
  where PyTorch's is one, so in-place writes reach the same tensors);
- reverse mode: with a random upstream gradient, each input's gradient (shape and values);
  an output torch does not differentiate must not require grad here either;
- forward mode: the output tangent of dual inputs (``engine.autograd.forward_ad``) against
  ``J u``, with J assembled from torch's reverse mode (so the reference does not depend
  on torch's forward-AD coverage).

The random compositions of test_differential_torch.py cover ops on dimensioned tensors;
this file covers the 0-d corner, where numpy and PyTorch disagree most (numpy treats a 0-d
array as having no axis at all; PyTorch lets ``dim`` 0 and -1 name one of size 1).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import engine
from engine import ops
from tests.engine.opcases import DOMAINS
from tests.engine.zero_dim_probes import NOT_SWEPT, PROBES, SWEEP

pytestmark = pytest.mark.torch

RTOL, ATOL = 1e-10, 1e-12


# ---- running a probe on either module ---------------------------------------------------------


def _arrays(probe):
    rng = np.random.default_rng(sum(map(ord, probe.id)))
    return [np.asarray(DOMAINS[probe.domain(i)](rng, s)).reshape(s) for i, s in enumerate(probe.shapes)]


def _leaves(module, probe, arrays, requires_grad=True):
    tensors = []
    for a in arrays:
        if a.dtype == bool:
            tensors.append(module.tensor(a))
        else:
            tensors.append(module.tensor(a, dtype=module.float64, requires_grad=requires_grad))
    return tensors


def _call(module, probe, inputs):
    call = probe.torch_call if module is not engine and probe.torch_call is not None else probe.call
    result = call(module, *inputs)
    return list(result) if isinstance(result, tuple) else [result]


def _outcome(module, probe, arrays):
    """(outputs, leaves) or (the exception raised, leaves)."""
    leaves = _leaves(module, probe, arrays)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyTorch warns about var() without degrees of freedom, .T on 0-d
        try:
            return _call(module, probe, leaves), leaves
        except Exception as error:  # the kind is compared by the tests
            return error, leaves


def _builtin_kind(error) -> type:
    """The first built-in exception class of ``error`` (PyTorch subclasses RuntimeError for some)."""
    return next(k for k in type(error).__mro__ if k.__module__ == "builtins")


def _numpy(t):
    return np.asarray(t.detach().numpy())


def _dtype_name(t) -> str:
    return str(t.dtype).split(".")[-1]


def _tolerances(probe):
    """Tight for float64; float32 precision where the probe computes in float32."""
    return (1e-6, 1e-7) if probe.float32 else (RTOL, ATOL)


def _shares_memory(module, out, leaf) -> bool:
    if module is engine:
        return engine.backend.aliases(out._data, leaf._data)
    return out.untyped_storage().data_ptr() == leaf.untyped_storage().data_ptr()


def _differentiable(outputs):
    return [i for i, t in enumerate(outputs) if t.dtype.is_floating_point and t.requires_grad]


@pytest.mark.parametrize("name", list(ops.table))
def test_every_table_op_is_swept(name):
    assert (name in SWEEP) != (name in NOT_SWEPT), (
        f"op {name!r}: give it 0-d probes in SWEEP or a reason in NOT_SWEPT (exactly one)"
    )


def test_sweep_names_only_table_ops():
    stale = sorted((set(SWEEP) | set(NOT_SWEPT)) - set(ops.table))
    assert not stale, f"the sweep names ops the table does not have: {stale}"


@pytest.mark.parametrize("probe", PROBES, ids=[p.id for p in PROBES])
def test_zero_dim_forward_matches_pytorch(torch, probe):
    arrays = _arrays(probe)
    theirs, their_leaves = _outcome(torch, probe, arrays)
    ours, our_leaves = _outcome(engine, probe, arrays)
    if isinstance(theirs, Exception):
        kind = _builtin_kind(theirs)
        assert isinstance(ours, kind), (
            f"{probe.id}: PyTorch raises {kind.__name__} ({theirs}); ours "
            + (f"raises {type(ours).__name__} ({ours})" if isinstance(ours, Exception)
               else f"returns shapes {[tuple(t.shape) for t in ours]}")
        )
        return
    assert not isinstance(ours, Exception), f"{probe.id}: PyTorch computes it; ours raises {ours!r}"
    assert len(ours) == len(theirs), f"{probe.id}: {len(ours)} outputs, PyTorch {len(theirs)}"
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert tuple(a.shape) == tuple(b.shape), f"{probe.id}: output {i} has shape {tuple(a.shape)}, " \
                                                 f"PyTorch {tuple(b.shape)}"
        assert _dtype_name(a) == _dtype_name(b), f"{probe.id}: output {i} is {a.dtype}, PyTorch {b.dtype}"
        rtol, atol = _tolerances(probe)
        np.testing.assert_allclose(_numpy(a), _numpy(b), rtol=rtol, atol=atol, err_msg=f"{probe.id}: output {i}")
        # A view (in-place writes reach the input) exactly where PyTorch's result is one. (Where
        # PyTorch spells the op differently, the counterpart is compared for its values only.)
        for j, (x, y) in enumerate(zip(our_leaves, their_leaves) if probe.torch_call is None else ()):
            assert _shares_memory(engine, a, x) == _shares_memory(torch, b, y), (
                f"{probe.id}: output {i} shares memory with input {j}: ours {_shares_memory(engine, a, x)}, "
                f"PyTorch {_shares_memory(torch, b, y)}"
            )


@pytest.mark.parametrize("probe", PROBES, ids=[p.id for p in PROBES])
def test_zero_dim_gradients_match_pytorch(torch, probe):
    arrays = _arrays(probe)
    theirs, their_leaves = _outcome(torch, probe, arrays)
    ours, our_leaves = _outcome(engine, probe, arrays)
    if isinstance(theirs, Exception):
        assert isinstance(ours, Exception), f"{probe.id}: PyTorch raises {theirs!r}; ours computes it"
        return  # the forward test compares the errors
    assert not isinstance(ours, Exception), f"{probe.id}: PyTorch computes it; ours raises {ours!r}"
    differentiable = _differentiable(theirs)
    assert _differentiable(ours) == differentiable, (
        f"{probe.id}: outputs requiring grad: ours {_differentiable(ours)}, PyTorch {differentiable}"
    )
    if not differentiable:
        return
    rng = np.random.default_rng(7)
    upstream = [rng.standard_normal(tuple(theirs[i].shape)) for i in differentiable]
    grads = []
    for module, outputs, leaves in ((engine, ours, our_leaves), (torch, theirs, their_leaves)):
        float_leaves = [t for t in leaves if t.requires_grad]
        targets = [outputs[i] for i in differentiable]
        seeds = [module.tensor(g, dtype=module.float64, device=t.device) for g, t in zip(upstream, targets)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # as in _outcome: numpy warns making nan (var without dof)
            grads.append(module.autograd.grad(targets, float_leaves, seeds, allow_unused=True))
    for i, (a, b) in enumerate(zip(*grads)):
        if a is None or b is None:
            present = a if a is not None else b
            assert present is None or not np.any(_numpy(present)), (
                f"{probe.id}: gradient of input {i}: ours {a}, PyTorch {b}"
            )
            continue
        assert tuple(a.shape) == tuple(b.shape), f"{probe.id}: gradient of input {i} has shape " \
                                                 f"{tuple(a.shape)}, PyTorch {tuple(b.shape)}"
        rtol, atol = _tolerances(probe)
        np.testing.assert_allclose(_numpy(a), _numpy(b), rtol=rtol, atol=atol, err_msg=f"{probe.id}: input {i}")


def _torch_tangents(torch, probe, arrays, tangents, index):
    """J u for output ``index``, with J from PyTorch's reverse mode (one backward per element)."""
    outputs, leaves = _outcome(torch, probe, arrays)
    out = outputs[index]
    float_leaves = [t for t in leaves if t.requires_grad]
    flat = out.reshape(-1)
    values = np.zeros(flat.shape[0])
    for k in range(flat.shape[0]):
        rows = torch.autograd.grad(flat[k], float_leaves, retain_graph=True, allow_unused=True)
        values[k] = sum(float((r.detach().numpy() * u).sum()) for r, u in zip(rows, tangents) if r is not None)
    return values.reshape(tuple(out.shape))


@pytest.mark.parametrize("probe", PROBES, ids=[p.id for p in PROBES])
def test_zero_dim_forward_mode_matches_pytorch(torch, probe):
    from engine.autograd import forward_ad

    arrays = _arrays(probe)
    theirs, _ = _outcome(torch, probe, arrays)
    rng = np.random.default_rng(11)
    tangents = [rng.standard_normal(a.shape) for a in arrays if a.dtype != bool]
    with forward_ad.dual_level(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # as in _outcome: numpy warns making inf or nan, PyTorch does not
        primals = _leaves(engine, probe, arrays, requires_grad=False)
        it = iter(tangents)
        duals = [t if a.dtype == bool else forward_ad.make_dual(t, engine.tensor(next(it), dtype=engine.float64))
                 for t, a in zip(primals, arrays)]
        try:
            ours = _call(engine, probe, duals)
        except Exception as error:  # the kind is compared by the forward test
            assert isinstance(theirs, Exception), f"{probe.id}: PyTorch computes it; ours raises {error!r} on duals"
            return
        assert not isinstance(theirs, Exception), f"{probe.id}: PyTorch raises {theirs!r}; ours computes it"
        our_tangents = [forward_ad.unpack_dual(t).tangent for t in ours]
    differentiable = _differentiable(theirs)
    for i, tangent in enumerate(our_tangents):
        if i not in differentiable:
            assert tangent is None or not np.any(_numpy(tangent)), (
                f"{probe.id}: output {i} is not differentiable in PyTorch, ours has tangent {tangent}"
            )
            continue
        expected = _torch_tangents(torch, probe, arrays, tangents, i)
        if tangent is None:
            assert not np.any(expected), f"{probe.id}: output {i} has no tangent, PyTorch's J u = {expected}"
            continue
        assert tuple(tangent.shape) == expected.shape, f"{probe.id}: tangent of output {i} has shape " \
                                                       f"{tuple(tangent.shape)}, output {expected.shape}"
        rtol, atol = _tolerances(probe)
        np.testing.assert_allclose(_numpy(tangent), expected, rtol=rtol, atol=atol, err_msg=f"{probe.id}: output {i}")
