"""The engine-facing functions the compute routes call, one per endpoint.

Each takes a validated request model and a ``ComputeContext`` (the settings, the
plan cache, and the function when it comes from ``/v1/functions`` rather than the
request), decodes the tensors, looks the client's function (expr, program or graph)
up in the plan cache (``service.plans``: built under a ``Budget`` on a miss), runs
it with the engine, and returns the response content (numpy arrays inside,
serialised by orjson). They are synchronous: routes run them in a worker thread
through ``run_in_worker``, under ``service.runtime.engine_work`` (the per-request
budget, op tracking and error wrapping). Grad mode and graphs are per call (grad
mode is a ContextVar), so concurrent requests never share them.

Batches: with ``"batch"`` (input names, or ``true`` for all) the named inputs carry a
leading batch axis, and every tensor of the results has the batch axis in front. The first
point runs on its own (errors, the graph's description, the response bound); the rest of
evaluate, grad, jacobian, hessian, vjp, jvp, hvp and vhp runs as one ``engine.func.vmap`` pass
(``service.batch_vmap``), unless vmap refuses the function (data-dependent control flow, a
value read into Python, a random draw): then, and for gradcheck and profile, the work
runs once per point on the same plan (``_run_points``).
"""

from __future__ import annotations

import importlib
from collections import Counter
from collections.abc import Callable

import engine
from engine.autograd.graph import AccumulateGrad
from engine.compiler.compiled import CompiledFunctionBackward
from engine.op import numel
from engine.tensor import Tensor
from frontends.budget import BudgetExceeded
from service import batch_vmap, codec, schemas
from service.codec import CodecError, ElementBudget
from service.config import Settings
from service.errors import DeviceUnavailableError, ServiceError
from service.plans import (
    CallTally,
    FunctionSource,
    Plan,
    PlanCache,
    PlanKey,
    counting_calls,
    eager_calls,
    function_source,
)
from service.runtime import budget_for, engine_work, refuse_inline_build


class ComputeContext:
    """What a compute handler runs with: the settings, the plan cache, and the stored function
    (``/v1/functions/{id}/...``; None: the request's own). Once the handler ran, ``plan`` is the
    plan it ran, and ``plan_hit`` and ``build_seconds`` say whether it was cached (for
    ``Server-Timing``); ``calls`` how its calls of the plan ran (replayed, recompiled, eager)."""

    __slots__ = ("build_seconds", "calls", "function", "plan", "plan_hit", "plans", "settings")

    def __init__(self, settings: Settings, plans: PlanCache, function: FunctionSource | None = None):
        self.settings = settings
        self.plans = plans
        self.function = function
        self.plan: Plan | None = None
        self.plan_hit: bool | None = None
        self.build_seconds = 0.0
        self.calls = CallTally()


def run_in_worker(handler: Callable, request, context: ComputeContext,
                  on_ops: Callable[[Counter], None]) -> list | codec.Frame:
    """Run ``handler(request, context)`` under ``engine_work``; return the JSON body (``codec.dumps_parts``),
    or the binary frame (``codec.dumps_frame``) when the request's encoding is ``"binary"``."""
    settings = context.settings
    # Tensors the client's function creates (ones(3), zeros_like...) go where its inputs are.
    requested = getattr(request, "device", "cpu")
    check_device(requested)  # before the device is entered: a 400 naming what is missing
    device = engine.device(requested)
    # On cuda:N, N is also the worker thread's current CUDA device: its ops then need no switch.
    current_gpu = engine.cuda.device(device.index if device.type == "cuda" else None)
    # Every tensor the handler encodes is counted against the response limit (before it is copied).
    with engine_work(settings, on_ops), device, current_gpu, codec.response_limit(settings.max_response_elements), \
            counting_calls(context.calls):
        content = handler(request, context)
        if getattr(request, "encoding", "json") == "binary":
            return codec.dumps_frame(content, codec.SKELETON_RESERVE_BYTES)
        return codec.dumps_parts(content, codec.SKELETON_RESERVE_BYTES)


# ---- inputs and the client's function -------------------------------------------------


