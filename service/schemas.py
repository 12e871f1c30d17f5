"""Request and response models (``*Request`` / ``*Response``) with working OpenAPI examples.

Tensor fields are ``Any`` with a hand-written JSON schema (``TensorIn``): pydantic
passes them through untouched and ``service.codec`` decodes them straight into
arrays, so a million-element list is never validated element by element.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, WithJsonSchema, create_model, model_validator
from pydantic.json_schema import SkipJsonSchema

from frontends.model_spec import TINY_MODEL_SPEC

# ---- tensors ---------------------------------------------------------------------

_SHAPE_SCHEMA = {"type": "array", "items": {"type": "integer", "minimum": 0}, "maxItems": 32}
_DTYPE_SCHEMA = {
    "type": "string",
    "description": "float32 (default), float64, float16, int32, int64, bool; KServe names FP32, FP64, ... too",
    "examples": ["float32"],
}
_NONFINITE = {"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]}
DEVICE_PATTERN = r"^(cpu|cuda(:[0-9]{1,4})?)$"  # which CUDA ordinals exist is checked per request (400)
TENSOR_IN_SCHEMA = {
    "description": (
        "A tensor: a number, a nested list (float32 unless a dtype is given), "
        '{"data": [flat row-major values], "shape": [...], "dtype": "float32", "requires_grad": false}, '
        'or {"b64": "<little-endian bytes>", "shape": [...], "dtype": "float32"}. '
        'NaN and infinities are the strings "NaN", "Infinity", "-Infinity".'
    ),
    "anyOf": [
        {"type": "number"},
        _NONFINITE,
        {"type": "array", "items": {}},
        {
            "type": "object",
            "properties": {
                "data": {"type": "array", "items": {}},
                "shape": _SHAPE_SCHEMA,
                "dtype": _DTYPE_SCHEMA,
                "datatype": _DTYPE_SCHEMA,
                "requires_grad": {"type": "boolean", "default": False},
            },
            "required": ["data"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "properties": {
                "b64": {"type": "string", "contentEncoding": "base64"},
                "shape": _SHAPE_SCHEMA,
                "dtype": _DTYPE_SCHEMA,
                "datatype": _DTYPE_SCHEMA,
                "requires_grad": {"type": "boolean", "default": False},
            },
            "required": ["b64"],
            "additionalProperties": False,
        },
    ],
    "examples": [{"data": [0.0, 1.0, 2.0], "shape": [3], "dtype": "float32", "requires_grad": True}],
}
TensorIn = Annotated[Any, WithJsonSchema(TENSOR_IN_SCHEMA)]
InputName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]

# Lists of validated items are bounded in the schema itself: pydantic checks every item of an
# unbounded list and keeps every error, so a 64 MB body of 21 million `{}` nodes would cost
# tens of GB before any limit of ours ran. With max_length it stops at the length check.
# The graph's own budget (GRADSERVE_MAX_GRAPH_NODES, 10 000 by default) applies after this.
MAX_GRAPH_NODES = 100_000
MAX_LIST_ITEMS = 10_000


class TensorOut(BaseModel):
    """A tensor in a response: flat row-major ``data`` (JSON) or ``b64`` (little-endian bytes)."""

    shape: list[int]
    dtype: str
    data: list[float | bool | Literal["NaN", "Infinity", "-Infinity"]] | None = None
    b64: str | None = None


Nested = TensorOut | list[TensorOut | None] | list[list[TensorOut | None]] | None


# ---- the graph form of a function ---------------------------------------------------


class GraphNodeSpec(BaseModel):
    """One node of a JSON graph: ``output = op(*inputs, **attrs)``."""

    model_config = ConfigDict(extra="forbid")

    op: str = Field(description='a table op name, as GET /v1/ops lists them, or "constant"')
    inputs: list[str | float | dict[str, float] | None] = Field(
        default_factory=list, max_length=MAX_LIST_ITEMS,
        description="names of graph inputs or earlier outputs; a number (or {\"const\": number}) is a scalar operand",
    )
    output: str | Annotated[list[str], Field(max_length=64)] = Field(
        description="the new name (a list for ops with extra results)")
    attrs: dict[str, Any] = Field(default_factory=dict, description="the op's parameters")


class GraphSpec(BaseModel):
    """ONNX-like graph: nodes in topological order, single assignment; ``outputs`` names the results."""

    model_config = ConfigDict(extra="forbid")

    nodes: list[GraphNodeSpec] = Field(max_length=MAX_GRAPH_NODES)
    outputs: list[str] = Field(min_length=1, max_length=MAX_LIST_ITEMS)


# ---- requests ------------------------------------------------------------------------

SIN_INPUT = {"data": [0.0, 0.5 * math.pi, math.pi], "requires_grad": True}
EXAMPLE_EXPR = {"inputs": {"a": SIN_INPUT}, "expr": "(2 * sin(a) + 1).sum()"}
EXAMPLE_PROGRAM = {
    "inputs": {"x": {"data": [0.5, -1.0, 2.0], "requires_grad": True}},
    "program": "y = x * 2\nwhile y.norm() < 1000:\n    y = y * 2\nreturn y.sum()",
}
EXAMPLE_GRAPH = {
    "inputs": {"a": SIN_INPUT},
    "graph": {
        "nodes": [
            {"op": "sin", "inputs": ["a"], "output": "b"},
            {"op": "sum", "inputs": ["b"], "output": "out"},
        ],
        "outputs": ["out"],
    },
}
EXP_ADDER = {
    "inputs": {"x": [0.5, 0.7], "y": [0.6, 0.4]},
    "program": "return 2 * x.exp() + 3 * y",
}


class FunctionRequest(BaseModel):
    """What every compute request carries: named inputs and one function (expr, program or graph)."""

    model_config = ConfigDict(extra="forbid")

    inputs: dict[InputName, TensorIn] = Field(
        description="name -> tensor; the key order is the function's positional order", max_length=64
    )
    # Optional, but never null in the schema, so that "exactly one of" can be stated there (ONE_FUNCTION).
    expr: Annotated[str, StringConstraints(max_length=20_000)] | SkipJsonSchema[None] = Field(
        None, description="one expression over the inputs"
    )
    program: Annotated[str, StringConstraints(max_length=100_000)] | SkipJsonSchema[None] = Field(
        None, description="restricted Python; free names are the inputs; `return` gives outputs"
    )
    graph: GraphSpec | SkipJsonSchema[None] = None
    encoding: Literal["json", "base64", "binary"] = Field(
        "json", description="how response tensors are written; binary: an application/octet-stream frame "
                            "(as with Accept: application/octet-stream)")
    dtype: str | None = Field(None, description="dtype of inputs that do not name one (default float32)")
    device: Annotated[str, StringConstraints(pattern=DEVICE_PATTERN)] = Field(
        "cpu", description="where to compute: 'cpu', 'cuda' (device 0) or 'cuda:N'; 'cuda' without a GPU, or "
                           "an N past the visible devices, is a 400 naming what is missing")
    profile: bool = Field(False, description="attach a profiler summary under `profile`")
    batch: bool | Annotated[list[InputName], Field(max_length=64)] | None = Field(
        None, description=(
            "inputs that carry a leading batch axis (true: all of them): the function runs at every point "
            "(the batched inputs indexed along that axis, the others as given) and every tensor of the result "
            "is stacked along a new leading axis; `v` and `grad_outputs` are one point's, the same at every "
            "point; the graph is one point's; limits count the whole batch"),
        examples=[["a"]],
    )

    @model_validator(mode="after")
    def _exactly_one_function(self):
        given = [name for name in ("expr", "program", "graph") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of expr, program, graph (got {given or 'none'})")
        return self


ONE_FUNCTION = [{"required": ["expr"]}, {"required": ["program"]}, {"required": ["graph"]}]


def _examples(*examples) -> ConfigDict:
    """A request model's config: its working examples, and "exactly one of expr, program, graph"."""
    return ConfigDict(extra="forbid", json_schema_extra={"examples": list(examples), "oneOf": ONE_FUNCTION})


