"""Model specs: a JSON description -> model, loss and optimizer; and the full training state.

A spec is a dict of plain JSON values, for example::

    {"layers": [{"type": "linear", "in_features": 1000, "out_features": 100},
                {"type": "relu"},
                {"type": "linear", "in_features": 100, "out_features": 10}],
     "loss": {"type": "mse", "reduction": "sum"},
     "optimizer": {"type": "sgd", "lr": 0.001},
     "scheduler": {"type": "step", "step_size": 10, "gamma": 0.5},     (optional)
     "seed": 0, "dtype": "float32", "device": "cpu"}                   (optional)

Layer types: linear (in_features, out_features, bias), relu, tanh, sigmoid,
gelu (approximate), leaky_relu (negative_slope), elu (alpha), silu, softmax
(dim), dropout (p), flatten (start_dim, end_dim), identity; conv2d
(in_channels, out_channels, kernel_size, stride, padding (or "same"/"valid"),
dilation, groups, bias), max_pool2d (kernel_size, stride, padding, dilation,
ceil_mode), batch_norm (num_features, eps, momentum, affine: BatchNorm2d after
a conv2d or max_pool2d, else BatchNorm1d), layer_norm (normalized_shape, eps,
elementwise_affine), embedding (num_embeddings, embedding_dim, padding_idx: the
first layer only, its input class indices). Losses: mse, l1, cross_entropy (ignore_index, label_smoothing), bce,
bce_with_logits, huber (delta); each with reduction mean|sum|none. Optimizers:
sgd, adam, adamw, rmsprop, adagrad with PyTorch's hyperparameter names.
Schedulers: step (step_size, gamma), exponential (gamma), cosine (T_max,
eta_min). ``ModelSpec.parse`` checks all of it and fills the defaults; errors
are ``SpecError`` naming the offending part ("layers[2] (linear): ...").

The model is an ``nn.Sequential``, so parameters are named as PyTorch names
them: "0.weight", "0.bias", "2.weight"... Weights are drawn from a generator
seeded with ``seed``: the same values as ``engine.manual_seed(seed)`` followed
by building the same ``nn.Sequential`` by hand.

``TrainableModel.state()`` returns a plain dict (the format is documented on
the method) of numbers, strings, lists and numpy arrays; ``from_state`` gives
back a model that continues bit for bit as the original would on the same
machine and BLAS settings (elsewhere the last bits may differ: OpenBLAS picks
its kernels by CPU and splits sums by thread count). Nothing here
knows about HTTP. Errors: ``SpecError`` (a ValueError, with ``path``) for a bad
spec; ValueError for inputs, targets or a state that do not fit the model.
"""

from __future__ import annotations

import math
import numbers

from engine import backend, creation, nn, optim
from engine.autograd.grad_mode import no_grad
from engine.nn.init import use_generator
from engine.tensor import Tensor

# The tutorial's TinyModel (1000 -> 100 -> ReLU -> 10, sum-of-squares loss, SGD at lr 0.001) as a
# spec: the service's example, the models benchmark and the integration tests all build this one.
TINY_MODEL_SPEC = {
    "layers": [{"type": "linear", "in_features": 1000, "out_features": 100}, {"type": "relu"},
               {"type": "linear", "in_features": 100, "out_features": 10}],
    "loss": {"type": "mse", "reduction": "sum"},
    "optimizer": {"type": "sgd", "lr": 0.001},
    "seed": 0,
}

STATE_FORMAT = "gradserve.model/1"