class Call:
    """A decoded request: input names, their tensors (positional order), the plan whose function runs.

    A batched call (``batch_size`` not None) holds whole batches in ``tensors``; ``points()``
    gives one unbatched call per point, on the same plan.
    """

    def __init__(self, names: list[str], tensors: list[Tensor], plan: Plan, elements: ElementBudget,
                 batched: frozenset[str] = frozenset(), batch_size: int | None = None):
        self.names = names
        self.tensors = tensors
        self.plan = plan
        self.fn = plan.fn
        self.elements = elements
        self.batched = batched
        self.batch_size = batch_size
        self.points_in_request = 1  # a batch point's call: the batch size (its limits count the batch)
        # Tensors decoded after the function ran (grad_outputs, v), by (where, dtype): shared by a batch's
        # points, so a tensor the request holds once is decoded and counted against its limits once.
        self.decoded: dict[tuple, Tensor] = {}

    def decode(self, value, where: str, dtype, device: str) -> Tensor:
        """``codec.decode_tensor`` of a request tensor that is the same at every point, once per request."""
        key = (where, dtype)
        if key not in self.decoded:
            self.decoded[key] = codec.decode_tensor(value, where, dtype, self.elements, device)
        return self.decoded[key]

    def run(self, tensors=None):
        return self.fn(*(self.tensors if tensors is None else tensors))

    def points(self):
        """One call per batch point: the batched inputs indexed at the point, the others as they are.

        A point's tensor is a leaf of its own (sliced without recording, ``requires_grad`` as the
        batch's), so its gradient is that point's alone.
        """
        for index in range(self.batch_size):
            tensors = []
            for name, t in zip(self.names, self.tensors):
                if name in self.batched:
                    with engine.no_grad():
                        point = t.detach()[index]
                    t = point.requires_grad_(True) if t.requires_grad else point
                elif t.requires_grad:
                    t = t.detach().requires_grad_(True)  # each point accumulates its own gradient
                tensors.append(t)
            point_call = Call(self.names, tensors, self.plan, self.elements)
            point_call.points_in_request = self.batch_size
            point_call.decoded = self.decoded
            yield point_call


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


def function_of(request: schemas.FunctionRequest | schemas.FunctionCreateRequest) -> FunctionSource:
    """The request's own function (or the one to register), in canonical form (``service.plans``)."""
    if request.expr is not None:
        return function_source("expr", request.expr)
    if request.program is not None:
        return function_source("program", request.program)
    return function_source("graph", request.graph.model_dump())


def prepare(request: schemas.FunctionRequest, context: ComputeContext, transform: tuple, *,
            requires_grad: set[str] | None = None) -> Call:
    """Decode the inputs and find the function's plan (``run_in_worker`` has checked the device).

    ``transform`` names the endpoint and the options of it that change the work the function
    traces: with the function, the input names, the budget and the input signature (of one
    point, for a batch) it keys the plan cache.
    """
    settings = context.settings
    dtype = codec.resolve_dtype(request.dtype, "dtype") if request.dtype else engine.float32
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
    batched, batch_size = _batch_of(request, names, tensors)
    signature = tuple((tuple(t.shape[1:] if name in batched else t.shape), t.dtype, t.device, t.requires_grad)
                      for name, t in zip(names, tensors))
    function = context.function or function_of(request)
    key = PlanKey(function.id, tuple(names), transform, budget_for(settings), signature)
    plan = context.plan
    if plan is None or plan.key != key:  # else a second run of the request (see ``Runtime.inline``)
        if not context.plans.holds(key):
            refuse_inline_build()
        plan, context.plan_hit = context.plans.plan(key, function)
        context.plan = plan
        if not context.plan_hit:
            context.build_seconds = plan.build_seconds
    return Call(names, tensors, plan, elements, batched, batch_size)


def _batch_of(request, names: list[str], tensors: list[Tensor]) -> tuple[frozenset[str], int | None]:
    """The batched input names and the batch size (None: no batch); every batched input must have
    the same leading axis, of at least one point."""
    batch = getattr(request, "batch", None)
    if batch is None or batch is False:
        return frozenset(), None
    batched = frozenset(names) if batch is True else frozenset(batch)
    unknown = batched - set(names)
    if unknown:
        raise ServiceError(f"batch names {sorted(unknown)}, which are not inputs", input="batch")
    if not batched:
        raise ServiceError("batch names no input; name the inputs that carry a leading batch axis", input="batch")
    sizes = {}
    for name, t in zip(names, tensors):
        if name in batched:
            if t.ndim == 0:
                raise CodecError(f"inputs.{name} is batched but has no axis; its leading axis is the batch",
                                 input=f"inputs.{name}")
            sizes[name] = t.shape[0]
    if len(set(sizes.values())) != 1:
        raise CodecError(f"the batched inputs' leading axes differ: {sizes}", input="batch")
    size = next(iter(sizes.values()))
    if size == 0:
        raise CodecError("the batch has no points (a leading axis of 0)", input="batch")
    if getattr(request, "profile", False):
        raise ServiceError('"profile": true profiles one point; send it without "batch" '
                           "(or POST /v1/profile with the batch)", input="profile")
    return batched, size