class EvaluateRequest(FunctionRequest):
    model_config = _examples(EXAMPLE_EXPR, EXAMPLE_GRAPH)


class GradRequest(FunctionRequest):
    model_config = _examples(
        EXAMPLE_EXPR,
        {
            "inputs": {"x": {"data": [0.5, -1.0, 2.0], "requires_grad": True}},
            "program": "y = x * 2\nwhile y.norm() < 1000:\n    y = y * 2\nreturn y",
            "grad_outputs": [[0.1, 1.0, 0.0001]],
        },
        EXAMPLE_GRAPH,
    )

    grad_outputs: list[TensorIn] | None = Field(
        None, max_length=MAX_LIST_ITEMS,
        description="one tensor per output (y.backward(v)); needed for non-scalar outputs",
    )
    wrt: list[InputName] | None = Field(None, max_length=64,
                                        description="inputs to differentiate (sets their requires_grad)")


class JacobianRequest(FunctionRequest):
    model_config = _examples(EXP_ADDER, {"inputs": {"x": [0.5, 0.7, 0.2]}, "expr": "x.exp() * 2"})

    strict: bool = False
    vectorize: bool | None = Field(None, description="batch all rows in one pass (the engine's default: true)")
    strategy: Literal["reverse-mode", "forward-mode", "auto"] | None = Field(
        None, description="jacobian: the engine's default is auto; hessian: the outer Jacobian's strategy"
    )
    chunk_size: int | None = Field(None, ge=1, description="rows per batched pass, to bound memory")


