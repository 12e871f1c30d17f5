"""engine.autograd: reverse mode (``backward``, ``grad``), grad modes, gradcheck, custom
Functions (``Function``), the graph's nodes and saved-tensor hooks (``graph``), and the
legacy ``Variable``.

``functional`` (jacobian, hessian, vjp, jvp, hvp, vhp), ``forward_ad`` and
``profiler`` are submodules loaded on first use.
"""

from engine.autograd import graph
from engine.autograd.backward import backward, grad
from engine.autograd.custom_function import Function, once_differentiable
from engine.autograd.function import apply
from engine.autograd.grad_mode import enable_grad, inference_mode, no_grad, set_grad_enabled
from engine.autograd.gradcheck import gradcheck, gradgradcheck
from engine.autograd.graph import Node
from engine.autograd.variable import Variable
from engine.tensor import Tensor

__all__ = [
    "Function",
    "Node",
    "Variable",
    "backward",
    "enable_grad",
    "grad",
    "gradcheck",
    "gradgradcheck",
    "inference_mode",
    "no_grad",
    "once_differentiable",
    "set_grad_enabled",
]


def __getattr__(name):
    if name in ("functional", "forward_ad", "profiler"):
        import importlib

        return importlib.import_module(f"engine.autograd.{name}")
    raise AttributeError(f"module 'engine.autograd' has no attribute {name!r}")