def as_tuple(value) -> tuple:
    return value if isinstance(value, tuple) else (value,)


def _encode_outputs(outputs, encoding: str) -> list:
    return [codec.encode_tensor(o, encoding) for o in outputs]


def _profiled(request, content: dict, work: Callable, settings: Settings):
    """Run ``work()``; with ``"profile": true`` run it under the profiler and attach the summary."""
    if not request.profile:
        return work()
    from service import profiling

    with eager_calls():  # the profiler sees every op
        result, summary = profiling.profile_call(work, record_shapes=False, max_events=settings.max_profile_events)
    content["profile"] = _spliced_trace(summary)
    return result


def _spliced_trace(summary: dict) -> dict:
    """The profile summary, its trace events (up to max_profile_events of them) written piecewise."""
    trace = summary["trace"]
    return {**summary, "trace": {**trace, "traceEvents": codec.spliced_list(trace["traceEvents"])}}


# ---- endpoints -----------------------------------------------------------------------
#
# Each endpoint has a point function, ``(request, call, context) -> content`` with engine tensors
# under TENSOR_KEYS; ``_run_points`` runs it once (or once per batch point, stacking the results)
# and encodes the tensors in the request's encoding.

TENSOR_KEYS = ("outputs", "grads", "jacobian", "hessian", "vjp", "jvp", "hvp", "vhp")


def _run_points(request, call: Call, context: ComputeContext, point: Callable, combine: Callable | None = None,
                vectorized: Callable | None = None) -> dict:
    """``point`` at the call, or at every point of a batched call; ``combine`` (default: stack every
    tensor) joins a batch's results. A batch's response is bounded once the first point has run:
    the batch size times that point's numbers must fit the response limit before the rest run.
    ``vectorized(request, call, first_content)`` gives ``(sample, pass_kind)`` for ``_vectorized``
    (None: this request runs as a loop):
    the rest of the batch in one vmapped pass, else (or where vmap refuses) one point at a time."""
    if call.batch_size is None:
        return _encoded(point(request, call, context), request.encoding)
    points = call.points()
    first = point(request, next(points), context)
    count = call.batch_size * _numbers(first)
    codec.check_response(count, f"a batch of {call.batch_size} points of {_numbers(first)} numbers each")
    if vectorized is not None and call.batch_size > 1:
        spec = vectorized(request, call, first)
        content = None if spec is None else _vectorized(call, context, first, *spec)
        if content is not None:
            return _encoded(content, request.encoding)
    results = [first, *(point(request, point_call, context) for point_call in points)]
    return _encoded((combine or _stacked)(results), request.encoding)


def _vectorized(call: Call, context: ComputeContext, first: dict, sample: Callable, pass_kind: str) -> dict | None:
    """Every point of the batch in one vmapped pass of ``sample`` (``service.batch_vmap``): the first
    point's content with its tensors replaced by the batch's; None where the loop must run instead.

    One point's pass is bounded as the loop bounds it (``pass_kind``: evaluate, pass, product,
    jacobian or hessian, how many rows of the recorded graph's size a point holds); vmap then takes
    as many points at a time as fit ``max_live_elements``. A derivative is vmapped only where every
    output is a tensor some input reaches (else the loop, which skips or zero-fills the others).
    """
    per_point, differentiable = _point_pass(call, pass_kind)
    if not differentiable and pass_kind != "evaluate":
        return None  # an output that no input reaches (a constant) or not a tensor: the loop handles it
    fitting = context.settings.max_live_elements // max(1, per_point)
    if fitting < 1:
        return None
    tensors = [t.detach() for t in call.tensors]
    result = batch_vmap.run(sample, tensors, [name in call.batched for name in call.names],
                            min(fitting, call.batch_size))
    if result is None:
        return None
    if "grads" in result:
        result["grads"] = {name: result["grads"].get(i) for i, name in enumerate(call.names)}
    try:
        return {**first, **{key: batch_vmap.matching(first[key], value, call.batch_size)
                            for key, value in result.items()}}
    except (batch_vmap.ShapeMismatchError, KeyError):
        return None