class HessianRequest(JacobianRequest):
    model_config = _examples(
        {"inputs": {"x": [0.5, 0.7, 0.2]}, "expr": "(x.exp() * x).sum()"},
        {"inputs": {"x": [0.5, 0.7], "y": [1.0, 2.0]}, "expr": "(x * y * y).sum()"},
    )


class ProductRequest(FunctionRequest):
    """vjp / jvp / hvp / vhp: ``v`` is one tensor, or a list with one per output (vjp) or input (the rest)."""

    strict: bool = False
    v: Any = Field(None, json_schema_extra={"anyOf": [TENSOR_IN_SCHEMA, {"type": "array", "items": TENSOR_IN_SCHEMA}]})


class VjpRequest(ProductRequest):
    model_config = _examples(
        {
            "inputs": {"x": [0.5, -1.0, 2.0]},
            "program": "y = x * 2\nwhile y.norm() < 1000:\n    y = y * 2\nreturn y",
            "v": [0.1, 1.0, 0.0001],
        },
    )


class JvpRequest(ProductRequest):
    model_config = _examples({"inputs": {"x": [0.5, 0.7], "y": [0.6, 0.4]},
                              "program": "return 2 * x.exp() + 3 * y", "v": [[1.0, 0.0], [0.0, 1.0]]})


class HvpRequest(ProductRequest):
    model_config = _examples({"inputs": {"x": [0.5, 0.7, 0.2]}, "expr": "(x.exp() * x).sum()",
                              "v": [1.0, 0.0, 0.0]})


class GradcheckRequest(FunctionRequest):
    model_config = _examples({"inputs": {"x": {"data": [0.3, 0.9], "requires_grad": True}},
                              "expr": "(x.sin() * x).sum()"})

    dtype: str | None = Field("float64", description="inputs are checked in float64 unless told otherwise")
    eps: float = Field(1e-6, gt=0, le=1)
    atol: float = Field(1e-5, ge=0)
    rtol: float = Field(1e-3, ge=0)


