"""Stochastic gradient descent with momentum, dampening, Nesterov and weight decay (PyTorch's algorithm)."""

from __future__ import annotations

from engine.backend import axpy_
from engine.optim.optimizer import Optimizer, check_nonnegative, required
from engine.tensor import Tensor


class SGD(Optimizer):
    """g = ±grad + wd p; b = mu b + (1 - tau) g (b = g at first); g = g + mu b (Nesterov) or b; p -= lr g."""

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, *,
                 maximize=False, foreach=None, differentiable=False, fused=None):
        check_nonnegative(**({} if lr is required else {"lr": lr}), momentum=momentum, weight_decay=weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        defaults = {"lr": lr, "momentum": momentum, "dampening": dampening, "weight_decay": weight_decay,
                    "nesterov": nesterov, "maximize": maximize, "foreach": foreach,
                    "differentiable": differentiable, "fused": fused}
        super().__init__(params, defaults)

    def _update(self, group):
        lr, momentum, dampening = group["lr"], group["momentum"], group["dampening"]
        weight_decay, nesterov, maximize = group["weight_decay"], group["nesterov"], group["maximize"]
        plain = momentum == 0 and weight_decay == 0 and not maximize
        for param in group["params"]:
            grad = param._grad
            if grad is None:
                continue
            p, g = param._data, grad._data
            if plain:  # the common case, kept short: p -= lr * g
                axpy_(-lr, g, p)
                param._version_counter[0] += 1
                continue
            if maximize:
                g = -g
            if weight_decay != 0:
                g = g.copy()
                axpy_(weight_decay, p, g)  # g + wd * p, as PyTorch's add(alpha=...)
            if momentum != 0:
                state = self.state.setdefault(param, {})
                buffer = state.get("momentum_buffer")
                if buffer is None:
                    buf = g.copy()
                    state["momentum_buffer"] = Tensor._make(buf)
                else:
                    buf = buffer._data
                    buf *= momentum
                    axpy_(1 - dampening, g, buf)
                if nesterov:
                    g = g.copy()
                    axpy_(momentum, buf, g)
                else:
                    g = buf
            axpy_(-lr, g, p)
            param._version_counter[0] += 1
