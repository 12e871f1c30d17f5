"""Modules as functions of their parameters: ``functional_call`` and ``stack_module_state``.

``functional_call(module, params_and_buffers, args)`` runs ``module`` with the
given tensors standing in for its parameters and buffers (by their
``named_parameters`` names, "layer.weight"), and puts the module's own back
afterwards, even when the call raises: the function ``grad``, ``vmap`` and
the other transforms need to differentiate or batch over a model's weights.
``stack_module_state(models)`` stacks the same-named tensors of several
models of one architecture along a new leading axis, so ``vmap`` over
``functional_call`` runs an ensemble at once.
"""

from __future__ import annotations

from engine import ops
from engine.tensor import Tensor

__all__ = ["functional_call", "stack_module_state"]


def _owner(module, name):
    """``(submodule, attribute)`` for a dotted name such as "0.weight"."""
    *path, attribute = name.split(".")
    owner = module
    for part in path:
        owner = owner._modules[part] if part in owner.__dict__.get("_modules", {}) else getattr(owner, part)
    return owner, attribute


def _registry_of(owner, attribute):
    for registry in ("_parameters", "_buffers"):
        if attribute in owner.__dict__.get(registry, {}):
            return owner.__dict__[registry]
    return None


def functional_call(module, parameter_and_buffer_dicts, args=None, kwargs=None, *, tie_weights=True, strict=False):
    """``module(*args, **kwargs)`` with the named tensors of ``parameter_and_buffer_dicts`` (a dict, or
    a tuple of dicts) in place of the module's parameters and buffers of those names."""
    if isinstance(parameter_and_buffer_dicts, dict):
        replacements = dict(parameter_and_buffer_dicts)
    else:
        replacements = {}
        for mapping in parameter_and_buffer_dicts:
            repeated = set(replacements) & set(mapping)
            if repeated:
                raise ValueError(f"{sorted(repeated)} appeared in multiple dictionaries; behavior of "
                                 "functional call is ambiguous")
            replacements.update(mapping)
    if strict:
        expected = {n for n, _ in module.named_parameters()} | {n for n, _ in module.named_buffers()}
        missing, unexpected = sorted(expected - set(replacements)), sorted(set(replacements) - expected)
        if missing or unexpected:
            raise RuntimeError(f"Error(s) in reparametrizing for {type(module).__name__}: missing keys {missing}, "
                               f"unexpected keys {unexpected}")
    if args is None:
        args = ()
    elif not isinstance(args, tuple):
        args = (args,)
    saved = []
    try:
        for name, value in replacements.items():
            owner, attribute = _owner(module, name)
            registry = _registry_of(owner, attribute)
            saved.append((owner, attribute, registry, registry.get(attribute) if registry is not None else None,
                          owner.__dict__.get(attribute, _ABSENT)))
            if registry is not None:
                registry[attribute] = value
            object.__setattr__(owner, attribute, value)  # forward reads the attribute
        return module(*args, **(kwargs or {}))
    finally:
        for owner, attribute, registry, registered, attribute_value in reversed(saved):
            if registry is not None:
                registry[attribute] = registered
            if attribute_value is _ABSENT:
                owner.__dict__.pop(attribute, None)
            else:
                object.__setattr__(owner, attribute, attribute_value)


_ABSENT = object()


def stack_module_state(models):
    """``(params, buffers)``: each a dict of the models' same-named tensors stacked on a new axis 0;
    the stacked parameters are new leaves that require grad where the models' do."""
    models = list(models)
    if not models:
        raise RuntimeError("stack_module_state: Expected at least one model, got 0.")
    if not (all(m.training for m in models) or not any(m.training for m in models)):
        raise RuntimeError("stack_module_state: Expected all models to have the same training/eval mode.")
    first = type(models[0])
    if any(type(m) is not first for m in models):
        raise RuntimeError("stack_module_state: Expected all models to be of the same class.")

    def stacked(named):
        names = [n for n, _ in named(models[0])]
        result = {}
        for name in names:
            tensors = [dict(named(m))[name] for m in models]
            value = ops.stack([t.detach() for t in tensors], dim=0)
            if isinstance(tensors[0], Tensor) and tensors[0].requires_grad:
                value.requires_grad_()
            result[name] = value
        return result

    return (stacked(lambda m: list(m.named_parameters())), stacked(lambda m: list(m.named_buffers())))
