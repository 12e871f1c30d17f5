"""Pytrees: nests of tuples, lists, dicts and named tuples, flattened to their leaves and rebuilt.

``engine.func``'s transforms take and return pytrees of Tensors (a model's
parameters as a dict, ``(output, aux)`` tuples), as ``torch.utils._pytree``
lets ``torch.func`` do. ``tree_flatten`` gives the leaves in PyTorch's order
(dict keys in insertion order) and a ``TreeSpec`` that ``tree_unflatten``
rebuilds the same structure from; ``broadcast_prefix`` spreads a prefix tree
(``in_dims=(0, None)``, ``out_dims=0``) over a full one, as ``vmap`` reads it.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["TreeSpec", "broadcast_prefix", "tree_flatten", "tree_leaves", "tree_map", "tree_unflatten"]


def _is_namedtuple(value) -> bool:
    return isinstance(value, tuple) and hasattr(type(value), "_fields")


def _children(value):
    """``(kind, context, children)`` of a node, or None for a leaf."""
    if _is_namedtuple(value):
        return "namedtuple", type(value), list(value)
    if isinstance(value, tuple):
        return "tuple", None, list(value)
    if isinstance(value, list):
        return "list", None, list(value)
    if isinstance(value, OrderedDict):
        return "OrderedDict", list(value.keys()), list(value.values())
    if isinstance(value, dict):
        return "dict", list(value.keys()), list(value.values())
    return None


class TreeSpec:
    """The structure of a pytree: a node kind, its context (dict keys, the named tuple's type) and
    its children's specs; a leaf has kind None."""

    __slots__ = ("children", "context", "kind", "num_leaves")

    def __init__(self, kind, context, children):
        self.kind, self.context, self.children = kind, context, children
        self.num_leaves = 1 if kind is None else sum(c.num_leaves for c in children)

    def is_leaf(self) -> bool:
        return self.kind is None

    def __eq__(self, other):
        return (isinstance(other, TreeSpec) and self.kind == other.kind and self.context == other.context
                and self.children == other.children)

    def __repr__(self) -> str:
        if self.kind is None:
            return "*"
        inner = ", ".join(repr(c) for c in self.children)
        return f"TreeSpec({self.kind}, {self.context}, [{inner}])"


_LEAF = TreeSpec(None, None, [])


def tree_flatten(tree):
    """``(leaves, spec)``."""
    leaves: list = []
    return leaves, _flatten(tree, leaves)


def _flatten(tree, leaves) -> TreeSpec:
    node = _children(tree)
    if node is None:
        leaves.append(tree)
        return _LEAF
    kind, context, children = node
    return TreeSpec(kind, context, [_flatten(c, leaves) for c in children])


def tree_leaves(tree) -> list:
    return tree_flatten(tree)[0]


def tree_unflatten(leaves, spec: TreeSpec):
    """The pytree of ``spec``'s structure holding ``leaves`` in order."""
    leaves = list(leaves)
    if len(leaves) != spec.num_leaves:
        raise ValueError(f"tree_unflatten(leaves, spec): the spec has {spec.num_leaves} leaves, got {len(leaves)}")
    iterator = iter(leaves)
    return _build(spec, iterator)


def _build(spec, leaves):
    if spec.kind is None:
        return next(leaves)
    children = [_build(c, leaves) for c in spec.children]
    if spec.kind == "tuple":
        return tuple(children)
    if spec.kind == "list":
        return children
    if spec.kind == "namedtuple":
        return spec.context(*children)
    mapping = OrderedDict if spec.kind == "OrderedDict" else dict
    return mapping(zip(spec.context, children))


def tree_map(fn, tree):
    leaves, spec = tree_flatten(tree)
    return tree_unflatten([fn(leaf) for leaf in leaves], spec)


def broadcast_prefix(prefix, spec: TreeSpec):
    """The leaves of ``prefix`` repeated over ``spec``'s leaves below each of them; None when
    ``prefix`` is not a prefix of the structure (a leaf of ``prefix`` covers a whole subtree)."""
    result: list = []
    return result if _broadcast(prefix, spec, result) else None


def _broadcast(prefix, spec, result) -> bool:
    node = _children(prefix)
    if node is None:
        result.extend([prefix] * spec.num_leaves)
        return True
    kind, context, children = node
    if spec.kind is None:
        return False
    same_kind = kind == spec.kind or {kind, spec.kind} <= {"dict", "OrderedDict"}
    if not same_kind or len(children) != len(spec.children):
        return False
    if kind in ("dict", "OrderedDict"):
        if set(context) != set(spec.context):
            return False
        by_key = dict(zip(context, children))
        children = [by_key[k] for k in spec.context]
    return all(_broadcast(c, s, result) for c, s in zip(children, spec.children))
