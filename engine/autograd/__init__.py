"""engine.autograd: reverse mode (``backward``, ``grad``), grad modes, gradcheck.

``functional`` (jacobian, hessian, vjp, jvp, hvp, vhp), ``forward_ad`` and
``profiler`` are submodules loaded on first use.
"""

from engine.autograd.backward import backward, grad
from engine.autograd.function import apply
from engine.autograd.grad_mode import enable_grad, inference_mode, no_grad, set_grad_enabled
from engine.autograd.gradcheck import gradcheck, gradgradcheck
from engine.autograd.graph import Node
from engine.tensor import Tensor

__all__ = [
    "Node",
    "backward",
    "enable_grad",
    "grad",
    "gradcheck",
    "gradgradcheck",
    "inference_mode",
    "no_grad",
    "set_grad_enabled",
]


def __getattr__(name):
    if name in ("functional", "forward_ad", "profiler"):
        import importlib

        return importlib.import_module(f"engine.autograd.{name}")
    raise AttributeError(f"module 'engine.autograd' has no attribute {name!r}")
