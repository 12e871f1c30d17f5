"""gradcheck / gradgradcheck: the engine's gradients against float64 central differences.

Same signature and meaning as PyTorch's: every input that requires grad is
perturbed one element at a time; the numerical Jacobian is compared with the
analytical one (one backward per output element), element by element, with
``|a - n| <= atol + rtol * |n|``.
"""

from __future__ import annotations

from engine import backend
from engine.autograd.backward import grad as _grad
from engine.autograd.grad_mode import enable_grad, no_grad
from engine.tensor import Tensor


class GradcheckError(RuntimeError):
    pass


def _as_tuple(value):
    return value if isinstance(value, tuple) else (value,)


def _outputs(fn, inputs):
    return [o for o in _as_tuple(fn(*inputs)) if isinstance(o, Tensor)]


def _on_device_of(t: Tensor, array) -> Tensor:
    """A host array as a tensor on ``t``'s device (seeds and cotangents drawn on the host)."""
    return Tensor._make(backend.to_device(array, backend.device_of(t._data)))


def numerical_jacobian(fn, inputs, eps=1e-6):
    """d outputs / d inputs by central differences: one (out_numel, in_numel) array per pair."""
    np = backend.numpy
    outputs = _outputs(fn, inputs)
    jacobians = []
    for t in inputs:
        if not (isinstance(t, Tensor) and t.requires_grad):
            continue
        data = t._data
        flat = data.reshape(-1)
        columns = [np.zeros((o.numel(), flat.size)) for o in outputs]
        for j in range(flat.size):
            original = flat[j].item()
            with no_grad():
                flat[j] = original + eps
                plus = [backend.to_numpy(o._data).astype(np.float64).reshape(-1) for o in _outputs(fn, inputs)]
                flat[j] = original - eps
                minus = [backend.to_numpy(o._data).astype(np.float64).reshape(-1) for o in _outputs(fn, inputs)]
                flat[j] = original
            for column, p, m in zip(columns, plus, minus):
                column[:, j] = (p - m) / (2 * eps)
        jacobians.append(columns)
    return outputs, jacobians


def analytical_jacobian(outputs, inputs, create_graph=False):
    np = backend.numpy
    differentiable = [t for t in inputs if isinstance(t, Tensor) and t.requires_grad]
    result = [[np.zeros((o.numel(), t.numel())) for o in outputs] for t in differentiable]
    for k, out in enumerate(outputs):
        if not out.requires_grad:
            continue
        for i in range(out.numel()):
            seed = np.zeros(out.numel(), dtype=out._data.dtype)
            seed[i] = 1
            grads = _grad(out, differentiable, _on_device_of(out, seed.reshape(out._data.shape)),
                          retain_graph=True, allow_unused=True, create_graph=create_graph)
            for j, g in enumerate(grads):
                if g is not None:
                    result[j][k][i, :] = backend.to_numpy(g._data).reshape(-1)
    return result


def forward_jacobian(fn, inputs):
    """d outputs / d inputs by forward mode, one unit tangent at a time (the layout of
    ``analytical_jacobian``): what ``jvp`` rules, and custom Functions' ``jvp``, give."""
    from engine.autograd import forward_ad

    np = backend.numpy
    differentiable = [t for t in inputs if isinstance(t, Tensor) and t.requires_grad]
    result = None
    for j, t in enumerate(differentiable):
        for index in range(t.numel()):
            with forward_ad.dual_level():
                duals = []
                for value in inputs:
                    if isinstance(value, Tensor) and value.requires_grad:
                        tangent = np.zeros(value._data.shape, dtype=value._data.dtype)
                        if value is t:
                            tangent.reshape(-1)[index] = 1
                        value = forward_ad.make_dual(value.detach(), _on_device_of(value, tangent))
                    duals.append(value)
                outputs = _outputs(fn, duals)
                if result is None:
                    result = [[np.zeros((o.numel(), d.numel())) for o in outputs] for d in differentiable]
                for k, out in enumerate(outputs):
                    tangent = forward_ad.unpack_dual(out).tangent
                    if tangent is not None:
                        result[j][k][:, index] = backend.to_numpy(tangent._data).reshape(-1)
    return result or []


