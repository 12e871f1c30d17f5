"""Differential tests: the engine against PyTorch (skipped where torch is not installed).

Random compositions of ops (seeded) give the same values and gradients, first and
second order; grad_fn names and the tutorial's ``next_functions`` chain are
PyTorch's; subgradients at kinks and ties follow PyTorch's conventions.
(Reprs are compared in test_tensor.py.)
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import engine

pytestmark = pytest.mark.torch

# ---- random compositions -------------------------------------------------------------
# Every entry maps tensors broadcastable to (2, 3) to a tensor broadcastable to (2, 3),
# defined and smooth (almost everywhere) for all real inputs. ``m`` is engine or torch.

UNARY = {
    "sin": lambda m, x: x.sin(),
    "cos": lambda m, x: x.cos(),
    "tanh": lambda m, x: x.tanh(),
    "sigmoid": lambda m, x: x.sigmoid(),
    "exp": lambda m, x: x.tanh().exp(),
    "expm1": lambda m, x: x.tanh().expm1(),
    "log": lambda m, x: (x * x + 1).log(),
    "log1p": lambda m, x: (x * x).log1p(),
    "sqrt": lambda m, x: (x * x + 0.5).sqrt(),
    "rsqrt": lambda m, x: (x * x + 0.5).rsqrt(),
    "reciprocal": lambda m, x: (x * x + 1).reciprocal(),
    "tan": lambda m, x: (x.tanh() * 0.5).tan(),
    "erf": lambda m, x: x.erf(),
    "relu": lambda m, x: x.relu(),
    "abs": lambda m, x: x.abs(),
    "neg": lambda m, x: -x,
    "square": lambda m, x: x**2,
    "cube": lambda m, x: x.pow(3),
    "sign_mul": lambda m, x: x * x.sign(),
    "clamp": lambda m, x: x.clamp(-0.5, 0.5),
    "softmax": lambda m, x: x.softmax(-1),
    "log_softmax": lambda m, x: x.log_softmax(-1),
    "logsumexp": lambda m, x: x.logsumexp(-1, keepdim=True),
    "mean": lambda m, x: x.mean(0, keepdim=True),
    "sum": lambda m, x: x.sum(-1, keepdim=True),
    "prod": lambda m, x: x.prod(-1, keepdim=True),
    "var": lambda m, x: x.var(-1, unbiased=False, keepdim=True),
    "norm": lambda m, x: (x * x + 0.1).norm(dim=-1, keepdim=True),
    "amax": lambda m, x: x.amax(-1, keepdim=True),
    "max_dim": lambda m, x: x.max(-1, keepdim=True)[0],
    "min_all": lambda m, x: x.min() * x,
    "cumsum": lambda m, x: x.cumsum(-1),
    "flip": lambda m, x: x.flip(-1),
    "transpose": lambda m, x: x.expand(2, 3).t().t(),
    "permute": lambda m, x: x.expand(2, 3).permute(1, 0).mT,
    "view": lambda m, x: x.expand(2, 3).reshape(3, 2).reshape(2, 3),
    "unsqueeze": lambda m, x: x.unsqueeze(0).squeeze(0),
    "slice": lambda m, x: x[..., :1] * 2,
    "select": lambda m, x: x.expand(2, 3)[1],
    "index": lambda m, x: x.expand(2, 3)[:, [2, 0, 0]],
    "repeat": lambda m, x: x.expand(2, 3).repeat(1, 2)[:, 2:5],
    "setitem": lambda m, x: _setitem(x),
    "in_place": lambda m, x: (x * 1).mul_(2).sin_(),
}

BINARY = {
    "add": lambda m, a, b: a + b,
    "sub": lambda m, a, b: a - b,
    "rsub": lambda m, a, b: 1 - a * b,
    "mul": lambda m, a, b: a * b,
    "div": lambda m, a, b: a / (b * b + 1),
    "pow": lambda m, a, b: (a * a + 0.5) ** b.tanh(),
    "maximum": lambda m, a, b: m.maximum(a, b),
    "minimum": lambda m, a, b: m.minimum(a, b),
    "where": lambda m, a, b: m.where(a > b, a, b * 2),
    "matmul": lambda m, a, b: (a.expand(2, 3) @ b.expand(2, 3).mT) @ a.expand(2, 3),
    "cat": lambda m, a, b: m.cat([a.expand(2, 3), b.expand(2, 3)], dim=-1)[:, 1:4],
    "stack": lambda m, a, b: m.stack([a.expand(2, 3), b.expand(2, 3)]).mean(0),
    "outer": lambda m, a, b: m.outer(a.expand(2, 3)[0, :2], b.expand(2, 3)[1]),
    "dot": lambda m, a, b: a * m.dot(a.expand(2, 3)[0], b.expand(2, 3)[1]),
}


def _setitem(x):
    y = x.expand(2, 3).clone()
    y[0, 1] = x.expand(2, 3)[1, 2] * 3
    return y


def _program(seed, steps=10):
    """A seeded random program: a list of (op name, operand positions in the pool)."""
    rng = np.random.default_rng(seed)
    names = sorted(UNARY) + sorted(BINARY)
    program, size = [], 4
    for _ in range(steps):
        name = names[rng.integers(len(names))]
        arity = 1 if name in UNARY else 2
        # Prefer the newest values, so programs grow deep rather than wide.
        picks = [size - 1 if rng.random() < 0.5 else int(rng.integers(size)) for _ in range(arity)]
        program.append((name, picks))
        size += 1
    weights = rng.standard_normal(size)
    return program, weights


def _leaves(module, seed):
    rng = np.random.default_rng(1000 + seed)
    shapes = [(2, 3), (2, 1), (3,), (1, 3)]
    return [module.tensor(rng.standard_normal(s), dtype=module.float64, requires_grad=True) for s in shapes]


def _run(module, seed):
    program, weights = _program(seed)
    leaves = _leaves(module, seed)
    pool = list(leaves)
    for name, picks in program:
        fn = UNARY.get(name) or BINARY[name]
        pool.append(fn(module, *(pool[i] for i in picks)))
    loss = sum(float(w) * t.sin().sum() for w, t in zip(weights, pool))
    return loss, leaves, program


def _numpy(t):
    return t.detach().numpy()


@pytest.mark.parametrize("seed", range(40))
def test_random_composition_gradients_match_pytorch(torch, seed):
    ours, our_leaves, program = _run(engine, seed)
    theirs, their_leaves, _ = _run(torch, seed)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-10, abs=1e-10), program
    ours.backward()
    theirs.backward()
    for i, (a, b) in enumerate(zip(our_leaves, their_leaves)):
        np.testing.assert_allclose(_numpy(a.grad), _numpy(b.grad), rtol=1e-8, atol=1e-10,
                                   err_msg=f"leaf {i}, program {program}")


@pytest.mark.parametrize("seed", range(12))
def test_random_composition_second_derivatives_match_pytorch(torch, seed):
    results = []
    for module in (engine, torch):
        loss, leaves, program = _run(module, seed)
        grads = module.autograd.grad(loss, leaves, create_graph=True)
        second = sum((g * g).sum() for g in grads if g.requires_grad)
        if not isinstance(second, module.Tensor):
            results.append(None)  # the program is linear in every leaf
            continue
        results.append([_numpy(g) if g is not None else None
                        for g in module.autograd.grad(second, leaves, allow_unused=True)])
    if results[0] is None or results[1] is None:
        assert results[0] is results[1]
        return
    for i, (a, b) in enumerate(zip(*results)):
        if a is None or b is None:
            assert (a is None and b is None) or np.allclose(a if a is not None else b, 0)
            continue
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9, err_msg=f"leaf {i}, program {program}")


# ---- grad_fn names ---------------------------------------------------------------------

NAMED = {
    "SinBackward0": lambda m, a, mat, v: a.sin(),
    "MulBackward0": lambda m, a, mat, v: 2 * a,
    "AddBackward0": lambda m, a, mat, v: a + 1,
    "SubBackward0": lambda m, a, mat, v: a - v,
    "SumBackward0": lambda m, a, mat, v: a.sum(),
    "SumBackward1": lambda m, a, mat, v: mat.sum(0),
    "MeanBackward0": lambda m, a, mat, v: a.mean(),
    "MeanBackward1": lambda m, a, mat, v: mat.mean(1),
    "PowBackward0": lambda m, a, mat, v: a**2,
    "PowBackward1": lambda m, a, mat, v: a.abs() ** v,
    "DivBackward0": lambda m, a, mat, v: a / v,
    "ExpBackward0": lambda m, a, mat, v: a.exp(),
    "LogBackward0": lambda m, a, mat, v: a.abs().log(),
    "Log1PBackward0": lambda m, a, mat, v: a.abs().log1p(),
    "NegBackward0": lambda m, a, mat, v: -a,
    "ViewBackward0": lambda m, a, mat, v: mat.view(6),
    "TransposeBackward0": lambda m, a, mat, v: mat.transpose(0, 1),
    "TBackward0": lambda m, a, mat, v: mat.t(),
    "RsubBackward1": lambda m, a, mat, v: 2 - a,
    "PowBackward2": lambda m, a, mat, v: 2**a,
    "UnsafeViewBackward0": lambda m, a, mat, v: mat.expand(2, 2, 3) @ mat.t(),
    "BmmBackward0": lambda m, a, mat, v: m.bmm(mat[None], mat.t()[None]),
    "PermuteBackward0": lambda m, a, mat, v: mat.T,
    "SelectBackward0": lambda m, a, mat, v: mat[0],
    "SliceBackward0": lambda m, a, mat, v: mat[0, 1:],
    "UnsqueezeBackward0": lambda m, a, mat, v: mat[0, None],
    "IndexBackward0": lambda m, a, mat, v: a[m.tensor([0, 2])],
    "MmBackward0": lambda m, a, mat, v: mat @ mat.t(),
    "MvBackward0": lambda m, a, mat, v: mat @ v,
    "DotBackward0": lambda m, a, mat, v: a @ v,
    "ExpandBackward0": lambda m, a, mat, v: a.expand(2, 3),
    "CatBackward0": lambda m, a, mat, v: m.cat([a, v]),
    "StackBackward0": lambda m, a, mat, v: m.stack([a, v]),
    "ReluBackward0": lambda m, a, mat, v: a.relu(),
    "TanhBackward0": lambda m, a, mat, v: a.tanh(),
    "SigmoidBackward0": lambda m, a, mat, v: a.sigmoid(),
    "MaxBackward1": lambda m, a, mat, v: a.max(),
    "MaxBackward0": lambda m, a, mat, v: mat.max(1)[0],
    "AmaxBackward0": lambda m, a, mat, v: mat.amax(1),
    "LinalgVectorNormBackward0": lambda m, a, mat, v: a.norm(),
    "SoftmaxBackward0": lambda m, a, mat, v: mat.softmax(1),
    "LogSoftmaxBackward0": lambda m, a, mat, v: mat.log_softmax(1),
    "ClampBackward1": lambda m, a, mat, v: a.clamp(-0.5, 0.5),
    "WhereBackward0": lambda m, a, mat, v: m.where(a > 0, a, v),
    "CloneBackward0": lambda m, a, mat, v: a.clone(),
    "ToCopyBackward0": lambda m, a, mat, v: a.float(),
    "RepeatBackward0": lambda m, a, mat, v: a.repeat(2),
    "CumsumBackward0": lambda m, a, mat, v: a.cumsum(0),
    "FlipBackward0": lambda m, a, mat, v: a.flip(0),
    "SqueezeBackward0": lambda m, a, mat, v: mat[None].squeeze(),
    "SqueezeBackward1": lambda m, a, mat, v: mat[None].squeeze(0),
    "AliasBackward0": lambda m, a, mat, v: mat[:, :],
    "ProdBackward0": lambda m, a, mat, v: a.prod(),
    "VarBackward0": lambda m, a, mat, v: a.var(),
    "StdBackward0": lambda m, a, mat, v: a.std(),
}
# Known differences: ``M.squeeze((0,))`` is SqueezeBackward2 in PyTorch (ours SqueezeBackward0);
# ``v @ M`` (vector times matrix) SqueezeBackward4 over MmBackward0 (ours one MmBackward0);
# ``M[:, ::1]`` AliasBackward0 (ours SliceBackward0). Deeper in a batched matmul's graph PyTorch
# decides by strides, or squeezes size-1 batch axes of the right operand; ours decides as for
# contiguous operands (see GRAPHS).


# Whole graphs (every node's name and edges), where PyTorch composes an op from several:
# ``2 / a`` is reciprocal then mul, ``2 - a`` and ``2 ** a`` take the number as a parameter,
# matmul folds batches into one mm or expands them for one bmm, reshape copies when no view fits.
GRAPHS = {
    "rsub": lambda m, x, y: 2 - x,
    "rdiv": lambda m, x, y: 2 / x,
    "rpow": lambda m, x, y: 2 ** x,
    "pow_function": lambda m, x, y: m.pow(2.5, x),
    "t": lambda m, x, y: x[0].t(),
    "t_vector": lambda m, x, y: x[0][0].t(),
    "transpose": lambda m, x, y: x[0].transpose(0, 1),
    "mT": lambda m, x, y: x.mT,
    "bmm": lambda m, x, y: x @ y,
    "matmul_3d_2d": lambda m, x, y: x @ y[0],
    "matmul_3d_1d": lambda m, x, y: x @ y[0][:, 0],
    "matmul_1d_3d": lambda m, x, y: x[0][0] @ y,
    "matmul_2d_3d": lambda m, x, y: x[0] @ y,
    "matmul_4d_3d": lambda m, x, y: x.expand(3, 2, 2, 3) @ y,
    "matmul_broadcast": lambda m, x, y: x[:, None] @ y[None],
    "matmul_no_grad_left": lambda m, x, y: x.detach() @ y,
    "matmul_method": lambda m, x, y: x.matmul(y),
    "bmm_function": lambda m, x, y: m.bmm(x, y),
    "bare_slice": lambda m, x, y: x[:],
    "full_slices": lambda m, x, y: x[:, :][0][:],
    "squeeze_dim": lambda m, x, y: x[None].squeeze(0).squeeze(1),
    "reshape_copy": lambda m, x, y: x.mT.reshape(2, 6),
    "reshape_view": lambda m, x, y: x.reshape(4, 3),
    "flatten_copy": lambda m, x, y: x.mT.flatten(),
}


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_graphs_match_pytorch(torch, name):
    results = []
    for module in (engine, torch):
        rng = np.random.default_rng(0)
        x = module.tensor(rng.uniform(0.5, 1.5, (2, 2, 3)), dtype=module.float64, requires_grad=True)
        y = module.tensor(rng.standard_normal((2, 3, 4)), dtype=module.float64, requires_grad=True)
        out = GRAPHS[name](module, x, y)
        (out * out).sum().backward()
        grads = [None if t.grad is None else t.grad.numpy() for t in (x, y)]
        results.append((_structure(out.grad_fn), out.detach().numpy(), grads))
    (ours, our_out, our_grads), (theirs, their_out, their_grads) = results
    assert ours == theirs
    np.testing.assert_allclose(our_out, their_out, rtol=1e-12)
    for a, b in zip(our_grads, their_grads):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_allclose(a, b, rtol=1e-12)


@pytest.mark.parametrize("shapes", [((2, 3, 4), (3, 4, 5)), ((2, 3, 4), (5, 6))])
def test_batched_matmul_shape_errors_match_pytorch(torch, shapes):
    messages = []
    for module in (engine, torch):
        with pytest.raises(RuntimeError) as caught:
            module.ones(*shapes[0], requires_grad=True) @ module.ones(*shapes[1])
        messages.append(str(caught.value))
    assert messages[0] == messages[1]


def test_batched_matmul_inner_size_error():
    # PyTorch's bmm says "Expected size for first two dimensions of batch2 tensor ..." here.
    with pytest.raises(RuntimeError, match=r"shapes cannot be multiplied \(3x4 and 5x6\)"):
        engine.ones(2, 3, 4, requires_grad=True) @ engine.ones(2, 5, 6)


def _named_inputs(module):
    rng = np.random.default_rng(0)
    a = module.tensor(rng.standard_normal(3), dtype=module.float64, requires_grad=True)
    mat = module.tensor(rng.standard_normal((2, 3)), dtype=module.float64, requires_grad=True)
    v = module.tensor(rng.uniform(0.5, 1.5, 3), dtype=module.float64, requires_grad=True)
    return module, a, mat, v


@pytest.mark.parametrize("name", sorted(NAMED))
def test_grad_fn_names_match_pytorch(torch, name):
    ours = NAMED[name](*_named_inputs(engine)).grad_fn.name()
    theirs = NAMED[name](*_named_inputs(torch)).grad_fn.name()
    assert theirs == name  # the oracle agrees with the table above
    assert ours == theirs


def _structure(node, depth=0):
    """A node as nested tuples: its name, and per edge (child structure or None, index)."""
    if node is None:
        return None
    name = node.name().split("::")[-1]  # torch::autograd::AccumulateGrad
    return (name, tuple((_structure(child, depth + 1), index) for child, index in node.next_functions))


def test_tutorial_sin_example_graph_matches_pytorch(torch):
    structures = []
    for module in (engine, torch):
        a = module.linspace(0.0, 2.0 * math.pi, steps=25, requires_grad=True)
        b = module.sin(a)
        c = 2 * b
        d = c + 1
        out = d.sum()
        structures.append((_structure(out.grad_fn), _structure(d.grad_fn)))
        out.backward()
        structures.append(a.grad.numpy().tolist())
    assert structures[0] == structures[2]
    np.testing.assert_allclose(structures[1], structures[3], rtol=1e-6, atol=1e-6)  # cos to float32 ulps


def test_accumulate_grad_variable_is_the_leaf(torch):
    for module in (engine, torch):
        a = module.ones(2, requires_grad=True)
        node, index = (a * 2).grad_fn.next_functions[0]
        assert node.name().split("::")[-1] == "AccumulateGrad"  # torch says torch::autograd::AccumulateGrad
        assert node.variable is a and index == 0


# ---- subgradients at kinks and ties ---------------------------------------------------

KINKS = {
    "relu_at_zero": lambda m, x: x.relu(),
    "abs_at_zero": lambda m, x: x.abs(),
    "sign": lambda m, x: x.sign(),
    "clamp_edges": lambda m, x: x.clamp(-1.0, 1.0),
    "maximum_ties": lambda m, x: m.maximum(x, x.detach() * 0 + 1.0),
    "minimum_ties": lambda m, x: m.minimum(x, x.flip(0)),
    "amax_ties": lambda m, x: x.amax(),
    "max_all_ties": lambda m, x: x.max(),
    "max_dim_ties": lambda m, x: x.reshape(2, 3).max(1)[0],
    "norm2_zero": lambda m, x: (x * 0).norm(),
    "norm1_zero": lambda m, x: (x * 0).norm(p=1),
    "prod_one_zero": lambda m, x: (x - x.detach()[1]).prod(),
    "prod_two_zeros": lambda m, x: (x * m.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 1.0], dtype=m.float64)).prod(),
    "sqrt_positive": lambda m, x: (x * x + 1).sqrt(),
    "pow_zero_base": lambda m, x: (x * 0) ** m.tensor(2.0, dtype=m.float64),
    "rpow_zero_base": lambda m, x: 0 ** (x + 1),  # exponents >= 0: PyTorch masks 0 * log 0 to 0
    "rpow_negative_base": lambda m, x: (-2.0) ** x,  # nan: log of a negative base
    "rpow_int_base": lambda m, x: 3 ** x,
}


@pytest.mark.parametrize("name", sorted(KINKS))
def test_subgradients_follow_pytorch(torch, name):
    grads = []
    for module in (engine, torch):
        x = module.tensor([-1.0, 0.0, 1.0, 1.0, 0.0, 2.0], dtype=module.float64, requires_grad=True)
        out = KINKS[name](module, x)
        out.backward(module.ones_like(out))
        grads.append(x.grad.numpy())
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-12, atol=0)
