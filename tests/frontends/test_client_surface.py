"""What clients may call, derived from the table's declarations: the program whitelist and the graph's ops.

Every entry of ``engine.ops.table`` says whether clients may call it (``public``).
Programs may call the function and method variants of public entries, never the
in-place ones; JSON graphs may name public ops. Internal ops are reachable from
neither.
"""

from __future__ import annotations

import pytest

import engine
from engine import ops
from frontends.graph import GraphError, available_ops, validate
from frontends.program import FUNCTIONS, TENSOR_METHODS, ProgramError, compile_program
from frontends.program_library import COMPOSITE_FUNCTIONS, CREATION, client_variants
from tests.engine.test_ops_surface import _declared, _tensor_methods

TABLE = ops.table


# ---- what clients may call: one declaration --------------------------------------------


def test_programs_may_call_the_variants_of_public_ops_only_out_of_place():
    for name, declaring in TABLE.variants("functions").items():
        allowed = all(op.public and name not in op.inplace for op in declaring)
        assert (name in FUNCTIONS) == allowed, name
    for name, declaring in TABLE.variants("methods").items():
        assert (name in TENSOR_METHODS) == all(op.public for op in declaring), name
    assert not set(TENSOR_METHODS) & _declared("inplace")
    others = set(FUNCTIONS) - set(client_variants("functions")) - set(COMPOSITE_FUNCTIONS) - set(CREATION)
    assert others == {"range", "len", "float", "int", "bool", "round", "list", "tuple", "enumerate", "zip"}


def test_every_whitelisted_method_exists():
    missing = [name for name in TENSOR_METHODS if name not in _tensor_methods()]
    assert not missing


@pytest.mark.parametrize("name", [n for n, op in TABLE.items() if not op.public])
def test_internal_ops_are_callable_neither_from_programs_nor_graphs(name):
    op = TABLE[name]
    assert name not in available_ops()
    node = {"op": name, "inputs": ["a"] * (op.arity or 1), "output": "b"}
    with pytest.raises(GraphError, match="unknown op"):
        validate({"nodes": [node], "outputs": ["b"]}, ["a"])
    for variant in (*op.functions, *op.methods):
        assert variant not in FUNCTIONS and variant not in TENSOR_METHODS
    with pytest.raises(ProgramError):
        compile_program(f"return {name}(a)", ["a"])(engine.ones(2))


@pytest.mark.parametrize("name", [n for n, op in TABLE.items() if op.public])
def test_public_ops_are_graph_ops(name):
    op = TABLE[name]
    assert name in available_ops()
    node = {"op": name, "inputs": ["a"] * (op.arity or 1), "output": "b"}
    try:
        validate({"nodes": [node], "outputs": ["b"]}, ["a"])
    except GraphError as error:  # a missing attribute or the like, never an unknown op
        assert "unknown op" not in str(error)