def gradcheck(func, inputs, *, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True, check_forward_ad=False,
              check_backward_ad=True, **_ignored):
    """True when the analytical and numerical Jacobians agree; raises (or returns False) otherwise.

    ``check_forward_ad`` also holds the forward-mode Jacobian to the numerical one;
    ``check_backward_ad=False`` skips the reverse-mode one.
    """
    inputs = _as_tuple(inputs)
    for t in inputs:
        if isinstance(t, Tensor) and t.requires_grad and t.dtype.name != "float64":
            import warnings

            warnings.warn(
                "Input #0 requires gradient and is not a double precision floating point. "
                "gradcheck is only reliable in float64.",
                stacklevel=2,
            )
    outputs, numerical = numerical_jacobian(func, inputs, eps)
    modes = []
    if check_backward_ad:
        modes.append(("", analytical_jacobian(outputs, inputs)))
    if check_forward_ad:
        modes.append(("forward AD: ", forward_jacobian(func, inputs)))
    for mode, analytical in modes:
        report = compare(numerical, analytical, atol, rtol)
        if not report["passed"]:
            if raise_exception:
                raise GradcheckError(
                    f"{mode}Jacobian mismatch for output {report['output']} with respect to input "
                    f"{report['input']}: max abs error {report['max_abs_error']:.3g} (atol={atol}, rtol={rtol})"
                )
            return False
    return True


def compare(numerical, analytical, atol, rtol) -> dict:
    """Worst disagreement between numerical and analytical Jacobians, with where it is."""
    np = backend.numpy
    report = {"passed": True, "max_abs_error": 0.0, "max_rel_error": 0.0, "input": None, "output": None}
    for i, (num_cols, ana_cols) in enumerate(zip(numerical, analytical)):
        for k, (n, a) in enumerate(zip(num_cols, ana_cols)):
            diff = np.abs(a - n)
            abs_error = float(diff.max()) if diff.size else 0.0
            rel_error = float((diff / np.maximum(np.abs(n), 1e-12)).max()) if diff.size else 0.0
            report["max_abs_error"] = max(report["max_abs_error"], abs_error)
            report["max_rel_error"] = max(report["max_rel_error"], rel_error)
            failed = diff.size and not np.all(diff <= atol + rtol * np.abs(n))
            if failed and report["passed"]:
                report.update(passed=False, input=i, output=k)
    return report


def gradgradcheck(func, inputs, grad_outputs=None, *, eps=1e-6, atol=1e-5, rtol=1e-3,
                  raise_exception=True, **_ignored):
    """gradcheck of the first derivative: checks that backward is itself differentiable."""
    np = backend.numpy
    inputs = _as_tuple(inputs)
    differentiable = [t for t in inputs if isinstance(t, Tensor) and t.requires_grad]
    outputs = _outputs(func, inputs)
    if grad_outputs is None:
        rng = np.random.default_rng(0)
        grad_outputs = tuple(
            _on_device_of(o, rng.standard_normal(o._data.shape).astype(o._data.dtype)) for o in outputs
        )

    def first_derivative(*args):
        # Numerical differentiation evaluates this under no_grad; the inner backward needs a graph.
        with enable_grad():
            outs = _outputs(func, args)
            wrt = [a for a in args if isinstance(a, Tensor) and a.requires_grad]
            grads = _grad(outs, wrt, grad_outputs, create_graph=True, allow_unused=True)
        return tuple(g for g in grads if g is not None)

    return gradcheck(first_derivative, tuple(inputs), eps=eps, atol=atol, rtol=rtol,
                     raise_exception=raise_exception) and bool(differentiable)
