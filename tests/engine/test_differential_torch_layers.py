"""Differential tests of the nn layers' functional forms against PyTorch (skipped without torch).

Each case runs one ``nn.functional`` call on the same float64 inputs in both libraries and
compares the result, the gradient of every floating input (first order), the gradients of
``<grad, v>`` again (second order, ``create_graph=True``) and the ``grad_fn`` name. Errors for
mismatched shapes carry PyTorch's messages.
"""

from __future__ import annotations

import numpy as np
import pytest

import engine

pytestmark = [pytest.mark.torch, pytest.mark.filterwarnings("ignore:Using padding=.same.:UserWarning")]

ATOL, RTOL = 1e-10, 1e-9


def _conv2d(m, x, w, b, **p):
    return m.nn.functional.conv2d(x, w, b, **p)


def _conv1d(m, x, w, b, **p):
    return m.nn.functional.conv1d(x, w, b, **p)


# name -> (function of (module, *tensors), input shapes, domains ("real" | "positive" | "distinct"))
CASES = {
    "conv2d": (lambda m, x, w, b: _conv2d(m, x, w, b), ((2, 3, 6, 5), (4, 3, 3, 3), (4,))),
    "conv2d_stride_pad_dilation": (
        lambda m, x, w, b: _conv2d(m, x, w, b, stride=(2, 1), padding=(1, 2), dilation=(1, 2)),
        ((2, 2, 7, 6), (3, 2, 3, 2), (3,)),
    ),
    "conv2d_groups": (lambda m, x, w, b: _conv2d(m, x, w, b, groups=2, padding=1), ((1, 4, 5, 5), (6, 2, 3, 3), (6,))),
    "conv2d_same_even_kernel": (lambda m, x, w: _conv2d(m, x, w, None, padding="same"), ((2, 2, 5, 6), (3, 2, 2, 4))),
    "conv2d_valid_unbatched": (
        lambda m, x, w, b: _conv2d(m, x, w, b, padding="valid"), ((2, 5, 5), (3, 2, 3, 3), (3,)),
    ),
    "conv1d": (lambda m, x, w, b: _conv1d(m, x, w, b, stride=2, padding=1), ((2, 3, 9), (4, 3, 3), (4,))),
    "conv1d_same_dilated": (lambda m, x, w: _conv1d(m, x, w, None, padding="same", dilation=2), ((1, 2, 8), (2, 2, 3))),
    "max_pool2d": (lambda m, x: m.nn.functional.max_pool2d(x, 2), ((2, 3, 6, 6),), ("distinct",)),
    "max_pool2d_overlapping": (
        lambda m, x: m.nn.functional.max_pool2d(x, 3, stride=2, padding=1, dilation=1, ceil_mode=True),
        ((2, 2, 8, 7),), ("distinct",),
    ),
    "max_pool2d_dilated_unbatched": (
        lambda m, x: m.nn.functional.max_pool2d(x, (2, 3), stride=(1, 2), dilation=(2, 1)), ((2, 7, 8),), ("distinct",),
    ),
    "avg_pool2d": (lambda m, x: m.nn.functional.avg_pool2d(x, 2), ((2, 3, 6, 6),)),
    "avg_pool2d_pad_ceil": (
        lambda m, x: m.nn.functional.avg_pool2d(x, 3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
        ((2, 2, 8, 7),),
    ),
    "avg_pool2d_ceil_include_pad": (
        lambda m, x: m.nn.functional.avg_pool2d(x, 3, stride=2, padding=1, ceil_mode=True), ((1, 2, 6, 6),),
    ),
    "avg_pool2d_divisor": (lambda m, x: m.nn.functional.avg_pool2d(x, (2, 3), divisor_override=5), ((1, 2, 6, 6),)),
    "adaptive_avg_pool2d": (lambda m, x: m.nn.functional.adaptive_avg_pool2d(x, (3, 2)), ((2, 3, 7, 5),)),
    "adaptive_avg_pool2d_grow": (lambda m, x: m.nn.functional.adaptive_avg_pool2d(x, (5, None)), ((1, 2, 3, 4),)),
    "adaptive_avg_pool2d_global": (lambda m, x: m.nn.functional.adaptive_avg_pool2d(x, 1), ((2, 3, 4, 4),)),
    "batch_norm_train_1d": (
        lambda m, x, w, b: m.nn.functional.batch_norm(x, None, None, w, b, training=True, eps=1e-3),
        ((5, 3), (3,), (3,)),
    ),
    "batch_norm_train_2d": (
        lambda m, x, w, b: m.nn.functional.batch_norm(x, None, None, w, b, training=True), ((3, 2, 4, 3), (2,), (2,)),
    ),
    "batch_norm_no_affine": (
        lambda m, x: m.nn.functional.batch_norm(x, None, None, training=True), ((4, 3, 5),),
    ),
    "batch_norm_eval": (
        lambda m, x, w, b, mean, var: m.nn.functional.batch_norm(x, mean.detach(), var.detach(), w, b, training=False),
        ((3, 2, 4, 3), (2,), (2,), (2,), (2,)), ("real", "real", "real", "real", "positive"),
    ),
    "layer_norm": (lambda m, x, w, b: m.nn.functional.layer_norm(x, (4,), w, b), ((3, 5, 4), (4,), (4,))),
    "layer_norm_2d_shape": (lambda m, x, w, b: m.nn.functional.layer_norm(x, (2, 3), w, b, eps=1e-3),
                            ((4, 2, 3), (2, 3), (2, 3))),
    "layer_norm_no_affine": (lambda m, x: m.nn.functional.layer_norm(x, [5]), ((3, 5),)),
    "embedding": (lambda m, w: m.nn.functional.embedding(m.tensor([[1, 4, 1], [0, 2, 4]]), w), ((5, 3),)),
    "embedding_padding_idx": (
        lambda m, w: m.nn.functional.embedding(m.tensor([3, 1, 1, 0, 2]), w, padding_idx=1), ((4, 2),),
    ),
    "leaky_relu": (lambda m, x: m.nn.functional.leaky_relu(x, 0.2), ((3, 4),)),
    "elu": (lambda m, x: m.nn.functional.elu(x, alpha=0.7), ((3, 4),)),
    "silu": (lambda m, x: m.nn.functional.silu(x), ((3, 4),)),
    "cnn_block": (
        lambda m, x, w, b: m.nn.functional.max_pool2d(
            m.nn.functional.relu(m.nn.functional.batch_norm(_conv2d(m, x, w, b, padding=1), None, None,
                                                             training=True)), 2),
        ((2, 2, 6, 6), (3, 2, 3, 3), (3,)),
    ),
}


def _arrays(shapes, domains, seed):
    rng = np.random.default_rng(seed)
    arrays = []
    for i, shape in enumerate(shapes):
        domain = domains[i] if i < len(domains) else "real"
        if domain == "positive":
            arrays.append(rng.uniform(0.5, 2.0, shape))
        elif domain == "distinct":  # each window's maximum is unique, so the gradient is defined
            n = int(np.prod(shape))
            arrays.append(((rng.permutation(n) - n / 2) * 0.1).reshape(shape))
        else:
            arrays.append(rng.standard_normal(shape))
    return arrays


def _run(module, fn, arrays, v):
    inputs = [module.tensor(a, requires_grad=True) for a in arrays]
    out = fn(module, *inputs)
    grads = module.autograd.grad((out * module.tensor(v)).sum(), inputs, create_graph=True, allow_unused=True)
    second = [g for g in grads if g is not None and g.requires_grad]
    if second:
        total = sum((g * g).sum() for g in second)
        seconds = module.autograd.grad(total, inputs, allow_unused=True)
    else:
        seconds = [None] * len(inputs)
    return out, grads, seconds


def _numpy(t):
    return None if t is None else t.detach().cpu().numpy()


@pytest.mark.parametrize("name", sorted(CASES))
def test_layer_functions_match_pytorch(torch, name):
    fn, shapes, *rest = CASES[name]
    domains = rest[0] if rest else ()
    arrays = _arrays(shapes, domains, seed=len(name))
    theirs = fn(torch, *[torch.tensor(a) for a in arrays])
    v = np.random.default_rng(1).standard_normal(tuple(theirs.shape))
    t_out, t_grads, t_second = _run(torch, fn, arrays, v)
    e_out, e_grads, e_second = _run(engine, fn, arrays, v)
    assert e_out.grad_fn.name() == t_out.grad_fn.name()
    assert tuple(e_out.shape) == tuple(t_out.shape)
    np.testing.assert_allclose(_numpy(e_out), _numpy(t_out), atol=ATOL, rtol=RTOL)
    for i, (ours, reference) in enumerate(zip(e_grads, t_grads)):
        assert (ours is None) == (reference is None), f"{name}: input {i}"
        if reference is not None:
            np.testing.assert_allclose(_numpy(ours), _numpy(reference), atol=ATOL, rtol=RTOL,
                                       err_msg=f"{name}: gradient of input {i}")
    for i, (ours, reference) in enumerate(zip(e_second, t_second)):
        if reference is None or ours is None:  # a zero second derivative: either may leave it out
            other = ours if reference is None else reference
            assert other is None or not np.any(_numpy(other)), f"{name}: second-order input {i}"
            continue
        np.testing.assert_allclose(_numpy(ours), _numpy(reference), atol=1e-8, rtol=1e-8,
                                   err_msg=f"{name}: second-order gradient of input {i}")


def test_max_pool2d_indices_match_pytorch(torch):
    (x,) = _arrays(((2, 2, 7, 8),), ("distinct",), seed=3)
    for params in ({"kernel_size": 2}, {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True},
                   {"kernel_size": (2, 3), "dilation": (2, 1), "stride": 1}):
        _, ours = engine.nn.functional.max_pool2d(engine.tensor(x), return_indices=True, **params)
        _, theirs = torch.nn.functional.max_pool2d(torch.tensor(x), return_indices=True, **params)
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
        assert ours.dtype == engine.int64


def _message(module, fn):
    with pytest.raises(Exception) as caught:
        fn(module)
    return type(caught.value).__name__, str(caught.value).replace("torch.", "").replace("engine.", "")


SHAPE_ERRORS = {
    "conv2d_channels": lambda m: m.nn.functional.conv2d(m.zeros(2, 4, 5, 5), m.zeros(3, 3, 3, 3)),
    "conv2d_kernel_too_large": lambda m: m.nn.functional.conv2d(m.zeros(1, 1, 2, 2), m.zeros(1, 1, 3, 3)),
    "conv2d_groups": lambda m: m.nn.functional.conv2d(m.zeros(1, 4, 5, 5), m.zeros(3, 2, 3, 3), groups=2),
    "conv2d_bias": lambda m: m.nn.functional.conv2d(m.zeros(1, 2, 5, 5), m.zeros(3, 2, 3, 3), m.zeros(4)),
    "conv2d_same_strided": lambda m: m.nn.functional.conv2d(m.zeros(1, 1, 5, 5), m.zeros(1, 1, 3, 3), stride=2,
                                                            padding="same"),
    "conv2d_rank": lambda m: m.nn.functional.conv2d(m.zeros(5, 5), m.zeros(1, 1, 3, 3)),
    "max_pool2d_padding": lambda m: m.nn.functional.max_pool2d(m.zeros(1, 1, 5, 5), 2, padding=2),
    "layer_norm_shape": lambda m: m.nn.functional.layer_norm(m.zeros(2, 3), (4,)),
    "embedding_range": lambda m: m.nn.functional.embedding(m.tensor([0, 5]), m.zeros(5, 2)),
    "batch_norm_one_value": lambda m: m.nn.functional.batch_norm(m.zeros(1, 3), None, None, training=True),
}


@pytest.mark.parametrize("name", sorted(SHAPE_ERRORS))
def test_shape_errors_match_pytorch(torch, name):
    assert _message(engine, SHAPE_ERRORS[name]) == _message(torch, SHAPE_ERRORS[name])
