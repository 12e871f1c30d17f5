"""The engine-facing functions the compute routes call, one per endpoint.

Each takes a validated request model and the settings, decodes the tensors,
compiles the client's function (expr, program or graph) under a ``Budget``,
runs it with the engine, and returns the response content (numpy arrays
inside, serialised by orjson). They are synchronous: routes run them in a
worker thread through ``run_in_worker``, under ``service.runtime.engine_work``
(the per-request budget, op tracking and error wrapping). Grad mode and graphs are per call
(grad mode is a ContextVar), so concurrent requests never share them.
"""

from __future__ import annotations

import functools
import importlib
from collections import Counter
from collections.abc import Callable

import engine
from engine.autograd.graph import AccumulateGrad
from engine.op import numel
from engine.tensor import Tensor
from frontends.budget import Budget, BudgetExceeded
from service import codec, schemas
from service.codec import CodecError, ElementBudget
from service.config import Settings
from service.errors import DeviceUnavailableError, ServiceError
from service.runtime import budget_for, engine_work


def run_in_worker(handler: Callable, request, settings: Settings,
                  on_ops: Callable[[Counter], None]) -> list | codec.Frame:
    """Run ``handler(request, settings)`` under ``engine_work``; return the JSON body (``codec.dumps_parts``),
    or the binary frame (``codec.dumps_frame``) when the request's encoding is ``"binary"``."""
    # Tensors the client's function creates (ones(3), zeros_like...) go where its inputs are.
    requested = getattr(request, "device", "cpu")
    check_device(requested)  # before the device is entered: a 400 naming what is missing
    device = engine.device(requested)
    # On cuda:N, N is also the worker thread's current CUDA device: its ops then need no switch.
    current_gpu = engine.cuda.device(device.index if device.type == "cuda" else None)
    # Every tensor the handler encodes is counted against the response limit (before it is copied).
    with engine_work(settings, on_ops), device, current_gpu, codec.response_limit(settings.max_response_elements):
        content = handler(request, settings)
        if getattr(request, "encoding", "json") == "binary":
            return codec.dumps_frame(content, codec.SKELETON_RESERVE_BYTES)
        return codec.dumps_parts(content, codec.SKELETON_RESERVE_BYTES)


# ---- inputs and the client's function -------------------------------------------------


class Call:
    """A decoded request: input names, their tensors (positional order), the compiled function."""

    def __init__(self, names: list[str], tensors: list[Tensor], fn: Callable, elements: ElementBudget):
        self.names = names
        self.tensors = tensors
        self.fn = fn
        self.elements = elements

    def run(self, tensors=None):
        return self.fn(*(self.tensors if tensors is None else tensors))


def check_device(device: str) -> None:
    """400 naming what is missing when a request asks for a GPU this server does not have (or a
    ``cuda:N`` past the devices it sees)."""
    reason = engine.cuda.unavailable_reason() if device != "cpu" else None
    if reason is not None:
        missing = "cupy" if "not installed" in reason else "a CUDA GPU"
        raise DeviceUnavailableError(
            f"device '{device}' was requested but this server cannot use CUDA: {reason}; use device 'cpu'",
            missing=missing,
        )
    if not device.startswith("cuda:"):
        return
    index, count = engine.device(device).index, engine.cuda.device_count()
    if index >= count:
        raise DeviceUnavailableError(
            f"device '{device}' was requested but this server sees {count} CUDA device(s) "
            f"(cuda:0 to cuda:{count - 1}); use one of them or 'cpu'",
            missing=f"CUDA device {index}", device_count=count,
        )


def configure_gpu(settings: Settings) -> None:
    """Apply the GPU settings at startup; without a GPU there is nothing to configure."""
    if settings.gpu_memory_limit_bytes is not None and engine.cuda.is_available():
        engine.cuda.set_per_process_memory_limit(settings.gpu_memory_limit_bytes)