class ProfileRequest(FunctionRequest):
    model_config = _examples(
        {
            "inputs": {"x": {"data": [[0.5, 1.0, 1.5], [2.0, 2.5, 3.0]], "requires_grad": True},
                       "y": {"data": [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]], "requires_grad": True}},
            "program": "z = x\nfor i in range(10):\n    z = (z / x) * y\nreturn z.sum()",
            "repeat": 2,
            "backward": True,
        },
    )

    repeat: int = Field(1, ge=1, le=1000, description="run the function this many times")
    backward: bool = Field(False, description="also profile backward of the (summed) outputs")
    record_shapes: bool = False


# ---- responses -----------------------------------------------------------------------


class ProfileOut(BaseModel):
    """A profiler summary: key_averages rows, the formatted table, a Chrome trace."""

    rows: list[dict[str, Any]]
    totals: dict[str, Any] = Field(default_factory=dict)
    table: str
    trace: dict[str, Any]


class ComputeResponse(BaseModel):
    outputs: list[TensorOut]
    profile: ProfileOut | None = None


class EvaluateResponse(ComputeResponse):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"outputs": [{"shape": [], "dtype": "float32", "data": [3.0]}]}]})


class GraphNodeOut(BaseModel):
    """A grad_fn node: PyTorch's name, and its next_functions as [node | null, index] pairs."""

    name: str
    id: int = Field(description="the same id each time a shared node appears")
    variable: str | None = Field(None, description="for AccumulateGrad: the input it accumulates into")
    next_functions: list[tuple[GraphNodeOut | None, int]] = Field(default_factory=list)
    repeat: bool | None = Field(None, description="shown in full at its first appearance")
    truncated: bool | None = Field(None, description="deeper nodes left out (max_graph_depth)")


class GradResponse(ComputeResponse):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "outputs": [{"shape": [], "dtype": "float32", "data": [3.0]}],
        "grads": {"a": {"shape": [1], "dtype": "float32", "data": [2.0]}},
        "graph": [{"name": "SumBackward0", "id": 0, "next_functions": [
            [{"name": "AccumulateGrad", "id": 1, "variable": "a", "next_functions": []}, 0]]}],
    }]})

    grads: dict[str, TensorOut | None]
    graph: list[GraphNodeOut | None]


def _response_examples(*examples) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": list(examples)})


_OUT_2 = {"shape": [2], "dtype": "float32", "data": [5.0974426, 5.2275057]}
_SCALAR_OUT = {"shape": [], "dtype": "float32", "data": [2.478268]}
_VECTOR_3 = {"shape": [3], "dtype": "float32", "data": [4.1218033, 0.0, 0.0]}


class JacobianResponse(ComputeResponse):
    model_config = _response_examples({"outputs": [_OUT_2], "jacobian": [
        {"shape": [2, 2], "dtype": "float32", "data": [3.2974424, 0.0, 0.0, 4.0275054]},
        {"shape": [2, 2], "dtype": "float32", "data": [3.0, 0.0, 0.0, 3.0]}]})

    jacobian: Nested


class HessianResponse(ComputeResponse):
    model_config = _response_examples({"outputs": [_SCALAR_OUT], "hessian": {
        "shape": [3, 3], "dtype": "float32", "data": [4.1218033, 0, 0, 0, 5.437132, 0, 0, 0, 2.687086]}})

    hessian: Nested


class VjpResponse(ComputeResponse):
    model_config = _response_examples({"outputs": [{"shape": [3], "dtype": "float32", "data": [256.0, -512.0, 1024.0]}],
                                       "vjp": {"shape": [3], "dtype": "float32", "data": [51.2, 512.0, 0.0512]}})

    vjp: Nested


class JvpResponse(ComputeResponse):
    model_config = _response_examples({"outputs": [_OUT_2],
                                       "jvp": {"shape": [2], "dtype": "float32", "data": [3.2974424, 3.0]}})

    jvp: Nested