def _point_pass(call: Call, pass_kind: str) -> tuple[int, bool]:
    """Elements one point's pass may hold: the recorded graph's pass (``pass_elements``) times the
    rows a Jacobian (outputs' numbers) or Hessian (inputs' numbers) takes at once; and whether every
    output is a tensor that some input reaches (what the engine.func transforms differentiate)."""
    functional = _functional()
    point_tensors = [t.detach()[0] if name in call.batched else t.detach() for name, t in zip(call.names, call.tensors)]
    outputs = _recorded_outputs(call, point_tensors)
    differentiable = all(isinstance(o, Tensor) and o.requires_grad for o in outputs)
    recorded = [o for o in outputs if isinstance(o, Tensor)]
    if pass_kind == "hessian":
        elements = functional.hessian_pass_elements(recorded) * max(1, sum(t.numel() for t in point_tensors))
    elif pass_kind == "product":
        elements = functional.hessian_pass_elements(recorded)
    else:
        elements = functional.pass_elements(recorded) + sum(o.numel() for o in recorded)
        if pass_kind == "jacobian":
            elements *= max(1, sum(o.numel() for o in recorded))
    return elements, differentiable


def _numbers(content: dict) -> int:
    def count(value) -> int:
        if value is None:
            return 0
        if isinstance(value, (tuple, list)):
            return sum(map(count, value))
        if isinstance(value, dict):
            return sum(map(count, value.values()))
        return value.numel() if isinstance(value, Tensor) else 1

    return sum(count(content[key]) for key in TENSOR_KEYS if key in content)


def _stacked(results: list[dict]) -> dict:
    """The points' contents as one: every tensor stacked along a new leading axis; the rest (the
    autograd graph's description, the same at every point of a plan) from the first point."""
    first = dict(results[0])
    for key in TENSOR_KEYS:
        if key in first:
            first[key] = _stack_values([result[key] for result in results])
    return first


def _stack_values(values: list):
    if any(value is None for value in values):
        return None
    if isinstance(values[0], (tuple, list)):
        return tuple(_stack_values(list(column)) for column in zip(*values))
    if isinstance(values[0], dict):
        return {name: _stack_values([value[name] for value in values]) for name in values[0]}
    with engine.no_grad():
        return engine.stack([v.detach() if isinstance(v, Tensor) else engine.tensor(v) for v in values])


def _encoded(content: dict, encoding: str) -> dict:
    """``content`` with its engine tensors (TENSOR_KEYS) written as wire tensors."""
    for key in TENSOR_KEYS:
        if key not in content:
            continue
        value = content[key]
        if key == "outputs":
            content[key] = _encode_outputs(value, encoding)
        elif key == "grads":
            content[key] = {name: None if t is None else codec.encode_tensor(t, encoding) for name, t in value.items()}
        else:
            content[key] = codec.encode_nested(value, encoding)
    return content


def evaluate(request: schemas.EvaluateRequest, context: ComputeContext) -> dict:
    """Outputs of the function, under no_grad."""
    return _run_points(request, prepare(request, context, ("evaluate",)), context, _evaluate_point,
                       vectorized=lambda request, call, first: (batch_vmap.evaluate_sample(call.fn), "evaluate"))


def _evaluate_point(request, call: Call, context: ComputeContext) -> dict:
    content: dict = {}

    def work():
        with engine.no_grad():
            return as_tuple(call.run())

    content["outputs"] = _profiled(request, content, work, context.settings)
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


def graph_structure(node, variables: dict[int, str], max_depth: int, seen: dict[int, int], into: list) -> None:
    """What ``describe_graph`` shows of a graph, flat, without building it: each node's name, its
    leaf's input name and its edges, in the same order (equal structures describe equally)."""
    if node is None:
        into.append(None)
        return
    key = id(node)
    if key in seen:
        into.append(seen[key])
        return
    seen[key] = len(seen)
    into.append(node.name())
    if isinstance(node, AccumulateGrad):
        into.append(variables.get(id(node.variable)))
    if max_depth <= 0 and node.next_functions:
        into.append("truncated")
        return
    into.append(len(node.next_functions))
    for child, index in node.next_functions:
        graph_structure(child, variables, max_depth - 1, seen, into)
        into.append(index)