def compile_function(request: schemas.FunctionRequest, names: list[str], settings: Settings) -> Callable:
    """The client's expr, program or graph as a callable over the input tensors (cached by source)."""
    budget = budget_for(settings)
    if request.expr is not None:
        return _compiled("expr", request.expr, tuple(names), budget)
    if request.program is not None:
        return _compiled("program", request.program, tuple(names), budget)
    return _compiled("graph", codec.dumps(request.graph.model_dump()).decode(), tuple(names), budget)


@functools.lru_cache(maxsize=128)
def _compiled(form: str, source: str, names: tuple[str, ...], budget: Budget) -> Callable:
    """Compiling validates the whole function first; the result is stateless, so repeats reuse it.

    Failures are not cached (lru_cache never stores exceptions), so invalid
    sources are re-checked, and reported, every time.
    """
    if form == "expr":
        from frontends.program import compile_expr

        return compile_expr(source, list(names), budget)
    if form == "program":
        from frontends.program import compile_program

        return compile_program(source, list(names), budget)
    from frontends.graph import compile_graph

    return compile_graph(codec.loads(source), list(names), budget)


def prepare(request: schemas.FunctionRequest, settings: Settings, *, dtype_default=None,
            requires_grad: set[str] | None = None) -> Call:
    """Decode the inputs and compile the function (``run_in_worker`` has checked the device)."""
    dtype = codec.resolve_dtype(request.dtype, "dtype") if request.dtype else (dtype_default or engine.float32)
    elements = ElementBudget(settings.max_tensor_elements, settings.max_request_elements)
    names, tensors = [], []
    for name, value in request.inputs.items():
        tensor = codec.decode_tensor(value, f"inputs.{name}", dtype, elements, request.device)
        if requires_grad and name in requires_grad and not tensor.requires_grad:
            if not tensor.is_floating_point():
                raise CodecError(f"inputs.{name}: only floating point tensors can require gradients",
                                 input=f"inputs.{name}")
            tensor.requires_grad_(True)
        names.append(name)
        tensors.append(tensor)
    return Call(names, tensors, compile_function(request, names, settings), elements)


def as_tuple(value) -> tuple:
    return value if isinstance(value, tuple) else (value,)


def _encode_outputs(outputs, encoding: str) -> list:
    return [codec.encode_tensor(o, encoding) for o in outputs]


def _profiled(request, content: dict, work: Callable, settings: Settings):
    """Run ``work()``; with ``"profile": true`` run it under the profiler and attach the summary."""
    if not request.profile:
        return work()
    from service import profiling

    result, summary = profiling.profile_call(work, record_shapes=False, max_events=settings.max_profile_events)
    content["profile"] = _spliced_trace(summary)
    return result


def _spliced_trace(summary: dict) -> dict:
    """The profile summary, its trace events (up to max_profile_events of them) written piecewise."""
    trace = summary["trace"]
    return {**summary, "trace": {**trace, "traceEvents": codec.spliced_list(trace["traceEvents"])}}


# ---- endpoints -----------------------------------------------------------------------


def evaluate(request: schemas.EvaluateRequest, settings: Settings) -> dict:
    """Outputs of the function, under no_grad."""
    call = prepare(request, settings)
    content: dict = {}

    def work():
        with engine.no_grad():
            return as_tuple(call.run())

    outputs = _profiled(request, content, work, settings)
    content["outputs"] = _encode_outputs(outputs, request.encoding)
    return content


def describe_graph(node, variables: dict[int, str], max_depth: int, seen: dict[int, int]):
    """A grad_fn as nested ``{name, id, next_functions}``; a shared node is expanded once."""
    if node is None:
        return None
    key = id(node)
    if key in seen:
        return {"name": node.name(), "id": seen[key], "repeat": True, "next_functions": []}
    seen[key] = len(seen)
    entry = {"name": node.name(), "id": seen[key]}
    if isinstance(node, AccumulateGrad):
        entry["variable"] = variables.get(id(node.variable))
    if max_depth <= 0 and node.next_functions:
        entry["truncated"] = True
        entry["next_functions"] = []
        return entry
    entry["next_functions"] = [
        [describe_graph(child, variables, max_depth - 1, seen), index] for child, index in node.next_functions
    ]
    return entry


