"""The one place where the engine's modules that need each other are connected.

Tensor methods run table ops (``autograd.function.apply``), backward passes,
in-place ops and creation functions, and each of those makes Tensors;
``Op.__call__`` hands Tensors to ``apply``; and ``apply``, recording an op on
a view whose base changed in place, reads the view again through
``autograd.inplace``, which records ops itself. Those modules cannot all
import each other, so the side that cannot names what it needs as a module
global, None until ``connect()`` binds it. ``import engine`` calls
``connect()`` once, after importing every module here, so importing any engine
module (``import engine.ops``) runs it first. Nothing else sets another
module's globals at import.

The seams that change at run time are lists and a hook, not wiring: observers
of every op (``autograd.function.op_observers``: the profiler, budgets, the
service's deadline) and of every backward node (``autograd.backward.
node_observers``), and the tangent propagation that forward-mode AD sets
while a dual level is open (``autograd.function.forward_ad_hook``).
"""

from __future__ import annotations

from engine import op, tensor
from engine.autograd import function
from engine.autograd.backward import backward
from engine.autograd.inplace import apply_inplace, refresh_view
from engine.creation import rand_array, to_array


def connect() -> None:
    """Bind every module global that waits for another module (idempotent)."""
    op.tensor_type = tensor.Tensor
    op.tensor_apply = function.apply
    tensor._apply = function.apply
    tensor._apply_inplace = apply_inplace
    tensor._backward = backward
    tensor._to_array = to_array
    tensor._rand_array = rand_array
    function._refresh_view = refresh_view
