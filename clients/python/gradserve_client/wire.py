"""numpy arrays <-> gradserve's wire forms, for requests and responses.

Three encodings (the server's DESIGN.md "Wire format"):
- ``"json"``: ``{"data": [...], "shape", "dtype"}``, non-finite floats as the strings
  ``"NaN"``, ``"Infinity"``, ``"-Infinity"``;
- ``"base64"``: ``{"b64", "shape", "dtype"}``, raw little-endian bytes in base64;
- ``"binary"``: the Open Inference Protocol (KServe v2) binary-data extension. The body
  is a JSON header of ``Inference-Header-Content-Length`` bytes in which each tensor is
  ``{"shape", "dtype", "parameters": {"binary_data_size": n}}``, followed by the tensors'
  raw little-endian bytes in the order they appear in the header.

``encode_body`` walks a request in the order ``json.dumps`` writes it, so the bytes
it appends line up with the header's tensors; ``decode_body`` walks a response the same
way, as ``json.loads`` keeps the document's key order.
"""

from __future__ import annotations

import base64
import json
import math

import numpy as np

BINARY = "application/octet-stream"
HEADER_LENGTH = "Inference-Header-Content-Length"
ENCODINGS = ("binary", "base64", "json")
_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


class WireError(ValueError):
    """A response that does not follow the wire format (a server or proxy bug, not a problem)."""


class Plain:
    """Numbers or nested lists given for a tensor. They travel as JSON without a dtype, so the
    server picks its own default for the route (float32, or float64 for gradcheck), as it does
    for a nested list sent by hand."""

    __slots__ = ("array",)

    def __init__(self, value):
        self.array = np.asarray(value, dtype=np.float64)


def as_array(value):
    """A request tensor: numpy arrays (and scalars) keep their dtype; anything else is ``Plain``."""
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, np.generic):
        return np.asarray(value)
    return Plain(value)


def _json_data(array: np.ndarray) -> list:
    flat = array.ravel().tolist()
    if array.dtype.kind in "fc" and not np.isfinite(array).all():
        return [_finite_or_name(v) for v in flat]
    return flat


def _finite_or_name(value: float):
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _little_endian(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))


