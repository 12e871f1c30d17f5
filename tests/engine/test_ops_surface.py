"""The table's declared surface against what exists: Tensor methods, ``engine.<fn>``, and what clients may call.

Every entry of ``engine.ops.table`` declares the functions and methods that
run it (``function=``, ``method=``, ``inplace=``) and whether clients may call
it (``public``). These tests hold the declarations and the code to each other
in both directions, so neither can drift: what an entry declares exists, and
every public Tensor method and ``engine`` function is declared by an entry or
is one of the short lists of things built from them (``frontends.program_library``
keeps those lists, for the programs that may call them). What clients may call,
derived from the same declarations, is tested in ``tests/frontends/test_client_surface.py``.
"""

from __future__ import annotations

import inspect

import pytest

import engine
from engine import functions, ops
from engine.tensor import Tensor
from frontends.program_library import COMPOSITE_FUNCTIONS, COMPOSITE_METHODS
from tests.engine.opcases import cases_for

TABLE = ops.table

# Tensor methods that are neither a variant of one op nor callable by client programs: autograd
# state, conversion out of the engine, device and dtype moves by name, in-place random fills.
NOT_FOR_CLIENTS = {
    "backward", "detach_", "element_size", "nelement", "normal_", "numpy", "register_hook", "requires_grad_",
    "retain_grad", "to", "tolist", "type", "uniform_", "zero_",
}


def _declared(kind) -> set[str]:
    return {name for op in TABLE.values() for name in getattr(op, kind)}


def _tensor_methods() -> set[str]:
    """Tensor's public methods (not its attributes: ``shape``, ``T``, ``grad_fn``...)."""
    return {name for name in dir(Tensor) if not name.startswith("_") and inspect.isfunction(getattr(Tensor, name))}


def _engine_functions() -> set[str]:
    return {
        name for name, value in vars(functions).items()
        if not name.startswith("_") and inspect.isfunction(value) and value.__module__ == functions.__name__
    }


# ---- declared -> exists -------------------------------------------------------------


@pytest.mark.parametrize("name", list(TABLE))
def test_what_an_entry_declares_exists(name):
    op = TABLE[name]
    for method in (*op.methods, *op.inplace):
        assert method in _tensor_methods(), f"{name} declares Tensor.{method}, which does not exist"
    for function in op.functions:
        assert callable(getattr(engine, function, None)), f"{name} declares engine.{function}, which does not exist"
        assert getattr(engine, function) is getattr(functions, function)


def test_in_place_variants_end_in_an_underscore_and_no_other_does():
    for op in TABLE.values():
        assert all(n.endswith("_") for n in op.inplace), op.name
        assert not any(n.endswith("_") for n in op.methods), op.name
        assert all(n in op.inplace for n in op.functions if n.endswith("_")), op.name


# ---- exists -> declared ---------------------------------------------------------------


def test_every_tensor_method_is_declared_or_listed():
    undeclared = _tensor_methods() - _declared("methods") - _declared("inplace") - set(COMPOSITE_METHODS)
    assert undeclared == NOT_FOR_CLIENTS, (
        f"declare in their table entry (method= / inplace=) or list: {sorted(undeclared - NOT_FOR_CLIENTS)}; "
        f"listed but gone: {sorted(NOT_FOR_CLIENTS - undeclared)}"
    )


def test_every_engine_function_is_declared_or_listed():
    undeclared = _engine_functions() - _declared("functions") - set(COMPOSITE_FUNCTIONS)
    assert undeclared == {"is_tensor"}, f"declare these in their table entry (function=): {sorted(undeclared)}"


def test_composites_are_not_table_variants():
    assert not set(COMPOSITE_METHODS) & (_declared("methods") | _declared("inplace"))
    assert not set(COMPOSITE_FUNCTIONS) & _declared("functions")
    assert set(COMPOSITE_METHODS) <= _tensor_methods() and set(COMPOSITE_FUNCTIONS) <= _engine_functions()


# ---- generated variants run their op -----------------------------------------------------


def _recorded(call):
    """The names of the table ops ``call()`` runs."""
    from engine.autograd import function

    seen = []

    class Recorder:
        def before(self, op, inputs, params):
            seen.append(op.name)

        def after(self, op, result):
            pass

    recorder = Recorder()
    function.op_observers.append(recorder)
    try:
        call()
    finally:
        function.op_observers.remove(recorder)
    return seen


def _runs(op, kind, variant) -> bool:
    """Whether ``variant`` runs ``op`` (and it last) on the inputs of one of the op's test cases."""
    for case in cases_for(op.name):
        first, *rest = [engine.tensor(a) for a in case.arrays()]
        if kind == "functions":
            call = lambda: getattr(engine, variant)(first, *rest)  # noqa: B023 - called at once
        else:
            call = lambda: getattr(first, variant)(*rest)  # noqa: B023
        try:
            if _recorded(call)[-1:] == [op.name]:
                return True
        except RuntimeError:
            continue  # inputs this variant refuses (bmm wants 3-D): another case
    return False


@pytest.mark.parametrize("name", [n for n, op in TABLE.items() if op.generic])
def test_variants_of_ops_without_parameters_run_their_op(name):
    op = TABLE[name]
    declared = {kind: TABLE.variants(kind) for kind in ("methods", "inplace", "functions")}
    for kind in declared:
        for variant in getattr(op, kind):
            if declared[kind][variant] == [op]:  # not shared (x.max(y)): a plain call of the op
                assert _runs(op, kind, variant), f"{kind} {variant} does not run {name}"