def _graph_description(call: Call, outputs: tuple, max_depth: int) -> list:
    """Each output's autograd graph described; computed once per plan (``Plan.description``). A plan
    whose function cannot branch on values (``Plan.fixed_structure``) records the same graph every
    time; another plan's graph is walked first and described again only when its structure changed.

    A compiled call's outputs carry one ``CompiledFunctionBackward`` node; the graph described is
    the one eager mode records (PyTorch's, which the client asks for), recorded once by running the
    function eagerly on the same inputs. A variant of the plan (``engine.compile``'s, one per path
    through the function's control flow) keys it.
    """
    roots = [getattr(o, "grad_fn", None) for o in outputs]
    compiled = any(isinstance(root, CompiledFunctionBackward) for root in roots)
    variables = {id(t): name for name, t in zip(call.names, call.tensors)}

    def describe() -> list:
        seen: dict[int, int] = {}
        return [describe_graph(root, variables, max_depth, seen) for root in roots]

    def describe_eager() -> list:
        leaves = [t.detach().requires_grad_() if t.requires_grad else t.detach() for t in call.tensors]
        with engine.enable_grad():
            eager_outputs = as_tuple(getattr(call.fn, "eager", call.fn)(*leaves))
        eager_variables = {id(t): name for name, t in zip(call.names, leaves)}
        seen: dict[int, int] = {}
        return [describe_graph(getattr(o, "grad_fn", None), eager_variables, max_depth, seen) for o in eager_outputs]

    if call.plan.fixed_structure:
        structure: tuple = (len(roots),)
    elif compiled:
        structure = tuple(root.plan if isinstance(root, CompiledFunctionBackward) else None for root in roots)
    else:
        flat: list = []
        seen: dict[int, int] = {}
        for root in roots:
            graph_structure(root, variables, max_depth, seen, flat)
        structure = tuple(flat)
    return call.plan.description(structure, describe_eager if compiled else describe)


def gradient(request: schemas.GradRequest, context: ComputeContext) -> dict:
    """Outputs, the leaf gradients of every input, and each output's autograd graph."""
    wrt = set(request.wrt or ())
    unknown = wrt - set(request.inputs)
    if unknown:
        raise ServiceError(f"wrt names {sorted(unknown)}, which are not inputs", input=sorted(unknown)[0])
    call = prepare(request, context, ("grad", request.grad_outputs is not None), requires_grad=wrt)
    return _run_points(request, call, context, _gradient_point, vectorized=_gradient_sample)


def _gradient_sample(request, call: Call, first: dict) -> tuple | None:
    """The vmapped grad: the vjp of the outputs the first point's backward started from, seeded alike."""
    outputs = first["outputs"]
    roots = [isinstance(o, Tensor) and o.requires_grad for o in outputs]
    seeds = [None] * len(outputs)
    if request.grad_outputs is not None:
        seeds = [None if value is None else
                 codec.decode_tensor(value, f"grad_outputs.{i}", o.dtype, call.elements, request.device)
                 for i, (value, o) in enumerate(zip(request.grad_outputs, outputs))]
    differentiated = [i for i, t in enumerate(call.tensors) if t.requires_grad]
    if not differentiated:
        return batch_vmap.evaluate_sample(call.fn), "evaluate"  # nothing to differentiate: outputs only
    if not all(roots):
        return None  # an output no differentiated input reaches: the loop's backward skips it
    return batch_vmap.grad_sample(call.fn, differentiated, roots, seeds), "pass"


def _gradient_point(request, call: Call, context: ComputeContext) -> dict:
    content: dict = {}

    def work():
        with engine.enable_grad():
            outputs = as_tuple(call.run())
        _backward(request, call, outputs)
        return outputs

    outputs = _profiled(request, content, work, context.settings)
    content["outputs"] = outputs
    content["grads"] = {name: t.grad if t.requires_grad else None for name, t in zip(call.names, call.tensors)}
    content["graph"] = _graph_description(call, outputs, context.settings.max_graph_depth)
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
            seed = call.decode(request.grad_outputs[i], f"grad_outputs.{i}", dtype, request.device)
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
        call.decode(value, f"v.{i}" if len(like) > 1 else "v", t.dtype, request.device)
        for i, (value, t) in enumerate(zip(values, like))
    ]
    return decoded[0] if len(like) == 1 else tuple(decoded)


