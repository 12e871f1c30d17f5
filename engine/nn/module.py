"""``Module`` and ``Parameter``: the containers that hold a model's learnable tensors.

As in PyTorch, assigning a ``Parameter`` or a ``Module`` to an attribute of a
module registers it, so ``named_parameters()`` yields ``"layer1.weight"``,
``"0.bias"``... in the order the attributes were set. Registered values also
live in the instance ``__dict__``, so reading ``self.weight`` in ``forward``
costs a plain attribute lookup rather than a ``__getattr__`` call.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

from engine import backend, ops
from engine.autograd.grad_mode import no_grad
from engine.creation import to_array
from engine.tensor import Tensor


class Parameter(Tensor):
    """A Tensor that a Module treats as learnable; it requires grad by default.

    It shares memory with the tensor it is made from, like ``nn.Parameter``.
    """

    __slots__ = ()

    def __init__(self, data=None, requires_grad=True):
        if isinstance(data, Tensor):
            array = data._data
        else:
            array = to_array(data if data is not None else [])
        self._init(array)
        if requires_grad:
            self.requires_grad = True

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()

    def __reduce__(self):
        return (Parameter, (Tensor._make(self._data), self._requires_grad))


class IncompatibleKeys(NamedTuple):
    missing_keys: list
    unexpected_keys: list


class Module:
    """Base class of layers and models: subclass it and define ``forward``."""

    training: bool

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f'Module [{type(self).__name__}] is missing the required "forward" function')

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ---- registration ---------------------------------------------------

    def _registries(self):
        try:
            return self.__dict__["_parameters"], self.__dict__["_buffers"], self.__dict__["_modules"]
        except KeyError:
            raise AttributeError(
                "cannot assign parameters or modules before Module.__init__() call"
            ) from None

    def __setattr__(self, name, value):
        if isinstance(value, (Parameter, Module)):
            parameters, buffers, modules = self._registries()
            for registry in (parameters, buffers, modules):
                registry.pop(name, None)
            (parameters if isinstance(value, Parameter) else modules)[name] = value
        elif "_parameters" in self.__dict__:
            if name in self._parameters:
                if value is not None:
                    raise TypeError(
                        f"cannot assign '{type(value).__name__}' as parameter '{name}' "
                        "(engine.nn.Parameter or None expected)"
                    )
                self._parameters[name] = None
            elif name in self._modules:
                if value is not None:
                    raise TypeError(f"cannot assign '{type(value).__name__}' as child module '{name}'")
                self._modules[name] = None
            elif name in self._buffers:
                self._buffers[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        for registry in (self._parameters, self._buffers, self._modules):
            registry.pop(name, None)
        object.__delattr__(self, name)

    def register_parameter(self, name: str, param) -> None:
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot assign '{type(param).__name__}' object to parameter '{name}'")
        self._parameters[name] = param
        object.__setattr__(self, name, param)

    def register_buffer(self, name: str, tensor, persistent: bool = True) -> None:
        self._buffers[name] = tensor
        object.__setattr__(self, name, tensor)

    def add_module(self, name: str, module) -> None:
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        self._modules[name] = module
        object.__setattr__(self, name, module)

    register_module = add_module

    def get_submodule(self, target: str) -> Module:
        module = self
        for part in target.split(".") if target else ():
            if part not in module._modules:
                raise AttributeError(f"{type(module).__name__} has no attribute `{part}`")
            module = module._modules[part]
        return module

    # ---- traversal --------------------------------------------------------

    def named_modules(self, memo=None, prefix: str = "", remove_duplicate: bool = True):
        if memo is None:
            memo = set()
        if remove_duplicate:
            if self in memo:
                return
            memo.add(self)
        yield prefix, self
        for name, module in self._modules.items():
            if module is None:
                continue
            yield from module.named_modules(memo, f"{prefix}.{name}" if prefix else name, remove_duplicate)

    def modules(self):
        for _, module in self.named_modules():
            yield module

    def named_children(self):
        seen = set()
        for name, module in self._modules.items():
            if module is not None and module not in seen:
                seen.add(module)
                yield name, module

    def children(self):
        for _, module in self.named_children():
            yield module

    def _named_members(self, registry, prefix, recurse, remove_duplicate=True):
        seen = set()
        modules = self.named_modules(prefix=prefix) if recurse else [(prefix, self)]
        for module_prefix, module in modules:
            for name, value in getattr(module, registry).items():
                if value is None or (remove_duplicate and value in seen):
                    continue
                seen.add(value)
                yield (f"{module_prefix}.{name}" if module_prefix else name), value

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        yield from self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse: bool = True):
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_buffers(self, prefix: str = "", recurse: bool = True):
        yield from self._named_members("_buffers", prefix, recurse)

    def buffers(self, recurse: bool = True):
        for _, buffer in self.named_buffers(recurse=recurse):
            yield buffer

    def apply(self, fn):
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    # ---- modes and gradients ----------------------------------------------

    def train(self, mode: bool = True) -> Module:
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        for param in self.parameters():
            param.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        for param in self.parameters():
            zero_grad_(param, set_to_none)

    # ---- state ------------------------------------------------------------

    def state_dict(self, destination=None, prefix: str = "", keep_vars: bool = False):
        """name -> tensor for every parameter and buffer (detached, sharing memory)."""
        destination = OrderedDict() if destination is None else destination
        for name, module in self.named_modules(prefix=prefix.rstrip(".")):
            for registry in (module._parameters, module._buffers):
                for key, value in registry.items():
                    if value is not None:
                        full = f"{name}.{key}" if name else key
                        destination[full] = value if keep_vars else value.detach()
        return destination

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False) -> IncompatibleKeys:
        """Copy values into this module's parameters and buffers (under no_grad)."""
        own = self.state_dict(keep_vars=True)
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        errors = []
        if strict:
            if unexpected:
                errors.append("Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected) + ".")
            if missing:
                errors.append("Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing) + ".")
        for key, target in own.items():
            if key not in state_dict:
                continue
            source = state_dict[key]
            shape = tuple(getattr(source, "shape", ()))
            if shape != tuple(target.shape):
                errors.append(
                    f"size mismatch for {key}: copying a param with shape {list(shape)} from checkpoint, "
                    f"the shape in current model is {list(target.shape)}."
                )
        if errors:
            raise RuntimeError(
                f"Error(s) in loading state_dict for {type(self).__name__}:\n\t" + "\n\t".join(errors)
            )
        with no_grad():
            for key, target in own.items():
                if key in state_dict:
                    target.copy_(state_dict[key])
        return IncompatibleKeys(missing, unexpected)

    def to(self, *args, dtype=None, device=None) -> Module:
        """Convert parameters, grads and buffers (dtype and/or device) in place; Parameters stay Parameters."""
        for arg in args:
            if isinstance(arg, backend.DType) or (isinstance(arg, str) and arg in backend.DTYPES):
                dtype = arg
            else:
                device = arg

        def convert(array):
            if dtype is not None:
                array = ops.to_dtype(array, dtype=backend.dtype(dtype).name)
            if device is not None:
                array = backend.to_device(array, backend.device(device))
            return array

        for module in self.modules():
            for param in module._parameters.values():
                if param is not None:
                    param._data = convert(param._data)
                    if param._grad is not None:
                        param._grad = Tensor._make(convert(param._grad._data))
            for key, buffer in module._buffers.items():
                if buffer is not None:
                    module.register_buffer(key, Tensor._make(convert(buffer._data)))
        return self

    def double(self) -> Module:
        return self.to("float64")

    def float(self) -> Module:
        return self.to("float32")

    # ---- printing ---------------------------------------------------------

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = []
        extra = self.extra_repr()
        if extra:
            lines.extend(extra.split("\n"))
        for name, module in self._modules.items():
            child = repr(module).replace("\n", "\n  ")
            lines.append(f"({name}): {child}")
        if not lines:
            return f"{type(self).__name__}()"
        if len(lines) == 1 and not self._modules:
            return f"{type(self).__name__}({lines[0]})"
        return f"{type(self).__name__}(\n  " + "\n  ".join(lines) + "\n)"


def zero_grad_(param, set_to_none: bool) -> None:
    """PyTorch's zero_grad for one tensor: drop the grad, or zero it in place."""
    grad = param._grad
    if grad is None:
        return
    if set_to_none:
        param._grad = None
        return
    if grad.grad_fn is not None:
        grad.detach_()
    else:
        grad._requires_grad = False
    grad._data[...] = 0
    grad._version_counter[0] += 1