def gradient(request: schemas.GradRequest, settings: Settings) -> dict:
    """Outputs, the leaf gradients of every input, and each output's autograd graph."""
    wrt = set(request.wrt or ())
    unknown = wrt - set(request.inputs)
    if unknown:
        raise ServiceError(f"wrt names {sorted(unknown)}, which are not inputs", input=sorted(unknown)[0])
    call = prepare(request, settings, requires_grad=wrt)
    content: dict = {}

    def work():
        with engine.enable_grad():
            outputs = as_tuple(call.run())
        _backward(request, call, outputs)
        return outputs

    outputs = _profiled(request, content, work, settings)
    variables = {id(t): name for name, t in zip(call.names, call.tensors)}
    seen: dict[int, int] = {}
    content["outputs"] = _encode_outputs(outputs, request.encoding)
    content["grads"] = {
        name: codec.encode_tensor(t.grad, request.encoding) if t.requires_grad and t.grad is not None else None
        for name, t in zip(call.names, call.tensors)
    }
    content["graph"] = [
        describe_graph(getattr(o, "grad_fn", None), variables, settings.max_graph_depth, seen) for o in outputs
    ]
    return content


def _backward(request: schemas.GradRequest, call: Call, outputs: tuple) -> None:
    """``backward`` from every output that carries a graph (seeded with grad_outputs when given)."""
    if request.grad_outputs is not None and len(request.grad_outputs) != len(outputs):
        raise CodecError(f"grad_outputs has {len(request.grad_outputs)} tensors for {len(outputs)} outputs",
                         input="grad_outputs")
    roots, seeds = [], []
    for i, out in enumerate(outputs):
        seed = None
        if request.grad_outputs is not None and request.grad_outputs[i] is not None:
            dtype = out.dtype if isinstance(out, Tensor) else engine.float32
            seed = codec.decode_tensor(request.grad_outputs[i], f"grad_outputs.{i}", dtype, call.elements,
                                       request.device)
        if isinstance(out, Tensor) and out.requires_grad:
            roots.append(out)
            seeds.append(seed)
    if not any(t.requires_grad for t in call.tensors):
        return
    if not roots:
        raise ServiceError("no output depends on an input that requires grad; mark an input with "
                             '"requires_grad": true (or list it in "wrt") and use it in the function')
    engine.autograd.backward(roots, seeds if any(s is not None for s in seeds) else None)


def _functional():
    from engine.autograd import functional

    return functional


def _detached(call: Call) -> list[Tensor]:
    return [t.detach() for t in call.tensors]


def _args(tensors: list[Tensor]):
    """torch.autograd.functional's convention: one input is a bare tensor, several a tuple."""
    return tensors[0] if len(tensors) == 1 else tuple(tensors)


def _forward_outputs(call: Call, tensors) -> tuple:
    with engine.no_grad():
        return as_tuple(call.run(tensors))


def _decode_v(request: schemas.ProductRequest, call: Call, like: tuple, what: str):
    """``v`` shaped like ``like``: one tensor when there is one, a list of tensors otherwise."""
    if request.v is None:
        if len(like) == 1 and like[0].numel() == 1:
            return None
        raise CodecError(f"v is needed: one tensor per {what}", input="v")
    values = [request.v] if len(like) == 1 else request.v
    if not isinstance(values, list) or len(values) != len(like):
        raise CodecError(f"v must be a list with one tensor per {what} ({len(like)})", input="v")
    decoded = [
        codec.decode_tensor(value, f"v.{i}" if len(like) > 1 else "v", t.dtype, call.elements, request.device)
        for i, (value, t) in enumerate(zip(values, like))
    ]
    return decoded[0] if len(like) == 1 else tuple(decoded)


