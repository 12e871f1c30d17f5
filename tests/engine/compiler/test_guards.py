"""Signatures: which calls share plans (engine.compiler.guards)."""

from __future__ import annotations

import pytest

import engine
from engine.compiler import guards


def _key(*args, **kwargs):
    names = tuple(sorted(kwargs))
    return guards.signature(args + tuple(kwargs[n] for n in names), names)


def test_tensor_shape_dtype_and_requires_grad_are_in_the_signature():
    base = _key(engine.zeros(3))
    assert _key(engine.ones(3)) == base  # values are not
    assert _key(engine.zeros(4)) != base
    assert _key(engine.zeros(3, dtype=engine.float64)) != base
    assert _key(engine.zeros(3, requires_grad=True)) != base


def test_grad_mode_and_keyword_names_are_in_the_signature():
    x = engine.zeros(2)
    with engine.no_grad():
        no_grad_key = _key(x)
    assert no_grad_key != _key(x)
    assert _key(x, scale=2.0) != _key(x, 2.0)


def test_other_arguments_count_by_value_and_type():
    x = engine.zeros(2)
    assert _key(x, 2) == _key(x, 2)
    assert _key(x, 2) != _key(x, 3)
    assert _key(x, 2) != _key(x, 2.0)
    assert _key(x, [1, 2]) == _key(x, [1, 2]) != _key(x, (1, 2))


@pytest.mark.parametrize("argument", [[engine.zeros(1)], {"w": engine.zeros(1)}], ids=["list", "dict"])
def test_tensors_inside_containers_are_refused(argument):
    with pytest.raises(guards.UnsupportedArgumentError, match="tensor inside"):
        _key(engine.zeros(1), argument)


def test_unhashable_arguments_are_refused():
    with pytest.raises(guards.UnsupportedArgumentError, match="cannot be hashed"):
        _key(engine.zeros(1), {1, 2})


def test_module_state_follows_training_flags_and_parameter_objects():
    model = engine.nn.Sequential(engine.nn.Linear(2, 2), engine.nn.Dropout(0.1))
    modules = list(model.modules())
    before = guards.module_state(modules)
    model.eval()
    assert guards.module_state(modules) != before
    model.train()
    assert guards.module_state(modules) == before
    model[0].weight = engine.nn.Parameter(engine.zeros(2, 2))
    assert guards.module_state(modules) != before
