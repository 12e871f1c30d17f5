"""engine/func/pytree.py: flattening and rebuilding nests, and spreading a prefix over a tree."""

from __future__ import annotations

from collections import OrderedDict, namedtuple

from engine.func.pytree import broadcast_prefix, tree_flatten, tree_map, tree_unflatten

Pair = namedtuple("Pair", ["a", "b"])


def test_flatten_and_unflatten_round_trip_in_pytorch_order():
    tree = {"w": [1, (2, 3)], "b": Pair(4, {"z": 5, "y": 6}), "o": OrderedDict(k=7), "n": None}
    leaves, spec = tree_flatten(tree)
    assert leaves == [1, 2, 3, 4, 5, 6, 7, None]  # dicts in insertion order; None a leaf, as torch.utils._pytree
    rebuilt = tree_unflatten(leaves, spec)
    assert rebuilt == tree and type(rebuilt["b"]) is Pair and type(rebuilt["o"]) is OrderedDict
    assert tree_map(lambda v: None if v is None else v * 10, tree)["b"].b == {"z": 50, "y": 60}


def test_a_prefix_spreads_over_the_subtrees_it_covers():
    _, spec = tree_flatten(({"x": 1, "y": (2, 3)}, 4))
    assert broadcast_prefix(0, spec) == [0, 0, 0, 0]
    assert broadcast_prefix(({"y": None, "x": 1}, 0), spec) == [1, None, None, 0]
    assert broadcast_prefix(((0, 1), 0), spec) is None  # a tuple where the tree has a dict
    assert broadcast_prefix(({"x": 1}, 0), spec) is None  # a missing key
