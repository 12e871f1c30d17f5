"""Grad mode: whether ops record the autograd graph.

The flag lives in a ``contextvars.ContextVar``, never a global, so two
requests served at once (threads or asyncio tasks) cannot see each other's
``no_grad``. Each manager works as a context manager and as a decorator.
"""

from __future__ import annotations

import functools
import inspect
from contextvars import ContextVar

_grad_enabled: ContextVar[bool] = ContextVar("grad_enabled", default=True)

is_grad_enabled = _grad_enabled.get


class _GradModeManager:
    """Sets grad mode for a ``with`` block or for every call of a decorated function."""

    mode: bool = True

    def __init__(self):
        self._tokens = []

    def __enter__(self):
        self._tokens.append(_grad_enabled.set(self.mode))
        return self

    def __exit__(self, *exc_info):
        _grad_enabled.reset(self._tokens.pop())
        return False

    def clone(self):
        return type(self)()

    def __call__(self, fn):
        if inspect.isgeneratorfunction(fn):
            raise TypeError(f"{type(self).__name__} cannot decorate generator function {fn.__name__}")

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with self.clone():
                return fn(*args, **kwargs)

        return wrapper


class no_grad(_GradModeManager):  # noqa: N801 - PyTorch's name
    """Disable graph recording: results of ops have ``requires_grad=False``."""

    mode = False


class enable_grad(_GradModeManager):  # noqa: N801 - PyTorch's name
    """Enable graph recording inside a ``no_grad`` region."""

    mode = True


class inference_mode(_GradModeManager):  # noqa: N801 - PyTorch's name
    """Like no_grad (the engine keeps no extra bookkeeping to skip)."""

    def __init__(self, mode: bool = True):
        super().__init__()
        self.mode = not mode

    def clone(self):
        return type(self)(not self.mode)


class set_grad_enabled(_GradModeManager):  # noqa: N801 - PyTorch's name
    """Set grad mode to ``mode``; takes effect at once, like PyTorch, and undoes on exit."""

    def __init__(self, mode: bool):
        super().__init__()
        self.mode = bool(mode)
        self._applied = _grad_enabled.set(self.mode)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        _grad_enabled.reset(self._applied)
        return False

    def clone(self):
        manager = type(self).__new__(type(self))
        manager.mode = self.mode
        manager._tokens = []
        return manager

    def __call__(self, fn):
        _grad_enabled.reset(self._applied)
        mode = self.mode

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            token = _grad_enabled.set(mode)
            try:
                return fn(*args, **kwargs)
            finally:
                _grad_enabled.reset(token)

        return wrapper
