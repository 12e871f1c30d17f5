"""engine.func: ``torch.func``'s composable transforms.

``grad``, ``grad_and_value``, ``vjp``, ``jvp``, ``jacrev``, ``jacfwd`` and
``hessian`` (``transforms``) over pytrees of Tensors; ``vmap`` (``vmap``, on
the batching of ``batching``); ``functional_call`` and
``stack_module_state`` (``stateless``), to run a module with other
parameters, or an ensemble of them under vmap. ``pytree`` has the nests of
tuples, lists and dicts they all take.
"""

from engine.func.stateless import functional_call, stack_module_state
from engine.func.transforms import grad, grad_and_value, hessian, jacfwd, jacrev, jvp, vjp
from engine.func.vmap import vmap

__all__ = ["functional_call", "grad", "grad_and_value", "hessian", "jacfwd", "jacrev", "jvp", "stack_module_state",
           "vjp", "vmap"]