def encode_tensor(array: np.ndarray, encoding: str, chunks: list[bytes], requires_grad: bool = False) -> dict:
    """The wire object for ``array``; with ``"binary"`` its bytes are appended to ``chunks``."""
    if array.dtype.kind not in "biuf":
        raise TypeError(f"gradserve carries bool, integer and float tensors, not {array.dtype}")
    obj = {"shape": list(array.shape), "dtype": array.dtype.name}
    if encoding == "json":
        obj["data"] = _json_data(array)
    else:
        raw = _little_endian(array).tobytes()
        if encoding == "base64":
            obj["b64"] = base64.b64encode(raw).decode("ascii")
        else:
            obj["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
    if requires_grad:
        obj["requires_grad"] = True
    return obj


class Leaf:
    """An input tensor that should require grad on the server (``"requires_grad": true``)."""

    __slots__ = ("tensor",)

    def __init__(self, tensor):
        self.tensor = tensor


def _encode_plain(plain: Plain, requires_grad: bool = False) -> dict:
    obj = {"shape": list(plain.array.shape), "data": _json_data(plain.array)}
    if requires_grad:
        obj["requires_grad"] = True
    return obj


def _encode_tree(value, encoding: str, chunks: list[bytes]):
    if isinstance(value, Leaf):
        if isinstance(value.tensor, Plain):
            return _encode_plain(value.tensor, requires_grad=True)
        return encode_tensor(value.tensor, encoding, chunks, requires_grad=True)
    if isinstance(value, Plain):
        return _encode_plain(value)
    if isinstance(value, (np.ndarray, np.generic)):
        return encode_tensor(np.asarray(value), encoding, chunks)
    if isinstance(value, dict):
        return {key: _encode_tree(item, encoding, chunks) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode_tree(item, encoding, chunks) for item in value]
    return value


def encode_body(body: dict, encoding: str, *, name_encoding: bool) -> tuple[bytes, dict[str, str]]:
    """The request's bytes and content headers. numpy arrays (and ``Leaf``s) anywhere in ``body``
    become tensors. ``name_encoding`` adds the body's ``encoding`` field (the compute routes
    answer in the encoding it names; a binary answer is asked for with ``Accept`` instead)."""
    chunks: list[bytes] = []
    tree = _encode_tree(body, encoding, chunks)
    if encoding == "binary":
        header = json.dumps(tree, separators=(",", ":")).encode()
        return b"".join([header, *chunks]), {"Content-Type": BINARY, HEADER_LENGTH: str(len(header))}
    if name_encoding:
        tree["encoding"] = encoding
    return json.dumps(tree, separators=(",", ":")).encode(), {"Content-Type": "application/json"}


def _dtype(name: str) -> np.dtype:
    try:
        return np.dtype(name).newbyteorder("<")
    except TypeError:
        raise WireError(f"unknown dtype {name!r} in the response") from None


class _Reader:
    """The binary tail of a response, consumed tensor by tensor in document order."""

    def __init__(self, tail: memoryview):
        self.tail = tail
        self.offset = 0

    def take(self, size: int) -> memoryview:
        end = self.offset + size
        if end > len(self.tail):
            raise WireError("the response's binary tensors run past its body")
        piece = self.tail[self.offset:end]
        self.offset = end
        return piece


def decode_tensor(obj: dict, reader: _Reader | None = None) -> np.ndarray:
    dtype = _dtype(obj["dtype"])
    shape = tuple(obj["shape"])
    if "b64" in obj:
        array = np.frombuffer(base64.b64decode(obj["b64"]), dtype=dtype)
    elif "data" in obj:
        data = obj["data"]
        if dtype.kind == "f" and any(isinstance(v, str) for v in data):
            data = [_NON_FINITE.get(v, v) if isinstance(v, str) else v for v in data]
        array = np.asarray(data, dtype=dtype)
    else:
        if reader is None:
            raise WireError("a binary tensor in a response that is not binary")
        array = np.frombuffer(reader.take(obj["parameters"]["binary_data_size"]), dtype=dtype)
    return array.reshape(shape).astype(dtype.newbyteorder("="), copy=False)


def _is_tensor(value) -> bool:
    return isinstance(value, dict) and "shape" in value and "dtype" in value and (
        "data" in value or "b64" in value or "parameters" in value)


def decode_tree(value, reader: _Reader | None = None):
    """Every tensor object in a parsed response as a numpy array; lists and dicts kept."""
    if _is_tensor(value):
        return decode_tensor(value, reader)
    if isinstance(value, dict):
        return {key: decode_tree(item, reader) for key, item in value.items()}
    if isinstance(value, list):
        return [decode_tree(item, reader) for item in value]
    return value


# Response fields that never hold a tensor: left as parsed, not walked (an autograd graph is a
# deep nest of small dicts, and walking it cost more than the rest of a small call's decoding).
TENSORLESS = frozenset({"graph", "trace", "rows", "table", "spec"})


def _decode_fields(tree, reader: _Reader | None):
    if not isinstance(tree, dict):
        return decode_tree(tree, reader)
    return {key: value if key in TENSORLESS else decode_tree(value, reader) for key, value in tree.items()}


def decode_body(content: bytes, headers) -> dict:
    """A successful response's JSON with its tensors as arrays."""
    if headers.get("content-type", "").startswith(BINARY):
        try:
            length = int(headers[HEADER_LENGTH])
        except (KeyError, ValueError):
            raise WireError(f"a binary response needs an integer {HEADER_LENGTH} header") from None
        view = memoryview(content)
        if not 0 <= length <= len(view):
            raise WireError(f"{HEADER_LENGTH} {length} is beyond the body's {len(view)} bytes")
        reader = _Reader(view[length:])
        tree = _decode_fields(json.loads(bytes(view[:length])), reader)
        if reader.offset != len(reader.tail):
            raise WireError(f"{len(reader.tail) - reader.offset} bytes after the response's last tensor")
        return tree
    return _decode_fields(json.loads(content), None) if content else {}
