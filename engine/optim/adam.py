"""Adam and AdamW (decoupled weight decay), with AMSGrad, following PyTorch's algorithm.

    m = beta1 m + (1 - beta1) g            (computed as m.lerp_(g, 1 - beta1))
    v = beta2 v + (1 - beta2) g^2
    v_max = max(v_max, v)                   (amsgrad)
    p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

Adam adds ``weight_decay * p`` to g; AdamW instead scales p by ``1 - lr * weight_decay``.
"""

from __future__ import annotations

from engine import backend
from engine.optim.optimizer import Optimizer, check_nonnegative


class Adam(Optimizer):
    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, *,
                 maximize=False, foreach=None, capturable=False, differentiable=False, fused=None,
                 decoupled_weight_decay=None):
        check_nonnegative(lr=lr, eps=eps)
        for i, beta in enumerate(betas):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {beta}")
        check_nonnegative(weight_decay=weight_decay)
        decoupled = self._decoupled if decoupled_weight_decay is None else bool(decoupled_weight_decay)
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay, "amsgrad": amsgrad,
                    "maximize": maximize, "foreach": foreach, "capturable": capturable,
                    "differentiable": differentiable, "fused": fused, "decoupled_weight_decay": decoupled}
        super().__init__(params, defaults)

    def _update_parameter(self, group, param, p, g, step):
        beta1, beta2 = group["betas"]
        amsgrad = group["amsgrad"]
        m = self._state_buffer(param, "exp_avg")
        v = self._state_buffer(param, "exp_avg_sq")
        v_max = self._state_buffer(param, "max_exp_avg_sq") if amsgrad else v
        step_size = -group["lr"] / (1 - beta1**step)
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        # Scalar arithmetic stays on the host in double precision, as PyTorch's does.
        _adam_step(backend.namespace_of(p), p, g, m, v, v_max, 1 - beta1, beta2, 1 - beta2, step_size,
                   bias_correction2_sqrt, group["eps"], amsgrad=amsgrad)


@backend.fused
def _adam_step(xp, p, g, m, v, v_max, one_minus_beta1, beta2, one_minus_beta2, step_size, bias_correction2_sqrt,
               eps, *, amsgrad):
    """One Adam step on ``p``, ``m``, ``v`` (and ``v_max``) in place: one kernel on the GPU."""
    m += one_minus_beta1 * (g - m)
    v *= beta2
    v += one_minus_beta2 * (g * g)
    if amsgrad:
        xp.maximum(v_max, v, out=v_max)
        v = v_max
    p += step_size * m / (xp.sqrt(v) / bias_correction2_sqrt + eps)
    return p


class AdamW(Adam):
    """Adam with decoupled weight decay (default 0.01), as ``torch.optim.AdamW``."""

    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False, foreach=None, capturable=False, differentiable=False, fused=None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize, foreach=foreach,
                         capturable=capturable, differentiable=differentiable, fused=fused)
