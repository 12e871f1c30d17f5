"""Adagrad, following PyTorch's algorithm: s += g^2; p -= lr / (1 + (t - 1) lr_decay) * g / (sqrt(s) + eps)."""

from __future__ import annotations

from engine import backend
from engine.optim.optimizer import Optimizer, check_nonnegative


class Adagrad(Optimizer):
    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10,
                 foreach=None, *, maximize=False, differentiable=False, fused=None):
        check_nonnegative(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                          initial_accumulator_value=initial_accumulator_value, eps=eps)
        defaults = {"lr": lr, "lr_decay": lr_decay, "eps": eps, "weight_decay": weight_decay,
                    "initial_accumulator_value": initial_accumulator_value, "foreach": foreach,
                    "maximize": maximize, "differentiable": differentiable, "fused": fused}
        super().__init__(params, defaults)
        # PyTorch creates the accumulators eagerly, so state_dict() lists them before the first step.
        for group in self.param_groups:
            for param in group["params"]:
                self.state.setdefault(param, {})["step"] = 0
                self._state_buffer(param, "sum", group["initial_accumulator_value"])

    def _update_parameter(self, group, param, p, g, step):
        total = self._state_buffer(param, "sum", group["initial_accumulator_value"])
        step_size = -group["lr"] / (1 + (step - 1) * group["lr_decay"])
        _adagrad_step(backend.namespace_of(p), p, g, total, step_size, group["eps"])


@backend.fused
def _adagrad_step(xp, p, g, total, step_size, eps):
    """One Adagrad step on ``p`` and ``total`` in place: one kernel on the GPU."""
    total += g * g
    p += (step_size * g) / (xp.sqrt(total) + eps)
    return p
