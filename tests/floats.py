"""How the tests compare floating-point results: within a stated number of ulps of a stated scale.

A result that goes through BLAS or a vectorized kernel can round differently from one machine
to the next. OpenBLAS picks its kernels by CPU (or by ``OPENBLAS_CORETYPE``), and a kernel may
fuse ``y + a * x`` into one rounding or round twice. It splits matrix products and reductions
among threads, so the thread count changes the order of a sum. PyTorch picks its kernels by CPU
capability too. Tests of such results compare within a tolerance stated here, in units in the
last place (ulps) of a scale that says what the error is relative to:

- ``|desired|`` (the default) for a result rounded once or twice;
- the operands' magnitude where a sum may cancel, e.g. ``|p| + |lr * g|`` for ``p - lr * g``:
  fused or not, the result is within one ulp of that of the exact value (half an ulp for
  rounding the product, half for rounding the sum);
- the largest element, for results of sums whose order depends on the kernel or the thread count
  (matrix products, reductions): ``assert_close_up_to_summation_order``.

Bit-for-bit comparisons stay where exactness is a property of our own code: the same code run
twice in one process, a saved state loaded back, copies, indexing, and arithmetic that is exact
in floating point (small integers, powers of two).
"""

from __future__ import annotations

import numpy as np

# Results of matrix products and reductions compared across kernels or thread counts. Measured:
# TinyModel's parameters and gradients after a step and five more backward passes (16 x 1000 ->
# 100 -> 10, float32) stay within 5 ulps of each tensor's largest element across OpenBLAS 0.3.31's
# SkylakeX, Haswell, Sandybridge and Katmai kernels at 1 and 2 threads. 32 leaves room for other
# shapes while still far below what a wrong formula, dtype or a lost update would give.
SUMMATION_ORDER_ULPS = 32


def assert_within_ulps(actual, desired, ulps: float, *, scale=None, err_msg: str = "") -> None:
    """Assert ``|actual - desired| <= ulps * spacing(scale)`` elementwise.

    ``spacing`` is the distance from ``|scale|`` to the next larger number of ``actual``'s dtype
    (float64 when ``actual`` holds no floats, and for a Python float: pass a float32 number as
    ``np.float32``); ``scale`` defaults to ``|desired|`` and broadcasts against it. ``desired``
    may be wider than ``actual`` (an exact float64 value for a float32 result). NaNs must sit at
    the same places and infinities must be equal.
    """
    actual = np.asarray(actual)
    desired = np.asarray(desired)
    assert actual.shape == desired.shape, f"shapes differ: {actual.shape} != {desired.shape}. {err_msg}"
    dtype = np.finfo(actual.dtype).dtype if actual.dtype.kind in "fc" else np.dtype(np.float64)
    magnitude = np.abs(desired) if scale is None else np.abs(np.asarray(scale))
    bound = ulps * np.spacing(np.broadcast_to(magnitude, desired.shape).astype(dtype)).astype(np.float64)
    wide = np.complex128 if "c" in (actual.dtype.kind, desired.dtype.kind) else np.float64
    wide_actual, wide_desired = actual.astype(wide), desired.astype(wide)
    both_nan = np.isnan(wide_actual) & np.isnan(wide_desired)
    with np.errstate(invalid="ignore"):  # inf - inf: equal infinities pass through ``==``
        difference = np.abs(wide_actual - wide_desired)
        ok = both_nan | (wide_actual == wide_desired) | (difference <= bound)
    if ok.all():
        return
    bad = np.flatnonzero(~ok.reshape(-1))
    worst = bad[np.argmax(np.nan_to_num(difference.reshape(-1)[bad] / bound.reshape(-1)[bad], nan=np.inf))]
    index = np.unravel_index(worst, actual.shape) if actual.shape else ()
    raise AssertionError(
        f"{bad.size} of {actual.size} elements differ by more than {ulps} ulp(s) of their scale. {err_msg}\n"
        f"worst at {tuple(int(i) for i in index)}: actual {actual[index]!r}, desired {desired[index]!r}, "
        f"difference {difference[index]:.3g} = {difference[index] / bound[index] * ulps:.3g} ulps of "
        f"{np.broadcast_to(magnitude, desired.shape)[index]!r}"
    )


def assert_close_up_to_summation_order(actual, desired, ulps: float = SUMMATION_ORDER_ULPS, err_msg: str = "") -> None:
    """``actual`` and ``desired`` compute the same sums, perhaps in another order (another BLAS
    kernel, another thread count): within ``ulps`` ulps of ``desired``'s largest element."""
    desired = np.asarray(desired)
    finite = np.abs(desired[np.isfinite(desired)])
    largest = finite.max() if finite.size else 0.0
    assert_within_ulps(actual, desired, ulps, scale=largest, err_msg=err_msg)