def _transform_options(request: schemas.JacobianRequest, strategy_name: str) -> dict:
    """The keyword arguments the client gave; the engine's defaults for the rest."""
    options = {"strict": request.strict}
    given = {"vectorize": request.vectorize, strategy_name: request.strategy, "chunk_size": request.chunk_size}
    options.update({k: v for k, v in given.items() if v is not None})
    return options


def _matrix(request, context: ComputeContext, transform: str, strategy_name: str) -> dict:
    """``torch.autograd.functional.<transform>`` (jacobian or hessian) of the function at the inputs.

    The result's size is known before any derivative is taken (the Hessian's from the inputs,
    the Jacobian's after one forward pass, which the response needs anyway): a response that
    could not hold it (times the points of a batch) is refused at once. That forward pass records
    the function's graph, whose size says how many rows one batched pass may take within
    ``max_live_elements``: the ``chunk_size`` the transform gets (the client's, if smaller).
    Between the passes, and at every backward node, the budget checks the deadline.
    """
    options = (request.strict, request.vectorize, request.strategy)
    call = prepare(request, context, (transform, *options))

    def point(request, call: Call, context: ComputeContext) -> dict:
        return _matrix_point(request, call, context, transform, strategy_name)

    def sample(request, call: Call, first: dict) -> tuple:
        forward_mode = transform == "jacobian" and request.strategy == "forward-mode"
        return batch_vmap.matrix_sample(call.fn, transform, forward_mode), transform

    return _run_points(request, call, context, point, vectorized=sample)


def _matrix_point(request, call: Call, context: ComputeContext, transform: str, strategy_name: str) -> dict:
    functional = _functional()
    settings = context.settings
    tensors = _detached(call)
    content: dict = {}
    input_shapes = [tuple(t.shape) for t in tensors]
    points = call.points_in_request
    if transform == "hessian":
        codec.check_response(points * (functional.hessian_elements(input_shapes) + 1),
                             _sized("the Hessian", input_shapes, points=points))
    recorded = [o for o in _recorded_outputs(call, tensors) if isinstance(o, Tensor)]
    outputs = tuple(o.detach() for o in recorded)
    if transform == "jacobian":
        output_shapes = [tuple(o.shape) for o in outputs]
        count = functional.jacobian_elements(output_shapes, input_shapes) + sum(map(numel, output_shapes))
        codec.check_response(points * count,
                             _sized("the Jacobian", input_shapes, output_shapes, points) + " and the outputs")
    row_elements = (functional.hessian_pass_elements if transform == "hessian" else functional.pass_elements)(recorded)
    del recorded  # the graph: only its size was needed
    options = _transform_options(request, strategy_name)
    options["chunk_size"] = functional.fitting_chunk_size(settings.max_live_elements, row_elements,
                                                          request.chunk_size)

    def work():
        return getattr(functional, transform)(call.fn, _args(tensors), **options)

    result = _profiled(request, content, work, settings)
    content["outputs"] = outputs
    content[transform] = result
    return content


def _recorded_outputs(call: Call, tensors) -> tuple:
    """The function's outputs on fresh leaves that require grad: their graph is recorded, eagerly (its
    size sizes the transform's batched passes; a compiled call's graph is one node)."""
    leaves = [t.detach().requires_grad_() if t.is_floating_point() else t for t in tensors]
    with engine.enable_grad():
        return as_tuple(getattr(call.fn, "eager", call.fn)(*leaves))


def _sized(name: str, input_shapes, output_shapes=None, points: int = 1) -> str:
    """``the Jacobian of outputs [[3]] by inputs [[2], [4]]``: what a too-large problem names."""
    inputs = f"inputs {[list(s) for s in input_shapes]}"
    sized = f"{name} of {inputs}" if output_shapes is None else \
        f"{name} of outputs {[list(s) for s in output_shapes]} by {inputs}"
    return sized if points == 1 else f"{points} points' {sized}"


def jacobian(request: schemas.JacobianRequest, context: ComputeContext) -> dict:
    """torch.autograd.functional.jacobian of the function at the inputs."""
    return _matrix(request, context, "jacobian", "strategy")