def _transform_options(request: schemas.JacobianRequest, strategy_name: str) -> dict:
    """The keyword arguments the client gave; the engine's defaults for the rest."""
    options = {"strict": request.strict}
    given = {"vectorize": request.vectorize, strategy_name: request.strategy, "chunk_size": request.chunk_size}
    options.update({k: v for k, v in given.items() if v is not None})
    return options


def _matrix(request, settings: Settings, transform: str, strategy_name: str) -> dict:
    """``torch.autograd.functional.<transform>`` (jacobian or hessian) of the function at the inputs.

    The result's size is known before any derivative is taken (the Hessian's from the inputs,
    the Jacobian's after one forward pass, which the response needs anyway): a response that
    could not hold it is refused at once. That forward pass records the function's graph,
    whose size says how many rows one batched pass may take within ``max_live_elements``:
    the ``chunk_size`` the transform gets (the client's, if smaller). Between the passes, and
    at every backward node, the budget checks the deadline.
    """
    functional = _functional()
    call = prepare(request, settings)
    tensors = _detached(call)
    content: dict = {}
    input_shapes = [tuple(t.shape) for t in tensors]
    if transform == "hessian":
        codec.check_response(functional.hessian_elements(input_shapes) + 1, _sized("the Hessian", input_shapes))
    recorded = [o for o in _recorded_outputs(call, tensors) if isinstance(o, Tensor)]
    outputs = tuple(o.detach() for o in recorded)
    if transform == "jacobian":
        output_shapes = [tuple(o.shape) for o in outputs]
        count = functional.jacobian_elements(output_shapes, input_shapes) + sum(map(numel, output_shapes))
        codec.check_response(count, _sized("the Jacobian", input_shapes, output_shapes) + " and the outputs")
    row_elements = (functional.hessian_pass_elements if transform == "hessian" else functional.pass_elements)(recorded)
    del recorded  # the graph: only its size was needed
    options = _transform_options(request, strategy_name)
    options["chunk_size"] = functional.fitting_chunk_size(settings.max_live_elements, row_elements,
                                                          request.chunk_size)

    def work():
        return getattr(functional, transform)(call.fn, _args(tensors), **options)

    result = _profiled(request, content, work, settings)
    content["outputs"] = _encode_outputs(outputs, request.encoding)
    content[transform] = codec.encode_nested(result, request.encoding)
    return content


def _recorded_outputs(call: Call, tensors) -> tuple:
    """The function's outputs on fresh leaves that require grad: their graph is recorded."""
    leaves = [t.detach().requires_grad_() if t.is_floating_point() else t for t in tensors]
    with engine.enable_grad():
        return as_tuple(call.run(leaves))


def _sized(name: str, input_shapes, output_shapes=None) -> str:
    """``the Jacobian of outputs [[3]] by inputs [[2], [4]]``: what a too-large problem names."""
    inputs = f"inputs {[list(s) for s in input_shapes]}"
    return f"{name} of {inputs}" if output_shapes is None else \
        f"{name} of outputs {[list(s) for s in output_shapes]} by {inputs}"


def jacobian(request: schemas.JacobianRequest, settings: Settings) -> dict:
    """torch.autograd.functional.jacobian of the function at the inputs."""
    return _matrix(request, settings, "jacobian", "strategy")


def hessian(request: schemas.HessianRequest, settings: Settings) -> dict:
    """torch.autograd.functional.hessian of a scalar function at the inputs."""
    return _matrix(request, settings, "hessian", "outer_jacobian_strategy")


def _product(name: str, v_like: str):
    """vjp / jvp / hvp / vhp: ``(outputs, product) = functional.<name>(fn, inputs, v)``."""

    def product(request: schemas.ProductRequest, settings: Settings) -> dict:
        call = prepare(request, settings)
        tensors = _detached(call)
        like = _forward_outputs(call, tensors) if v_like == "output" else tuple(tensors)
        v = _decode_v(request, call, like, v_like)
        content: dict = {}

        def work():
            return getattr(_functional(), name)(call.fn, _args(tensors), v, strict=request.strict)

        outputs, result = _profiled(request, content, work, settings)
        content["outputs"] = _encode_outputs(as_tuple(outputs), request.encoding)
        content[name] = codec.encode_nested(result, request.encoding)
        return content

    product.__name__ = name
    product.__doc__ = f"torch.autograd.functional.{name} of the function at the inputs."
    return product