class HvpResponse(ComputeResponse):
    model_config = _response_examples({"outputs": [_SCALAR_OUT], "hvp": _VECTOR_3})

    hvp: Nested


class VhpResponse(ComputeResponse):
    model_config = _response_examples({"outputs": [_SCALAR_OUT], "vhp": _VECTOR_3})

    vhp: Nested


class GradcheckResponse(BaseModel):
    model_config = _response_examples({"passed": True, "max_abs_error": 2.6e-11, "max_rel_error": 1.9e-11,
                                       "input": None, "output": None, "eps": 1e-6, "atol": 1e-5, "rtol": 1e-3})

    passed: bool
    max_abs_error: float
    max_rel_error: float
    input: str | None = Field(None, description="the first input whose Jacobian disagrees")
    output: int | None = Field(None, description="the output index where it disagrees")
    eps: float
    atol: float
    rtol: float
    point: int | None = Field(None, description="with batch: the point reported (the first failing one, else the "
                                                "one with the largest error)")


class ProfileResponse(ProfileOut):
    model_config = _response_examples({
        "rows": [{"name": "engine::sin", "count": 2, "self_cpu_time_total_us": 21.0, "cpu_time_total_us": 21.0}],
        "totals": {"self_cpu_time_total_us": 21.0, "events": 2},
        "table": "Name  Self CPU %  Self CPU ...",
        "trace": {"traceEvents": [], "displayTimeUnit": "ms"},
        "outputs": [{"shape": [], "dtype": "float32", "data": [0.99999994]}],
    })

    outputs: list[TensorOut] = Field(default_factory=list)


class OpInfo(BaseModel):
    name: str
    doc: str
    inputs: list[str]
    params: dict[str, Any]
    required_params: list[str]
    arity: int | None
    variadic: bool
    linear: bool
    nondiff: bool
    method: bool = Field(description="whether Tensor has a method of the op's own name (`methods` lists them all)")
    functions: list[str] = Field(description="the engine functions that run the op (`engine.sin`, `sin` in a program)")
    methods: list[str] = Field(description="the Tensor methods that run it out of place (`x.sin()`)")
    inplace: list[str] = Field(description="the Tensor methods that run it in place (`x.sin_()`; not in programs)")
    public: bool = Field(description="whether clients may call it (programs through its functions and methods, "
                         "graphs by its name); false for the engine's internal ops")
    grad_fn: str | None = Field(description="PyTorch's grad_fn name; null when it depends on the arguments")


class OpsResponse(BaseModel):
    model_config = _response_examples({"ops": [{
        "name": "sin", "doc": "sine", "inputs": ["x"], "params": {}, "required_params": [], "arity": 1,
        "variadic": False, "linear": False, "nondiff": False, "method": True, "functions": ["sin", "sin_"],
        "methods": ["sin"], "inplace": ["sin_"], "public": True, "grad_fn": "SinBackward0"}],
        "functions": ["sin", "sum"]})

    ops: list[OpInfo]
    functions: list[str] = Field(default_factory=list, description="names callable from expr and program")


class InfoResponse(BaseModel):
    model_config = _response_examples({"name": "gradserve", "version": "0.1.0", "devices": {"cpu": True, "cuda": False},
                                       "limits": {"deadline_s": 10.0, "max_program_steps": 100000}, "auth": False,
                                       "blas": {"threads_setting": 1, "threads": 1, "libraries": [
                                           {"library": "openblas", "file": "libscipy_openblas64_.so",
                                            "version": "0.3.31", "architecture": "SkylakeX",
                                            "threading_layer": "pthreads", "threads": 1}]}})

    name: str
    version: str
    devices: dict[str, bool]
    cuda: dict[str, Any] | None = Field(None, description="device_count, unavailable_reason (why 'cuda' cannot be "
                                                          "used, or null), memory_limit_bytes, and per GPU "
                                                          "(gpus): index, name, total_memory, free_memory, "
                                                          "memory_used_bytes, compute capability, SM count")
    limits: dict[str, Any]
    auth: bool = Field(description="whether an API key is required")
    blas: dict[str, Any] | None = Field(None, description="threads_setting (GRADSERVE_BLAS_THREADS), threads (what "
                                                          "the BLAS libraries run with now), and per library "
                                                          "(libraries): library, file, version, architecture "
                                                          "(the CPU kernel), threading_layer, threads")