def hessian(request: schemas.HessianRequest, context: ComputeContext) -> dict:
    """torch.autograd.functional.hessian of a scalar function at the inputs."""
    return _matrix(request, context, "hessian", "outer_jacobian_strategy")


def _product(name: str, v_like: str):
    """vjp / jvp / hvp / vhp: ``(outputs, product) = functional.<name>(fn, inputs, v)``."""

    def point(request: schemas.ProductRequest, call: Call, context: ComputeContext) -> dict:
        tensors = _detached(call)
        like = _forward_outputs(call, tensors) if v_like == "output" else tuple(tensors)
        v = _decode_v(request, call, like, v_like)
        content: dict = {}

        def work():
            return getattr(_functional(), name)(call.fn, _args(tensors), v, strict=request.strict)

        outputs, result = _profiled(request, content, work, context.settings)
        content["outputs"] = as_tuple(outputs)
        content[name] = result
        return content

    def sample(request: schemas.ProductRequest, call: Call, first: dict) -> tuple | None:
        like = first["outputs"] if v_like == "output" else \
            tuple(t.detach()[0] if n in call.batched else t for n, t in zip(call.names, call.tensors))
        v = _decode_v(request, call, tuple(like), v_like)
        return batch_vmap.product_sample(call.fn, name, v), "pass" if name == "vjp" else "product"

    def product(request: schemas.ProductRequest, context: ComputeContext) -> dict:
        call = prepare(request, context, (name, request.strict))
        return _run_points(request, call, context, point, vectorized=sample)

    product.__name__ = name
    product.__doc__ = f"torch.autograd.functional.{name} of the function at the inputs (v: the same at every point)."
    return product


vjp = _product("vjp", "output")
jvp = _product("jvp", "input")
hvp = _product("hvp", "input")
vhp = _product("vhp", "input")


def gradcheck(request: schemas.GradcheckRequest, context: ComputeContext) -> dict:
    """The engine's Jacobian against central differences, in the request's dtype (float64 by default).

    For a batch, every point is checked; the report is the worst point's (``point`` its index),
    and ``passed`` says whether all passed.
    """
    call = prepare(request, context, ("gradcheck",))
    return _run_points(request, call, context, _gradcheck_point, _worst_point)


def _gradcheck_point(request: schemas.GradcheckRequest, call: Call, context: ComputeContext) -> dict:
    checker = importlib.import_module("engine.autograd.gradcheck")  # the package re-exports the function

    if not any(t.requires_grad for t in call.tensors):
        for t in call.tensors:
            if t.is_floating_point():
                t.requires_grad_(True)
    checked = [name for name, t in zip(call.names, call.tensors) if t.requires_grad]
    if not checked:
        raise ServiceError("gradcheck needs a floating point input")
    inputs = tuple(call.tensors)
    _check_gradcheck_size(call, checked, context.settings)
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


def _worst_point(reports: list[dict]) -> dict:
    """A batch's gradcheck: the first failing point's report, else the one with the largest error."""
    failing = [i for i, report in enumerate(reports) if not report["passed"]]
    index = failing[0] if failing else max(range(len(reports)), key=lambda i: reports[i]["max_abs_error"])
    return {**reports[index], "point": index}


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


def profile(request: schemas.ProfileRequest, context: ComputeContext) -> dict:
    """Run the function ``repeat`` times (and backward) under the profiler; a batch, at every point."""
    from service import profiling

    call = prepare(request, context, ("profile", request.backward))
    calls = [call] if call.batch_size is None else list(call.points())

    def work():
        results = []
        for _ in range(request.repeat):
            results = []
            for point in calls:
                with engine.enable_grad():
                    outputs = as_tuple(point.run())
                if request.backward:
                    roots = [o.sum() if o.ndim else o for o in outputs if isinstance(o, Tensor) and o.requires_grad]
                    if roots:
                        engine.autograd.backward(roots)
                results.append({"outputs": outputs})
        return results

    with eager_calls():  # the profiler sees every op
        results, summary = profiling.profile_call(work, record_shapes=request.record_shapes,
                                                  max_events=context.settings.max_profile_events)
    outputs = results[0] if call.batch_size is None else _stacked(results)
    return {**_spliced_trace(summary), **_encoded(outputs, request.encoding)}
