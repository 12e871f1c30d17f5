"""RMSprop, following PyTorch's algorithm.

v = alpha v + (1 - alpha) g^2; centered subtracts the square of the running mean of g;
avg = sqrt(v) + eps; with momentum b = mu b + g / avg and p -= lr b, else p -= lr g / avg.
"""

from __future__ import annotations

from engine import backend
from engine.optim.optimizer import Optimizer, check_nonnegative


class RMSprop(Optimizer):
    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False,
                 capturable=False, foreach=None, maximize=False, differentiable=False):
        check_nonnegative(lr=lr, eps=eps, momentum=momentum, weight_decay=weight_decay, alpha=alpha)
        defaults = {"lr": lr, "alpha": alpha, "eps": eps, "weight_decay": weight_decay, "momentum": momentum,
                    "centered": centered, "capturable": capturable, "foreach": foreach, "maximize": maximize,
                    "differentiable": differentiable}
        super().__init__(params, defaults)

    def _update_parameter(self, group, param, p, g, step):
        centered, momentum = group["centered"], group["momentum"]
        square_avg = self._state_buffer(param, "square_avg")
        # Unused buffers are stood in for by square_avg: the kernel's arguments stay arrays.
        grad_avg = self._state_buffer(param, "grad_avg") if centered else square_avg
        buf = self._state_buffer(param, "momentum_buffer") if momentum > 0 else square_avg
        # Scalar arithmetic stays on the host in double precision, as PyTorch's does.
        _rmsprop_step(backend.namespace_of(p), p, g, square_avg, grad_avg, buf, group["lr"], -group["lr"],
                      group["alpha"], 1 - group["alpha"], group["eps"], momentum, centered=centered,
                      use_momentum=momentum > 0)


@backend.fused
def _rmsprop_step(xp, p, g, square_avg, grad_avg, buf, lr, minus_lr, alpha, one_minus_alpha, eps, momentum, *,
                  centered, use_momentum):
    """One RMSprop step on ``p`` and its buffers in place: one kernel on the GPU."""
    square_avg *= alpha
    square_avg += one_minus_alpha * (g * g)
    if centered:
        grad_avg += one_minus_alpha * (g - grad_avg)
        avg = xp.sqrt(square_avg - grad_avg * grad_avg) + eps
    else:
        avg = xp.sqrt(square_avg) + eps
    if use_momentum:
        buf *= momentum
        buf += g / avg
        p -= lr * buf
    else:
        p += (minus_lr * g) / avg
    return p