vjp = _product("vjp", "output")
jvp = _product("jvp", "input")
hvp = _product("hvp", "input")
vhp = _product("vhp", "input")


def gradcheck(request: schemas.GradcheckRequest, settings: Settings) -> dict:
    """The engine's Jacobian against central differences, in the request's dtype (float64 by default)."""
    checker = importlib.import_module("engine.autograd.gradcheck")  # the package re-exports the function

    call = prepare(request, settings)
    if not any(t.requires_grad for t in call.tensors):
        for t in call.tensors:
            if t.is_floating_point():
                t.requires_grad_(True)
    checked = [name for name, t in zip(call.names, call.tensors) if t.requires_grad]
    if not checked:
        raise ServiceError("gradcheck needs a floating point input")
    inputs = tuple(call.tensors)
    _check_gradcheck_size(call, checked, settings)
    outputs, numerical = checker.numerical_jacobian(call.fn, inputs, request.eps)
    analytical = checker.analytical_jacobian(outputs, inputs)
    report = checker.compare(numerical, analytical, request.atol, request.rtol)
    index = report.get("input")
    return {
        "passed": bool(report["passed"]),
        "max_abs_error": float(report["max_abs_error"]),
        "max_rel_error": float(report["max_rel_error"]),
        "input": checked[index] if index is not None else None,
        "output": report.get("output"),
        "eps": request.eps,
        "atol": request.atol,
        "rtol": request.rtol,
    }


def _check_gradcheck_size(call: Call, checked: list[str], settings: Settings) -> None:
    """Refuse, after one forward pass, Jacobians gradcheck could not hold.

    Each (output, input) pair is a float64 array held twice, numerical and analytical: each
    must fit the per-tensor limit, and all of them twice within ``max_live_elements``. Their
    time (two forward passes per input number, one backward pass per output number) is the
    deadline's, checked at every op and backward node.
    """
    outputs = [o for o in _forward_outputs(call, call.tensors) if isinstance(o, Tensor)]
    total = 0
    for name, t in zip(call.names, call.tensors):
        if name not in checked:
            continue
        for k, out in enumerate(outputs):
            count = out.numel() * t.numel()
            if count > settings.max_program_elements:
                raise BudgetExceeded("elements", settings.max_program_elements,
                                     f"gradcheck's Jacobian of output {k} by input '{name}' would have {count} "
                                     f"elements, more than the limit of {settings.max_program_elements} per tensor")
            total += count
    if 2 * total > settings.max_live_elements:
        raise BudgetExceeded("elements", settings.max_live_elements,
                             f"gradcheck's numerical and analytical Jacobians would hold {2 * total} elements, more "
                             f"than the limit of {settings.max_live_elements} held at once; check fewer numbers")


def profile(request: schemas.ProfileRequest, settings: Settings) -> dict:
    """Run the function ``repeat`` times (and backward) under the profiler."""
    from service import profiling

    call = prepare(request, settings)

    def work():
        outputs = ()
        for _ in range(request.repeat):
            with engine.enable_grad():
                outputs = as_tuple(call.run())
            if request.backward:
                roots = [o.sum() if o.ndim else o for o in outputs if isinstance(o, Tensor) and o.requires_grad]
                if roots:
                    engine.autograd.backward(roots)
        return outputs

    outputs, summary = profiling.profile_call(work, record_shapes=request.record_shapes,
                                              max_events=settings.max_profile_events)
    return {**_spliced_trace(summary), "outputs": _encode_outputs(outputs, request.encoding)}
