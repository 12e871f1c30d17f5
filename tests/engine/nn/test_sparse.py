"""engine/nn/sparse.py: Embedding: lookups, the padding row, max_norm, and PyTorch's repr and grads."""

from __future__ import annotations

import numpy as np
import pytest

import engine
from engine import nn


def test_lookup_gradient_counts_repeats_and_skips_the_padding_row():
    emb = nn.Embedding(5, 2, padding_idx=-1)
    assert emb.padding_idx == 4
    assert not emb.weight.detach().numpy()[4].any()  # the padding row starts at zero
    idx = engine.tensor([[0, 4, 0], [3, 3, 3]])
    out = emb(idx)
    np.testing.assert_array_equal(out.detach().numpy(), emb.weight.detach().numpy()[idx.numpy()])
    out.sum().backward()
    np.testing.assert_array_equal(emb.weight.grad.numpy()[:, 0], [2, 0, 0, 3, 0])


def test_max_norm_renormalizes_the_rows_read():
    weight = engine.tensor([[3.0, 4.0], [0.3, 0.4], [6.0, 8.0]])
    emb = nn.Embedding.from_pretrained(weight, max_norm=1.0)
    emb(engine.tensor([0, 1]))
    norms = np.linalg.norm(emb.weight.detach().numpy(), axis=1)
    np.testing.assert_allclose(norms, [1.0, 0.5, 10.0], rtol=1e-5)


def test_float_indices_are_refused():
    with pytest.raises(RuntimeError, match="indices"):
        nn.Embedding(3, 2)(engine.tensor([0.0, 1.0]))


@pytest.mark.torch
def test_embedding_matches_torch_nn(torch):
    theirs = torch.nn.Embedding(6, 3, padding_idx=2).double()
    ours = nn.Embedding(6, 3, padding_idx=2, dtype=engine.float64)
    assert repr(ours) == repr(theirs)
    ours.load_state_dict({"weight": engine.tensor(theirs.weight.detach().numpy())})
    idx = [[1, 2, 5], [5, 5, 0]]
    t_out, e_out = theirs(torch.tensor(idx)), ours(engine.tensor(idx))
    assert e_out.grad_fn.name() == t_out.grad_fn.name() == "EmbeddingBackward0"
    (t_out**2).sum().backward()
    (e_out**2).sum().backward()
    np.testing.assert_allclose(ours.weight.grad.numpy(), theirs.weight.grad.numpy(), rtol=1e-12)