class SpecError(ValueError):
    """An invalid spec; ``path`` names the part at fault ("layers[2]", "optimizer.lr")."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.detail = message


# ---- field checks -------------------------------------------------------------


def _integer(where, name, value, minimum=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise SpecError(where, f"{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise SpecError(where, f"{name} must be at least {minimum}, got {value}")
    return int(value)


def _number(where, name, value, low=None, high=None, *, open_high=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise SpecError(where, f"{name} must be a finite number, got {value!r}")
    value = float(value)
    if low is not None and value < low:
        raise SpecError(where, f"{name} must be at least {low}, got {value}")
    if high is not None and (value >= high if open_high else value > high):
        raise SpecError(where, f"{name} must be {'below' if open_high else 'at most'} {high}, got {value}")
    return value


def _boolean(where, name, value):
    if not isinstance(value, bool):
        raise SpecError(where, f"{name} must be true or false, got {value!r}")
    return value


def _choice(where, name, value, choices):
    if value not in choices:
        raise SpecError(where, f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def _device(where, value):
    """"cpu", "cuda" (the current CUDA device) or "cuda:N"; whether device N exists is checked when
    the model is built."""
    if not (isinstance(value, str) and (value in ("cpu", "cuda") or (
            value.startswith("cuda:") and value[5:].isdigit() and value[5:].isascii()))):
        raise SpecError(where, f"device must be one of ['cpu', 'cuda', 'cuda:N'], got {value!r}")
    return value


def _betas(where, name, value):
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise SpecError(where, f"{name} must be a list of two numbers, got {value!r}")
    return [_number(where, f"{name}[{i}]", b, 0.0, 1.0, open_high=True) for i, b in enumerate(value)]


def _fields(where, given: dict, schema: dict) -> dict:
    """Check ``given`` against ``schema`` (name -> (check, default)); fill defaults, reject extras."""
    unknown = sorted(set(given) - set(schema) - {"type"})
    if unknown:
        raise SpecError(where, f"unknown field {unknown[0]!r} (expected {sorted(schema) or 'no fields'})")
    result = {}
    for name, (check, default) in schema.items():
        if name in given:
            result[name] = check(where, name, given[name])
        elif default is _REQUIRED:
            raise SpecError(where, f"missing required field {name!r}")
        else:
            result[name] = default
    return result


_REQUIRED = object()


def _int_at_least(minimum):
    return lambda where, name, value: _integer(where, name, value, minimum)


def _int_any(where, name, value):
    return _integer(where, name, value)


def _num(low=None, high=None, open_high=False):
    return lambda where, name, value: _number(where, name, value, low, high, open_high=open_high)


def _one_of(*choices):
    return lambda where, name, value: _choice(where, name, value, choices)


_REDUCTION = (_one_of("mean", "sum", "none"), "mean")


def _pair(minimum):
    """An int, or a list of two, each at least ``minimum`` (a 2-d layer's kernel_size, stride...)."""

    def check(where, name, value):
        if isinstance(value, list):
            if len(value) != 2:
                raise SpecError(where, f"{name} must be an integer or a list of two integers, got {value!r}")
            return [_integer(where, f"{name}[{i}]", v, minimum) for i, v in enumerate(value)]
        return _integer(where, name, value, minimum)

    return check


def _conv_padding(where, name, value):
    if isinstance(value, str):
        return _choice(where, name, value, ("same", "valid"))
    return _pair(0)(where, name, value)


def _optional(check):
    return lambda where, name, value: None if value is None else check(where, name, value)


def _shape(where, name, value):
    """normalized_shape: an int or a non-empty list of positive ints."""
    if isinstance(value, list):
        if not value:
            raise SpecError(where, f"{name} must not be empty")
        return [_integer(where, f"{name}[{i}]", v, 1) for i, v in enumerate(value)]
    return _integer(where, name, value, 1)


def _two(value) -> tuple:
    return tuple(value) if isinstance(value, list) else (value, value)


LAYERS = {
    "linear": {"in_features": (_int_at_least(1), _REQUIRED), "out_features": (_int_at_least(1), _REQUIRED),
               "bias": (_boolean, True)},
    "relu": {},
    "tanh": {},
    "sigmoid": {},
    "gelu": {"approximate": (_one_of("none", "tanh"), "none")},
    "softmax": {"dim": (_int_any, -1)},
    "dropout": {"p": (_num(0.0, 1.0), 0.5)},
    "flatten": {"start_dim": (_int_any, 1), "end_dim": (_int_any, -1)},
    "identity": {},
    "leaky_relu": {"negative_slope": (_num(), 0.01)},
    "elu": {"alpha": (_num(), 1.0)},
    "silu": {},
    "conv2d": {"in_channels": (_int_at_least(1), _REQUIRED), "out_channels": (_int_at_least(1), _REQUIRED),
               "kernel_size": (_pair(1), _REQUIRED), "stride": (_pair(1), 1), "padding": (_conv_padding, 0),
               "dilation": (_pair(1), 1), "groups": (_int_at_least(1), 1), "bias": (_boolean, True)},
    "max_pool2d": {"kernel_size": (_pair(1), _REQUIRED), "stride": (_optional(_pair(1)), None),
                   "padding": (_pair(0), 0), "dilation": (_pair(1), 1), "ceil_mode": (_boolean, False)},
    "batch_norm": {"num_features": (_int_at_least(1), _REQUIRED), "eps": (_num(0.0), 1e-5),
                   "momentum": (_num(0.0, 1.0), 0.1), "affine": (_boolean, True)},
    "layer_norm": {"normalized_shape": (_shape, _REQUIRED), "eps": (_num(0.0), 1e-5),
                   "elementwise_affine": (_boolean, True)},
    "embedding": {"num_embeddings": (_int_at_least(1), _REQUIRED), "embedding_dim": (_int_at_least(1), _REQUIRED),
                  "padding_idx": (_optional(_int_any), None)},
}
_IMAGE_LAYERS = ("conv2d", "max_pool2d")
LOSSES = {
    "mse": {"reduction": _REDUCTION},
    "l1": {"reduction": _REDUCTION},
    "cross_entropy": {"reduction": _REDUCTION, "ignore_index": (_int_any, -100),
                      "label_smoothing": (_num(0.0, 1.0), 0.0)},
    "bce": {"reduction": _REDUCTION},
    "bce_with_logits": {"reduction": _REDUCTION},
    "huber": {"reduction": _REDUCTION, "delta": (_num(0.0), 1.0)},
}
_LR = (_num(0.0), 1e-3)
_WEIGHT_DECAY = (_num(0.0), 0.0)
_MAXIMIZE = (_boolean, False)
OPTIMIZERS = {
    "sgd": {"lr": _LR, "momentum": (_num(0.0), 0.0), "dampening": (_num(), 0.0), "weight_decay": _WEIGHT_DECAY,
            "nesterov": (_boolean, False), "maximize": _MAXIMIZE},
    "adam": {"lr": _LR, "betas": (_betas, [0.9, 0.999]), "eps": (_num(0.0), 1e-8), "weight_decay": _WEIGHT_DECAY,
             "amsgrad": (_boolean, False), "maximize": _MAXIMIZE},
    "adamw": {"lr": _LR, "betas": (_betas, [0.9, 0.999]), "eps": (_num(0.0), 1e-8), "weight_decay": (_num(0.0), 1e-2),
              "amsgrad": (_boolean, False), "maximize": _MAXIMIZE},
    "rmsprop": {"lr": (_num(0.0), 1e-2), "alpha": (_num(0.0), 0.99), "eps": (_num(0.0), 1e-8),
                "weight_decay": _WEIGHT_DECAY, "momentum": (_num(0.0), 0.0), "centered": (_boolean, False),
                "maximize": _MAXIMIZE},
    "adagrad": {"lr": (_num(0.0), 1e-2), "lr_decay": (_num(0.0), 0.0), "weight_decay": _WEIGHT_DECAY,
                "initial_accumulator_value": (_num(0.0), 0.0), "eps": (_num(0.0), 1e-10), "maximize": _MAXIMIZE},
}
SCHEDULERS = {
    "step": {"step_size": (_int_at_least(1), _REQUIRED), "gamma": (_num(0.0), 0.1)},
    "exponential": {"gamma": (_num(0.0), _REQUIRED)},
    "cosine": {"T_max": (_int_at_least(1), _REQUIRED), "eta_min": (_num(0.0), 0.0)},
}
DEFAULT_LOSS = {"type": "mse"}
DEFAULT_OPTIMIZER = {"type": "sgd", "lr": 1e-3}


def _typed_part(where, given, table, kind):
    if not isinstance(given, dict):
        raise SpecError(where, f"must be an object with a \"type\", got {type(given).__name__}")
    kind_name = given.get("type")
    if kind_name not in table:
        raise SpecError(where, f"unknown {kind} type {kind_name!r} (expected one of {sorted(table)})")
    label = f"{where} ({kind_name})"
    return {"type": kind_name, **_fields(label, given, table[kind_name])}


class ModelSpec:
    """A checked spec with every default filled in (``as_dict()`` gives it back as plain JSON)."""

    def __init__(self, layers, loss, optimizer, scheduler, seed, dtype, device="cpu"):
        self.device = device
        self.layers = layers
        self.loss = loss
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.seed = seed
        self.dtype = dtype

    @classmethod
    def parse(cls, spec) -> ModelSpec:
        if isinstance(spec, ModelSpec):
            return spec
        if not isinstance(spec, dict):
            raise SpecError("", f"a model spec must be an object, got {type(spec).__name__}")
        unknown = sorted(set(spec) - {"layers", "loss", "optimizer", "scheduler", "seed", "dtype", "device"})
        if unknown:
            raise SpecError(unknown[0],
                            "unknown field (expected layers, loss, optimizer, scheduler, seed, dtype, device)")
        layers = spec.get("layers")
        if not isinstance(layers, list) or not layers:
            raise SpecError("layers", "must be a non-empty list of layers")
        parsed = [_typed_part(f"layers[{i}]", layer, LAYERS, "layer") for i, layer in enumerate(layers)]
        _check_widths(parsed)
        loss = _typed_part("loss", spec.get("loss", DEFAULT_LOSS), LOSSES, "loss")
        optimizer = _typed_part("optimizer", spec.get("optimizer", DEFAULT_OPTIMIZER), OPTIMIZERS, "optimizer")
        if optimizer["type"] == "sgd" and optimizer["nesterov"] and (optimizer["momentum"] <= 0
                                                                     or optimizer["dampening"] != 0):
            raise SpecError("optimizer (sgd)", "Nesterov momentum requires a momentum and zero dampening")
        scheduler = spec.get("scheduler")
        if scheduler is not None:
            scheduler = _typed_part("scheduler", scheduler, SCHEDULERS, "scheduler")
        seed = spec.get("seed")
        seed = backend.seed_sequence_entropy() if seed is None else _integer("seed", "seed", seed, 0)
        dtype = _choice("dtype", "dtype", spec.get("dtype", "float32"), ("float32", "float64"))
        device = _device("device", spec.get("device", "cpu"))
        return cls(parsed, loss, optimizer, scheduler, seed, dtype, device)

    def as_dict(self) -> dict:
        spec = {"layers": [dict(layer) for layer in self.layers], "loss": dict(self.loss),
                "optimizer": dict(self.optimizer), "seed": self.seed, "dtype": self.dtype}
        if self.scheduler is not None:
            spec["scheduler"] = dict(self.scheduler)
        if self.device != "cpu":  # specs from before devices existed read back unchanged
            spec["device"] = self.device
        return spec

    @property
    def in_features(self) -> int | None:
        """The width the input's last axis must have (the first linear layer's), if fixed."""
        for layer in self.layers:
            if layer["type"] == "linear":
                return layer["in_features"]
            if layer["type"] in ("flatten", "embedding", *_IMAGE_LAYERS):
                return None
        return None

    @property
    def takes_indices(self) -> bool:
        """Whether the input is integer class indices (the model starts with an embedding)."""
        return self.layers[0]["type"] == "embedding"

    def parameter_count(self) -> int:
        """How many numbers the model holds (check it against a limit before ``build``)."""
        return sum(sum(shape_numel(s) for s in layer_parameter_shapes(layer).values()) for layer in self.layers)

    def output_shape(self, shape) -> list[int]:
        """The model's output shape for an input of ``shape``; a ValueError naming the first layer
        that cannot take what reaches it, and the shapes."""
        shape = list(shape)
        for i, layer in enumerate(self.layers):
            shape = _layer_output_shape(f"layers[{i}] ({layer['type']})", layer, shape,
                                        image=_batch_norm_is_2d(self.layers, i))
        return shape


def shape_numel(shape) -> int:
    return math.prod(shape)


def layer_parameter_shapes(layer: dict) -> dict[str, list[int]]:
    """A layer's parameters, named and shaped as PyTorch's module has them."""
    kind = layer["type"]
    shapes = {}
    if kind == "linear":
        shapes["weight"] = [layer["out_features"], layer["in_features"]]
        if layer["bias"]:
            shapes["bias"] = [layer["out_features"]]
    elif kind == "conv2d":
        shapes["weight"] = [layer["out_channels"], layer["in_channels"] // layer["groups"],
                            *_two(layer["kernel_size"])]
        if layer["bias"]:
            shapes["bias"] = [layer["out_channels"]]
    elif kind == "batch_norm" and layer["affine"]:
        shapes = {"weight": [layer["num_features"]], "bias": [layer["num_features"]]}
    elif kind == "layer_norm" and layer["elementwise_affine"]:
        normalized = layer["normalized_shape"]
        normalized = normalized if isinstance(normalized, list) else [normalized]
        shapes = {"weight": list(normalized), "bias": list(normalized)}
    elif kind == "embedding":
        shapes["weight"] = [layer["num_embeddings"], layer["embedding_dim"]]
    return shapes


def _batch_norm_is_2d(layers, index) -> bool:
    """A batch_norm normalizes images (BatchNorm2d) when a conv2d or max_pool2d comes before it with
    no flatten in between; else it is BatchNorm1d."""
    for layer in reversed(layers[:index]):
        if layer["type"] in _IMAGE_LAYERS:
            return True
        if layer["type"] in ("flatten", "linear", "embedding"):
            return False
    return False


def _shape_text(shape) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


def _windowed_size(where, shape, kernel, stride, padding, dilation, ceil_mode=False):
    """(H, W) after a 2-d window of ``kernel`` slides over the last two axes of ``shape``."""
    sizes = []
    for n, k, s, p, d in zip(shape[-2:], _two(kernel), _two(stride), _two(padding), _two(dilation)):
        span = n + 2 * p - d * (k - 1) - 1
        if span < 0:
            raise ValueError(f"{where}: input of shape {_shape_text(shape)} is smaller than the kernel "
                             f"{list(_two(kernel))} (dilation {list(_two(dilation))}, padding {list(_two(padding))})")
        out = (span + (s - 1 if ceil_mode else 0)) // s + 1
        if ceil_mode and (out - 1) * s >= n + p:
            out -= 1
        sizes.append(out)
    return sizes


def _layer_output_shape(where, layer, shape, image):
    """The shape ``layer`` makes of ``shape``; ValueError (naming ``where`` and the shapes) when it cannot."""
    kind = layer["type"]
    if kind == "linear":
        if not shape or shape[-1] != layer["in_features"]:
            raise ValueError(f"{where}: expects {layer['in_features']} features on the last axis, got input of shape "
                             f"{_shape_text(shape)}")
        return shape[:-1] + [layer["out_features"]]
    if kind == "conv2d":
        if len(shape) not in (3, 4) or shape[-3] != layer["in_channels"]:
            raise ValueError(f"{where}: expects input (N, {layer['in_channels']}, H, W) or ({layer['in_channels']}, H, "
                             f"W), got input of shape {_shape_text(shape)}")
        padding = layer["padding"]
        if padding == "same":
            return shape[:-3] + [layer["out_channels"]] + shape[-2:]
        padding = 0 if padding == "valid" else padding
        return shape[:-3] + [layer["out_channels"]] + _windowed_size(
            where, shape, layer["kernel_size"], layer["stride"], padding, layer["dilation"])
    if kind == "max_pool2d":
        if len(shape) not in (3, 4):
            raise ValueError(f"{where}: expects input (N, C, H, W) or (C, H, W), got input of shape "
                             f"{_shape_text(shape)}")
        stride = layer["kernel_size"] if layer["stride"] is None else layer["stride"]
        for k, p in zip(_two(layer["kernel_size"]), _two(layer["padding"])):
            if p > k // 2:
                raise ValueError(f"{where}: padding {p} is more than half the kernel size {k}")
        return shape[:-2] + _windowed_size(where, shape, layer["kernel_size"], stride, layer["padding"],
                                           layer["dilation"], layer["ceil_mode"])
    if kind == "batch_norm":
        ranks = (4,) if image else (2, 3)
        if len(shape) not in ranks or shape[1] != layer["num_features"]:
            layout = "(N, C, H, W)" if image else "(N, C) or (N, C, L)"
            raise ValueError(f"{where}: expects input {layout} with C = {layer['num_features']}, got input of shape "
                             f"{_shape_text(shape)}")
        return shape
    if kind == "layer_norm":
        normalized = layer["normalized_shape"]
        normalized = normalized if isinstance(normalized, list) else [normalized]
        if shape[len(shape) - len(normalized):] != normalized:
            raise ValueError(f"{where}: expects input [*, {', '.join(map(str, normalized))}], got input of shape "
                             f"{_shape_text(shape)}")
        return shape
    if kind == "embedding":
        return shape + [layer["embedding_dim"]]
    if kind == "flatten":
        ndim = len(shape)
        start, end = layer["start_dim"], layer["end_dim"]
        start, end = (start + ndim if start < 0 else start), (end + ndim if end < 0 else end)
        if ndim == 0:
            return [1]
        if not 0 <= start <= end < ndim:
            raise ValueError(f"{where}: start_dim {layer['start_dim']} and end_dim {layer['end_dim']} do not fit "
                             f"input of shape {_shape_text(shape)}")
        return shape[:start] + [shape_numel(shape[start:end + 1])] + shape[end + 1:]
    return shape


def _check_widths(layers) -> None:
    """Each linear layer's in_features must equal the width the layers before it produce; each
    conv2d's in_channels the channels before it; an embedding comes first."""
    width = None  # unknown until the first linear layer
    channels = None  # unknown until the first conv2d
    for i, layer in enumerate(layers):
        kind = layer["type"]
        where = f"layers[{i}] ({kind})"
        if kind == "linear":
            if width is not None and layer["in_features"] != width:
                raise SpecError(where, f"in_features {layer['in_features']} does not match the previous layer's "
                                       f"{width} outputs")
            width = layer["out_features"]
        elif kind == "embedding":
            if i:
                raise SpecError(where, "an embedding must be the first layer (its input is class indices)")
            width = layer["embedding_dim"]
        elif kind == "conv2d":
            if channels is not None and layer["in_channels"] != channels:
                raise SpecError(where, f"in_channels {layer['in_channels']} does not match the previous layer's "
                                       f"{channels} channels")
            for name in ("in_channels", "out_channels"):
                if layer[name] % layer["groups"]:
                    raise SpecError(where, f"{name} {layer[name]} must be divisible by groups {layer['groups']}")
            if layer["padding"] == "same" and any(s != 1 for s in _two(layer["stride"])):
                raise SpecError(where, "padding 'same' needs stride 1")
            channels = layer["out_channels"]
        elif kind == "max_pool2d":
            for k, p in zip(_two(layer["kernel_size"]), _two(layer["padding"])):
                if p > k // 2:
                    raise SpecError(where, f"padding {p} must be at most half the kernel size {k}")
        elif kind == "batch_norm":
            expected = channels if _batch_norm_is_2d(layers, i) else width
            if expected is not None and layer["num_features"] != expected:
                raise SpecError(where, f"num_features {layer['num_features']} does not match the previous layer's "
                                       f"{expected} features")
        elif kind == "flatten":
            width = None


# ---- building -----------------------------------------------------------------


def _layer(layer: dict, dtype: str, image: bool = False):
    kind = layer["type"]
    if kind == "linear":
        return nn.Linear(layer["in_features"], layer["out_features"], bias=layer["bias"], dtype=dtype)
    if kind == "gelu":
        return nn.GELU(layer["approximate"])
    if kind == "softmax":
        return nn.Softmax(layer["dim"])
    if kind == "dropout":
        return nn.Dropout(layer["p"])
    if kind == "flatten":
        return nn.Flatten(layer["start_dim"], layer["end_dim"])
    if kind == "leaky_relu":
        return nn.LeakyReLU(layer["negative_slope"])
    if kind == "elu":
        return nn.ELU(layer["alpha"])
    if kind == "conv2d":
        return nn.Conv2d(layer["in_channels"], layer["out_channels"], _two(layer["kernel_size"]),
                         stride=_two(layer["stride"]),
                         padding=layer["padding"] if isinstance(layer["padding"], str) else _two(layer["padding"]),
                         dilation=_two(layer["dilation"]), groups=layer["groups"], bias=layer["bias"], dtype=dtype)
    if kind == "max_pool2d":
        stride = None if layer["stride"] is None else _two(layer["stride"])
        return nn.MaxPool2d(_two(layer["kernel_size"]), stride, _two(layer["padding"]), _two(layer["dilation"]),
                            ceil_mode=layer["ceil_mode"])
    if kind == "batch_norm":
        kind_2d = nn.BatchNorm2d if image else nn.BatchNorm1d
        return kind_2d(layer["num_features"], eps=layer["eps"], momentum=layer["momentum"], affine=layer["affine"],
                       dtype=dtype)
    if kind == "layer_norm":
        return nn.LayerNorm(layer["normalized_shape"], eps=layer["eps"],
                            elementwise_affine=layer["elementwise_affine"], dtype=dtype)
    if kind == "embedding":
        return nn.Embedding(layer["num_embeddings"], layer["embedding_dim"], padding_idx=layer["padding_idx"],
                            dtype=dtype)
    return {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "identity": nn.Identity, "silu": nn.SiLU}[kind]()


def _loss(loss: dict):
    kind, reduction = loss["type"], loss["reduction"]
    if kind == "cross_entropy":
        return nn.CrossEntropyLoss(ignore_index=loss["ignore_index"], reduction=reduction,
                                   label_smoothing=loss["label_smoothing"])
    if kind == "huber":
        return nn.HuberLoss(reduction=reduction, delta=loss["delta"])
    modules = {"mse": nn.MSELoss, "l1": nn.L1Loss, "bce": nn.BCELoss, "bce_with_logits": nn.BCEWithLogitsLoss}
    return modules[kind](reduction=reduction)


_OPTIMIZER_CLASSES = {"sgd": optim.SGD, "adam": optim.Adam, "adamw": optim.AdamW, "rmsprop": optim.RMSprop,
                      "adagrad": optim.Adagrad}
_SCHEDULER_CLASSES = {"step": optim.lr_scheduler.StepLR, "exponential": optim.lr_scheduler.ExponentialLR,
                      "cosine": optim.lr_scheduler.CosineAnnealingLR}


def _optimizer(spec: dict, params):
    hyper = {k: (tuple(v) if k == "betas" else v) for k, v in spec.items() if k != "type"}
    try:
        return _OPTIMIZER_CLASSES[spec["type"]](params, **hyper)
    except ValueError as error:  # the optimizer's own range checks (e.g. nesterov without momentum)
        raise SpecError(f"optimizer ({spec['type']})", str(error)) from None


def _scheduler(spec: dict | None, optimizer):
    if spec is None:
        return None
    params = {k: v for k, v in spec.items() if k != "type"}
    return _SCHEDULER_CLASSES[spec["type"]](optimizer, **params)


def build(spec) -> tuple:
    """``(model, loss_fn, optimizer)`` from a spec (a dict or a ``ModelSpec``)."""
    model, loss_fn, optimizer, _, _ = _build(ModelSpec.parse(spec))
    return model, loss_fn, optimizer


def _build(spec: ModelSpec):
    backend.namespace(backend.device(spec.device))  # without a GPU, says what is missing before any work
    generator = creation.Generator().manual_seed(spec.seed)
    # Drawn on the host whatever the caller's default device, so a seed gives the same weights on
    # every device; then moved to the spec's device.
    with use_generator(generator), backend.device("cpu"):
        model = nn.Sequential(*(_layer(layer, spec.dtype, _batch_norm_is_2d(spec.layers, i))
                                for i, layer in enumerate(spec.layers)))
    if spec.device != "cpu":
        model.to(spec.device)
    loss_fn = _loss(spec.loss)
    optimizer = _optimizer(spec.optimizer, model.parameters())
    scheduler = _scheduler(spec.scheduler, optimizer)
    return model, loss_fn, optimizer, scheduler, generator


# ---- training -------------------------------------------------------------------


class TrainableModel:
    """A model with its loss, optimizer, optional scheduler, generator (dropout) and step count.

    ``forward`` runs under no_grad in eval mode; ``backward`` and ``train`` run in
    training mode (dropout active, drawing from the model's own seeded generator).
    """

    def __init__(self, spec):
        self.spec = ModelSpec.parse(spec)
        self.model, self.loss_fn, self.optimizer, self.scheduler, self.generator = _build(self.spec)
        self.steps = 0

    # ---- inputs --------------------------------------------------------------

    def _input(self, data, what="input") -> Tensor:
        if self.spec.takes_indices:
            return self._indices(data, what)
        x = data.detach() if isinstance(data, Tensor) else creation.tensor(data, dtype=self.spec.dtype)
        if x.dtype.name != self.spec.dtype:
            x = x.to(self.spec.dtype)
        x = x.to(self.spec.device)
        width = self.spec.in_features
        if width is not None and (x.dim() == 0 or x.shape[-1] != width):
            raise ValueError(
                f"{what} has shape {list(x.shape)}; the first linear layer expects {width} features on the last axis"
            )
        self.spec.output_shape(x.shape)  # a layer that cannot take its input is named before any work
        return x

    def _indices(self, data, what) -> Tensor:
        """The input of a model that starts with an embedding: integer class indices in range."""
        x = data.detach() if isinstance(data, Tensor) else creation.tensor(data)
        rows = self.spec.layers[0]["num_embeddings"]
        array = backend.to_numpy(x._data)
        if array.dtype.kind == "f" and array.size and (array != backend.numpy.round(array)).any():
            raise ValueError(f"layers[0] (embedding): {what} must be integer class indices, got fractional values")
        if array.dtype.kind not in "iuf":
            raise ValueError(f"layers[0] (embedding): {what} must be integer class indices, got {x.dtype}")
        if array.size and (array.min() < 0 or array.max() >= rows):
            raise ValueError(f"layers[0] (embedding): {what} has indices in [{int(array.min())}, {int(array.max())}]; "
                             f"num_embeddings is {rows}, so they must lie in [0, {rows - 1}]")
        x = x.to(backend.int64).to(self.spec.device)
        self.spec.output_shape(x.shape)
        return x

    def _target(self, data) -> Tensor:
        return (data.detach() if isinstance(data, Tensor) else creation.tensor(data)).to(self.spec.device)

    def _loss(self, output, target) -> Tensor:
        if self.spec.loss["type"] == "cross_entropy" and target.dim() == output.dim() - 1:
            target = _class_indices(target)  # one axis fewer than the logits: class indices
        else:
            if tuple(target.shape) != tuple(output.shape):
                raise ValueError(f"target has shape {list(target.shape)}; the model's output has shape "
                                 f"{list(output.shape)} ({self.spec.loss['type']} loss needs them equal)")
            if target.dtype.name != self.spec.dtype:
                target = target.to(self.spec.dtype)
        loss = self.loss_fn(output, target)
        if loss.numel() != 1:
            # reduction="none": the per-element losses are summed for backward (their gradient is ones).
            loss = loss.sum()
        return loss

    # ---- the training loop's pieces ------------------------------------------

    def forward(self, input, target=None):  # noqa: A002 - PyTorch's name
        """``(output, loss or None)`` without recording a graph (eval mode)."""
        x = self._input(input)
        was_training = self.model.training
        self.model.eval()
        try:
            with no_grad():
                output = self.model(x)
                loss = None if target is None else float(self._loss(output, self._target(target)).item())
        finally:
            self.model.train(was_training)
        return output, loss

    def backward(self, input, target) -> float:  # noqa: A002
        """One forward and backward pass; gradients add into ``.grad`` (as repeated ``loss.backward()``)."""
        x, y = self._input(input), self._target(target)
        with use_generator(self.generator):
            loss = self._loss(self.model(x), y)
        loss.backward()
        return float(loss.item())

    def step(self) -> int:
        """One optimizer step (then the scheduler's); returns the step count."""
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.steps += 1
        return self.steps

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def train(self, inputs, targets, steps: int, batch_size: int | None = None) -> list[float]:
        """``steps`` rounds of zero_grad, forward, backward, step over consecutive batches.

        Batch k holds rows ``k * batch_size ...`` (wrapping around the data), so
        training is deterministic. Returns each step's loss (before its update).
        """
        x, y = self._input(inputs, "inputs"), self._target(targets)
        count = x.shape[0] if x.dim() else 0
        if count == 0 or y.dim() == 0 or y.shape[0] != count:
            raise ValueError(f"inputs and targets must have the same number of rows, got {list(x.shape)} and "
                             f"{list(y.shape)}")
        steps = _integer("steps", "steps", steps, 1)
        size = count if batch_size is None else min(_integer("batch_size", "batch_size", batch_size, 1), count)
        xp = backend.namespace_of(x._data)
        losses = []
        for k in range(steps):
            if size == count:
                batch_x, batch_y = x, y
            else:
                rows = (xp.arange(size) + k * size) % count
                batch_x, batch_y = x[rows], y[rows]
            self.zero_grad()
            losses.append(self.backward(batch_x, batch_y))
            self.step()
        return losses

    # ---- inspection and state -------------------------------------------------

    def info(self) -> dict:
        """A short JSON-ready description: spec, steps, parameter shapes and count, current learning rates."""
        params = dict(self.model.named_parameters())
        return {
            "spec": self.spec.as_dict(),
            "step": self.steps,
            "parameters": {name: list(p.shape) for name, p in params.items()},
            "parameter_count": sum(p.numel() for p in params.values()),
            "lr": [group["lr"] for group in self.optimizer.param_groups],
        }

    def named_parameters(self) -> dict:
        """name -> parameter array (a copy)."""
        return {name: backend.to_numpy(p._data).copy() for name, p in self.model.named_parameters()}

    def named_grads(self) -> dict:
        """name -> gradient array (a copy) or None."""
        return {name: None if p._grad is None else backend.to_numpy(p._grad._data).copy()
                for name, p in self.model.named_parameters()}

    def state(self) -> dict:
        """The whole state as plain data::

            {"format": "gradserve.model/1",
             "spec": {...the spec with defaults filled...},
             "step": 3,                                   # optimizer steps taken
             "training": true,
             "parameters": {"0.weight": ndarray, ...},     # named_parameters() order
             "buffers": {"1.running_mean": ndarray, ...},  # named_buffers(): batch_norm statistics
             "grads": {"0.weight": ndarray | None, ...},
             "optimizer": {"state": {"0.weight": {"exp_avg": ndarray, "step": 3, ...}, ...},
                           "param_groups": [{"lr": 0.001, "betas": [0.9, 0.999], ...}]},
             "scheduler": {"last_epoch": 3, "base_lrs": [...], ...} | None,
             "generator": {...numpy PCG64 state: strings and ints...}}

        Arrays are numpy arrays in the model's dtype; ``from_state`` also accepts
        them as nested lists.
        """
        params = dict(self.model.named_parameters())
        optimizer_state = {}
        for name, param in params.items():
            entries = self.optimizer.state.get(param)
            if entries:
                optimizer_state[name] = {
                    key: backend.to_numpy(value._data).copy() if isinstance(value, Tensor) else value
                    for key, value in entries.items()
                }
        groups = [{key: (list(value) if isinstance(value, tuple) else value)
                   for key, value in group.items() if key != "params"}
                  for group in self.optimizer.param_groups]
        scheduler = None
        if self.scheduler is not None:
            scheduler = {key: (list(value) if isinstance(value, (list, tuple)) else value)
                         for key, value in self.scheduler.state_dict().items()}
        return {
            "format": STATE_FORMAT,
            "spec": self.spec.as_dict(),
            "step": self.steps,
            "training": self.model.training,
            "parameters": self.named_parameters(),
            "buffers": {name: backend.to_numpy(b._data).copy() for name, b in self.model.named_buffers()},
            "grads": self.named_grads(),
            "optimizer": {"state": optimizer_state, "param_groups": groups},
            "scheduler": scheduler,
            "generator": _copy_json(self.generator._rng.bit_generator.state),
        }

    @classmethod
    def from_state(cls, state: dict) -> TrainableModel:
        """The model ``state()`` described, continuing exactly where it left off."""
        if state.get("format", STATE_FORMAT) != STATE_FORMAT:
            raise ValueError(f"unknown state format {state.get('format')!r}; expected {STATE_FORMAT!r}")
        trainable = cls(state["spec"])
        trainable.load_state(state)
        return trainable

    def load_state(self, state: dict) -> None:
        """Overwrite parameters, grads, optimizer, scheduler and generator state from ``state()``'s form."""
        spec = ModelSpec.parse(state["spec"]).as_dict()
        if spec != self.spec.as_dict():
            raise ValueError("the state's spec differs from this model's spec; use TrainableModel.from_state")
        params = dict(self.model.named_parameters())
        for section in ("parameters", "grads"):
            unknown = sorted(set(state.get(section, {})) - set(params))
            if unknown:
                raise ValueError(f"state {section} has unknown parameter {unknown[0]!r}; expected {sorted(params)}")
        missing = sorted(set(params) - set(state["parameters"]))
        if missing:
            raise ValueError(f"state parameters lack {missing[0]!r}")
        with no_grad():
            for name, param in params.items():
                param._data[...] = self._array(state["parameters"][name], param, f"parameters.{name}")
                param._version_counter[0] += 1
                grad = state.get("grads", {}).get(name)
                param._grad = None if grad is None else Tensor._make(self._array(grad, param, f"grads.{name}").copy())
        buffers = dict(self.model.named_buffers())
        unknown = sorted(set(state.get("buffers") or {}) - set(buffers))
        if unknown:
            raise ValueError(f"state buffers has unknown buffer {unknown[0]!r}; expected {sorted(buffers)}")
        with no_grad():
            for name, value in (state.get("buffers") or {}).items():  # states without buffers keep the defaults
                buffers[name]._data[...] = self._array(value, buffers[name], f"buffers.{name}")
                buffers[name]._version_counter[0] += 1
        self.optimizer.state = {}
        for name, entries in state.get("optimizer", {}).get("state", {}).items():
            if name not in params:
                raise ValueError(f"optimizer state names unknown parameter {name!r}")
            param = params[name]
            self.optimizer.state[param] = {
                key: (Tensor._make(self._array(value, param, f"optimizer.state.{name}.{key}").copy())
                      if _is_array_like(value) else value)
                for key, value in entries.items()
            }
        groups = state.get("optimizer", {}).get("param_groups")
        if groups is not None:
            if len(groups) != len(self.optimizer.param_groups):
                raise ValueError("optimizer param_groups do not match the model's")
            for group, saved in zip(self.optimizer.param_groups, groups):
                group.update({key: (tuple(value) if key == "betas" else value)
                              for key, value in saved.items() if key != "params"})
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(dict(state["scheduler"]))
        if state.get("generator") is not None:
            self.generator._rng.bit_generator.state = _copy_json(state["generator"])
        self.steps = int(state.get("step", 0))
        self.model.train(bool(state.get("training", True)))

    def _array(self, value, param, where):
        array = backend.numpy.asarray(value, dtype=param._data.dtype)
        if array.shape != param._data.shape:
            raise ValueError(f"{where}: shape {list(array.shape)} does not match the parameter's "
                             f"{list(param._data.shape)}")
        return backend.to_device(array, param.device)


def _is_array_like(value) -> bool:
    return backend.is_array(value) or isinstance(value, (list, tuple))


def _class_indices(target) -> Tensor:
    """Class-index targets as int64; float targets must hold whole numbers."""
    if target.is_floating_point():
        data = target._data
        if not bool((data == data.round()).all()):
            raise ValueError("cross_entropy targets with one axis fewer than the output must be class indices "
                             "(whole numbers)")
    return target.to("int64")


def _copy_json(value):
    if isinstance(value, dict):
        return {key: _copy_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_copy_json(item) for item in value]
    return value
