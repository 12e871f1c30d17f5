"""``engine.compile``: trace a function once per input signature, replay it on arrays.

- ``tracer``: what a traced call records (table ops, guards, random draws) through the hooks
  in ``apply``, ``Tensor.item``/``tolist``/``numpy`` and ``rand_array``;
- ``plan``: a trace as steps on arrays, and their replay (and re-run on Tensors);
- ``buffers``: the buffers large plans write into (ufunc ``out=``) and their pool;
- ``guards``: the signature that decides which calls share plans;
- ``compiled``: ``CompiledFunction`` (the variants, the fallbacks, ``explain()``) and
  ``CompiledFunctionBackward``, the one backward node of a compiled call.
"""

from __future__ import annotations

from engine.compiler.compiled import CallRecord, CompiledFunction, CompiledFunctionBackward


def compile(model=None, *, max_variants=8, fullgraph=False, dynamic=None, backend=None, mode=None,  # noqa: A001
            options=None, disable=False):
    """PyTorch's ``torch.compile``: ``engine.compile(fn)``, ``@engine.compile``,
    ``@engine.compile(max_variants=4)``, or ``engine.compile(module)``.

    ``dynamic``, ``backend``, ``mode`` and ``options`` are accepted for PyTorch's signature and
    change nothing: there is one backend, plans on arrays. ``fullgraph=True`` raises on a
    graph break instead of running eagerly; ``disable=True`` always runs eagerly.
    """
    if model is None:
        return lambda fn: CompiledFunction(fn, max_variants, fullgraph, disable)
    return CompiledFunction(model, max_variants, fullgraph, disable)


__all__ = ["CallRecord", "CompiledFunction", "CompiledFunctionBackward", "compile"]
