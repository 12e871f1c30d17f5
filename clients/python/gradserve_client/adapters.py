"""A remote function as an autograd Function of torch or of the engine.

Both libraries have PyTorch's ``autograd.Function`` contract, so one factory
serves both: the forward sends the inputs to ``/evaluate``, the backward sends
them with the incoming gradients to ``/vjp``. The remote function then sits
inside a local graph: gradients flow through it to the tensors before it.
"""

from __future__ import annotations

import numpy as np


def _host(tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()


def autograd_function(lib, remote, names: tuple[str, ...]):
    """``f(*tensors)`` for ``remote``, its arguments the inputs ``names`` in order, in ``lib``'s
    autograd (``lib`` is ``torch`` or ``engine``)."""
    if not names:
        raise TypeError("name the function's inputs in the order the callable takes them, e.g. as_torch('a', 'b')")
    if not hasattr(remote.client, "close"):
        raise TypeError("autograd runs synchronously: build the remote function from a Client, not an AsyncClient")

    def tensor_like(array: np.ndarray, like):
        # np.array copies: a decoded array may be a read-only view of the response's bytes.
        return lib.from_numpy(np.array(array)).to(like.device)

    class RemoteFunction(lib.autograd.Function):
        @staticmethod
        def forward(ctx, *tensors):
            if len(tensors) != len(names):
                raise TypeError(f"expected {len(names)} tensors ({', '.join(names)}), got {len(tensors)}")
            ctx.arrays = [_host(t) for t in tensors]
            outputs = remote.evaluate(inputs=dict(zip(names, ctx.arrays))).outputs
            results = tuple(tensor_like(out, tensors[0]) for out in outputs)
            return results[0] if len(results) == 1 else results

        @staticmethod
        def backward(ctx, *grad_outputs):
            v = _host(grad_outputs[0]) if len(grad_outputs) == 1 else [_host(g) for g in grad_outputs]
            vjp = remote.vjp(inputs=dict(zip(names, ctx.arrays)), v=v).vjp
            grads = vjp if len(names) > 1 else (vjp,)
            return tuple(tensor_like(g, grad_outputs[0]) if needed else None
                         for g, needed in zip(grads, ctx.needs_input_grad))

    return RemoteFunction.apply