class HealthResponse(BaseModel):
    model_config = _response_examples({"status": "ok"})

    status: str


GraphNodeOut.model_rebuild()


# ---- models (/v1/models) --------------------------------------------------------------

NonFinite = Literal["NaN", "Infinity", "-Infinity"]

# The docs page's examples work in sequence: a reader who tries the first example of each
# operation, top to bottom, creates this model and then forwards, trains and reloads it. It is the
# tutorial's TinyModel in miniature (linear, ReLU, linear; sum-of-squares loss; SGD) with 2 inputs
# and 1 output, so that a batch fits on one line of the page; its learning rate is 0.1 rather than
# the tutorial's 0.001 so that the train example's 10 steps visibly lower the loss. TinyModel itself
# (16 x 1000 inputs: unreadable as an example body) is the second example.
EXAMPLE_MODEL_SPEC = {
    "layers": [{"type": "linear", "in_features": 2, "out_features": 4}, {"type": "relu"},
               {"type": "linear", "in_features": 4, "out_features": 1}],
    "loss": {"type": "mse", "reduction": "sum"},
    "optimizer": {"type": "sgd", "lr": 0.1},
    "seed": 0,
}
MODEL_SPEC_EXAMPLES = {
    "small": {"summary": "TinyModel in miniature: 2 -> 4 -> ReLU -> 1 (fits the forward and train examples)",
              "value": EXAMPLE_MODEL_SPEC},
    "tiny_model": {"summary": "The tutorial's TinyModel: 1000 -> 100 -> ReLU -> 10 (inputs of 1000 features)",
                   "value": TINY_MODEL_SPEC},
    "adam": {"summary": "One linear layer trained with Adam",
             "value": {"layers": [{"type": "linear", "in_features": 2, "out_features": 1}],
                       "optimizer": {"type": "adam", "lr": 0.01}, "seed": 1}},
}
# A state for EXAMPLE_MODEL_SPEC, as PUT .../state takes it: hidden unit 0 computes relu(x[1] - x[0])
# and the output copies it, which fits the train example's targets exactly. Grads, optimizer and
# generator state are left out: they start afresh.
EXAMPLE_MODEL_STATE = {
    "format": "gradserve.model/1",
    "spec": EXAMPLE_MODEL_SPEC,
    "step": 0,
    "parameters": {
        "0.weight": [[-1.0, 1.0], [1.0, -1.0], [0.5, 0.5], [-0.5, -0.5]],
        "0.bias": [0.0, 0.0, 0.0, 0.0],
        "2.weight": [[1.0, 0.0, 0.0, 0.0]],
        "2.bias": [0.0],
    },
}


