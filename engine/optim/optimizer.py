"""``Optimizer``: parameter groups, per-parameter state, ``zero_grad`` and state dicts.

``step()`` calls ``_update(group)`` under no_grad for each parameter group.
The default ``_update`` does what Adam, Adagrad and RMSprop share for each
parameter that has a grad (negate it for ``maximize``, count the step, add
the weight decay) and hands the rest to the subclass's ``_update_parameter``;
SGD overrides ``_update`` whole. Updates work on the parameters' arrays in
place (as PyTorch's kernels do) and bump each parameter's version counter,
exactly as an in-place op would, so a graph that saved a parameter before the
step refuses to run backward afterwards.
"""

from __future__ import annotations

import copy

from engine import backend
from engine.autograd.grad_mode import enable_grad, no_grad
from engine.nn.module import zero_grad_
from engine.tensor import Tensor

# PyTorch's words for the hyperparameters its optimizers check ("Invalid learning rate: -1").
_CHECK_WORDS = {"lr": "learning rate", "eps": "epsilon value"}


def check_nonnegative(**values) -> None:
    """PyTorch's constructor checks, in the order given: ``ValueError("Invalid <what>: <value>")``
    for the first negative hyperparameter."""
    for name, value in values.items():
        if value < 0.0:
            raise ValueError(f"Invalid {_CHECK_WORDS.get(name, name + ' value')}: {value}")


class _Required:
    def __repr__(self) -> str:
        return "<required parameter>"


required = _Required()


class Optimizer:
    """Base class: holds ``param_groups`` (dicts with "params" and hyperparameters) and ``state``."""

    def __init__(self, params, defaults: dict):
        self.defaults = defaults
        self.state: dict = {}
        self.param_groups: list[dict] = []
        if isinstance(params, Tensor):
            raise TypeError(
                "params argument given to the optimizer should be an iterable of Tensors or dicts, "
                f"but got {type(params).__name__}"
            )
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, param_group: dict) -> None:
        group = dict(param_group)
        params = group["params"]
        group["params"] = [params] if isinstance(params, Tensor) else list(params)
        for param in group["params"]:
            if not isinstance(param, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, but one of the params is {type(param).__name__}")
            if not param.is_leaf:
                raise ValueError("can't optimize a non-leaf Tensor")
        for name, default in self.defaults.items():
            if default is required and name not in group:
                raise ValueError(f"parameter group didn't specify a value of required optimization parameter {name}")
            group.setdefault(name, default)
        ids = {id(p) for p in group["params"]}
        if len(ids) != len(group["params"]):
            raise ValueError("optimizer contains a parameter group with duplicate parameters")
        for other in self.param_groups:
            if ids & {id(p) for p in other["params"]}:
                raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop every parameter's grad (default), or zero it in place with ``set_to_none=False``."""
        for group in self.param_groups:
            for param in group["params"]:
                zero_grad_(param, set_to_none)

    def step(self, closure=None):
        """One update of every parameter that has a grad; returns the closure's loss if given."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        with no_grad():
            for group in self.param_groups:
                for part, scope in _by_device(group):
                    if scope is None:
                        self._update(part)
                    else:  # parameters on a CUDA device (cuda:1...): updated there
                        with scope:
                            self._update(part)
        return loss

    def _update(self, group: dict) -> None:
        """Update each parameter of ``group`` that has a grad, in place.

        ``g`` reaches ``_update_parameter`` negated for ``maximize`` and with
        L2 weight decay added (``g + wd p``); with ``decoupled_weight_decay``
        in the group (AdamW) ``p`` is scaled by ``1 - lr wd`` instead.
        """
        weight_decay, maximize = group["weight_decay"], group["maximize"]
        decoupled = group.get("decoupled_weight_decay", False)
        for param in group["params"]:
            grad = param._grad
            if grad is None:
                continue
            p, g = param._data, grad._data
            if maximize:
                g = -g
            state = self.state.setdefault(param, {})
            step = state["step"] = state.get("step", 0) + 1
            if weight_decay != 0:
                if decoupled:
                    p *= 1 - group["lr"] * weight_decay
                else:
                    g = g + weight_decay * p
            self._update_parameter(group, param, p, g, step)
            param._version_counter[0] += 1

    def _update_parameter(self, group: dict, param, p, g, step: int) -> None:
        """Apply the update rule to ``p`` (``param``'s array) given its gradient ``g`` at ``step`` (1 first)."""
        raise NotImplementedError

    def _state_buffer(self, param, name: str, fill: float = 0.0):
        """The state tensor ``name`` of ``param`` (created filled with ``fill``), as an array."""
        state = self.state.setdefault(param, {})
        buffer = state.get(name)
        if buffer is None:
            xp = backend.namespace_of(param._data)
            with backend.on_device(param._data):  # Adagrad makes its buffers before any step()
                buffer = state[name] = Tensor._make(xp.full(param._data.shape, fill, dtype=param._data.dtype))
        return buffer._data

    # ---- state dicts --------------------------------------------------------

    def state_dict(self) -> dict:
        """``{"state": {index: {...}}, "param_groups": [{..., "params": [indices]}]}`` as PyTorch's."""
        index = {}
        groups = []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            packed["params"] = []
            for param in group["params"]:
                index.setdefault(id(param), len(index))
                packed["params"].append(index[id(param)])
            groups.append(packed)
        state = {}
        for group in self.param_groups:
            for param in group["params"]:
                if param in self.state:
                    state[index[id(param)]] = self.state[param]
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a ``state_dict()`` (copied; tensors cast to each parameter's dtype)."""
        state_dict = copy.deepcopy(state_dict)
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        params = {}
        for mine, theirs in zip(self.param_groups, groups):
            if len(mine["params"]) != len(theirs["params"]):
                raise ValueError(
                    "loaded state dict contains a parameter group that doesn't match the size of optimizer's group"
                )
            params.update(zip(theirs["params"], mine["params"]))
        self.state = {}
        for key, values in state_dict["state"].items():
            param = params[int(key)]
            self.state[param] = {name: _cast_like(value, param) for name, value in values.items()}
        for mine, theirs in zip(self.param_groups, groups):
            mine.update({k: v for k, v in theirs.items() if k != "params"})

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines.extend(f"    {key}: {group[key]}" for key in sorted(group) if key != "params")
        lines.append(")")
        return "\n".join(lines)


def _cast_like(value, param):
    if isinstance(value, Tensor):
        array = value._data
    elif backend.is_array(value):
        array = value
    else:
        return value
    if array.dtype.kind == "f":
        array = backend.to_device(array, param.device).astype(param._data.dtype, copy=True)
    return Tensor._make(array)


def _by_device(group: dict) -> tuple:
    """``(group, scope)`` pairs that split a group by the devices of its parameters. The updates
    run on arrays, outside apply, so each part runs with its parameters' CUDA device current
    (``scope``, ``backend.on_device``). A group on the CPU is itself, unsplit, with no scope."""
    params = group["params"]
    if all(type(p._data) is backend.ndarray for p in params):
        return ((group, None),)
    parts: dict = {}
    for param in params:
        parts.setdefault(backend.device_of(param._data), []).append(param)
    return tuple(({**group, "params": ps}, backend.on_device(ps[0]._data)) for ps in parts.values())