class ModelCreateRequest(BaseModel):
    """A model spec (frontends.model_spec): layers, loss, optimizer, optional scheduler, seed and dtype.

    The parts are checked by the engine, which names the one at fault (422, ``layer``).
    """

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        example["value"] for example in MODEL_SPEC_EXAMPLES.values()]})

    layers: list[dict[str, Any]] = Field(
        min_length=1, max_length=MAX_LIST_ITEMS,
        description="linear (in_features, out_features, bias), relu, tanh, sigmoid, gelu, leaky_relu, elu, silu, "
                    "softmax, dropout, flatten, identity, conv2d (in_channels, out_channels, kernel_size, stride, "
                    "padding, dilation, groups, bias), max_pool2d (kernel_size, stride, padding), batch_norm "
                    "(num_features), layer_norm (normalized_shape), embedding (num_embeddings, embedding_dim, first "
                    "layer only); each {\"type\": ..., fields}")
    loss: dict[str, Any] | None = Field(None, description="mse (default), l1, cross_entropy, bce, bce_with_logits, "
                                                          "huber; with reduction mean|sum|none")
    optimizer: dict[str, Any] | None = Field(None, description="sgd (default, lr 0.001), adam, adamw, rmsprop, "
                                                               "adagrad, with PyTorch's hyperparameter names")
    scheduler: dict[str, Any] | None = Field(None, description="step, exponential or cosine")
    seed: int | None = Field(None, ge=0, description="weights as engine.manual_seed(seed) would draw them")
    dtype: Literal["float32", "float64"] | None = None
    device: Annotated[str, StringConstraints(pattern=DEVICE_PATTERN)] | None = Field(
        None, description="where the model lives (default cpu): 'cpu', 'cuda' or 'cuda:N'; 'cuda' without a GPU, "
                          "or an N past the visible devices, is a 400 naming what is missing")


class ModelResponse(BaseModel):
    """A model: id, version (its ETag), optimizer steps taken, parameter shapes and count, the full spec."""

    model_config = _response_examples({
        "id": "5f0c8a3e9b8d4f0aa1c2d3e4f5a6b7c8", "version": 1, "etag": '"1"', "step": 0,
        "parameters": {"0.weight": [4, 2], "0.bias": [4], "2.weight": [1, 4], "2.bias": [1]},
        "parameter_count": 17, "spec": EXAMPLE_MODEL_SPEC, "created_at": 1.7e9, "updated_at": 1.7e9,
        "location": "/v1/models/5f0c8a3e9b8d4f0aa1c2d3e4f5a6b7c8"})

    id: str
    version: int
    etag: str
    step: int
    parameters: dict[str, list[int]] = Field(description="named_parameters() names -> shapes")
    parameter_count: int
    spec: dict[str, Any] = Field(description="the spec with every default filled in")
    created_at: float
    updated_at: float
    location: str


class ModelListResponse(BaseModel):
    models: list[ModelResponse]
    total: int
    offset: int
    limit: int
    next: str | None = Field(None, description="the next page's URL, or null on the last page")


class ForwardRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"input": [[0.5, -1.0]], "target": [[1.0]]}]})

    input: TensorIn
    target: TensorIn | None = None
    encoding: Literal["json", "base64", "binary"] = "json"


class ForwardResponse(BaseModel):
    output: TensorOut
    loss: float | NonFinite | None = None
    step: int
    version: int


class BackwardRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"input": [[0.5, -1.0]], "target": [[1.0]]}]})

    input: TensorIn
    target: TensorIn


class LossResponse(BaseModel):
    loss: float | NonFinite
    version: int


class StepResponse(BaseModel):
    step: int = Field(description="optimizer steps taken")
    version: int


class ZeroGradRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"set_to_none": True}]})

    set_to_none: bool = Field(True, description="grads become null (true) or zeros (false), as in PyTorch")


class TrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"inputs": [[0.0, 1.0], [1.0, 0.0]], "targets": [[1.0], [0.0]], "steps": 10},
        {"inputs": [[0.0, 1.0], [1.0, 0.0]], "targets": [[1.0], [0.0]], "steps": 4, "batch_size": 1}]})

    inputs: TensorIn
    targets: TensorIn
    steps: int = Field(1, ge=1, le=100_000, description="rounds of zero_grad, forward, backward, step")
    batch_size: int | None = Field(None, ge=1, description="rows per step (batch k is rows k*size.., wrapping)")


class TrainResponse(BaseModel):
    losses: list[float | NonFinite] = Field(description="each step's loss, before its update")
    step: int
    version: int


class ParametersResponse(BaseModel):
    parameters: dict[str, TensorOut]
    grads: dict[str, TensorOut | None] | None = None
    step: int
    version: int


class StateResponse(BaseModel):
    """``TrainableModel.state()`` with arrays as tensors (``Accept: application/x-npz`` gives an .npz instead)."""

    model_config = ConfigDict(extra="allow")

    format: str
    spec: dict[str, Any]
    step: int
    parameters: dict[str, Any]
    grads: dict[str, Any]


# ---- functions as resources (/v1/functions) ---------------------------------------------

FUNCTION_FIELDS = ("expr", "program", "graph")
EXAMPLE_FUNCTION = {"expr": "(2 * sin(a) + 1).sum()"}


class FunctionCreateRequest(BaseModel):
    """A function to keep: exactly one of ``expr``, ``program``, ``graph``, as the compute requests take them."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [EXAMPLE_FUNCTION, {"graph": EXAMPLE_GRAPH["graph"]},
                     {"program": "y = x * 2\nwhile y.norm() < 1000:\n    y = y * 2\nreturn y.sum()"}],
        "oneOf": ONE_FUNCTION})

    expr: Annotated[str, StringConstraints(max_length=20_000)] | SkipJsonSchema[None] = None
    program: Annotated[str, StringConstraints(max_length=100_000)] | SkipJsonSchema[None] = None
    graph: GraphSpec | SkipJsonSchema[None] = None

    @model_validator(mode="after")
    def _exactly_one_function(self):
        return FunctionRequest._exactly_one_function(self)


class FunctionResponse(BaseModel):
    """A stored function: its id (the sha256 of its canonical form), where it lives, and the function."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "<64 hex digits>", "location": "/v1/functions/<id>", "form": "expr", "inputs": ["a"],
        "expr": "(2 * sin(a) + 1).sum()"}]})

    id: str
    location: str
    form: Literal["expr", "program", "graph"]
    inputs: list[str] = Field(description="the free names the function reads: what a call's inputs name")
    expr: str | None = None
    program: str | None = None
    graph: GraphSpec | None = None


def _stored(model: type[FunctionRequest], *examples: dict) -> type[BaseModel]:
    """``model`` without the function: the body of ``POST /v1/functions/{id}/<transform>``."""
    fields = {name: (info.annotation, info) for name, info in model.model_fields.items() if name not in FUNCTION_FIELDS}
    config = ConfigDict(extra="forbid", json_schema_extra={"examples": list(examples)})
    return create_model(f"Stored{model.__name__}", __config__=config, **fields)


_STORED_POINT = {"inputs": {"a": SIN_INPUT}}
_STORED_V = {"inputs": {"a": [0.0, 1.5707964, 3.1415927]}, "v": [1.0, 0.0, 0.0]}
_STORED_BATCH = {"inputs": {"a": {"data": [[0.0, 0.5, 1.0], [1.5, 2.0, 2.5]], "requires_grad": True}},
                 "batch": ["a"]}

STORED_REQUESTS: dict[str, type[BaseModel]] = {
    "evaluate": _stored(EvaluateRequest, _STORED_POINT, _STORED_BATCH),
    "grad": _stored(GradRequest, _STORED_POINT, _STORED_BATCH),
    "jacobian": _stored(JacobianRequest, _STORED_POINT, _STORED_BATCH),
    "hessian": _stored(HessianRequest, _STORED_POINT, _STORED_BATCH),
    "vjp": _stored(VjpRequest, {**_STORED_POINT, "v": 1.0}),
    "jvp": _stored(JvpRequest, _STORED_V),
    "hvp": _stored(HvpRequest, _STORED_V),
    "vhp": _stored(HvpRequest, _STORED_V),
    "gradcheck": _stored(GradcheckRequest, _STORED_POINT, _STORED_BATCH),
    "profile": _stored(ProfileRequest, {**_STORED_POINT, "backward": True}),
}
