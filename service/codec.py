"""Tensors on the wire <-> engine Tensors.

In (DESIGN.md "Wire format"): a number, a nested list, ``{"data", "shape",
"dtype"}`` (flat row-major; KServe ``datatype`` names such as ``"FP32"`` are
aliases) or ``{"b64", "shape", "dtype"}`` (raw little-endian bytes). Out:
``{"shape", "dtype", "data"}`` or ``{"shape", "dtype", "b64"}``.

Binary (the Open Inference Protocol's binary-data extension, as KServe v2 and Triton
frame it): a body of ``application/octet-stream`` whose first N bytes (N in the
``Inference-Header-Content-Length`` header) are the JSON request, in which a tensor
may be ``{"shape", "dtype", "parameters": {"binary_data_size": K}}``; the tensors'
raw little-endian C-order bytes follow the JSON, in the order those objects appear
in its text. ``decode_frame`` checks that every byte is accounted for and makes
each such tensor a ``BinaryTensor``, an array viewing the body (nothing is copied
or allocated beyond the body); ``dumps_frame`` writes a response the same way.

Non-finite floats travel as the strings ``"NaN"``, ``"Infinity"`` and
``"-Infinity"`` both ways (JSON has no literal for them, and ``null`` would
lose them silently).

Payloads are never walked element by element in Python on the fast path: the
body is parsed by orjson, lists go straight into ``numpy.asarray``, and
responses hand numpy arrays to orjson (``OPT_SERIALIZE_NUMPY``). numpy is
reached only through ``engine.backend``.

Responses are bounded before they are encoded. Inside ``response_limit(n)``
(every compute and model call), ``encode_tensor`` counts each tensor against
the response's limit before copying it and raises ``ResponseTooLargeError``
past it. orjson cannot fail cleanly: when it cannot grow its output buffer the
process dies (a segmentation fault, not a MemoryError). So only a small share
of a response goes through orjson's buffer at once: tensors beyond the first
``INLINE_ELEMENTS`` numbers are written piecewise, ``SPLICE_CHUNK`` numbers
per orjson call, into pieces that ``dumps_parts`` returns for the server to
send one by one (``dumps`` joins them, in Python, whose allocations raise
MemoryError). Under an address-space limit (RLIMIT_AS) each orjson call first
checks that the room it may need is there (``_reserve``), raising MemoryError
(503) instead.
"""

from __future__ import annotations

import binascii
import contextlib
import contextvars
import gc
import itertools
import math
import mmap
import secrets
import sys
from dataclasses import dataclass

import orjson

with contextlib.suppress(ImportError):  # not on Windows: no address-space limit to respect there
    import resource

try:  # SIMD base64, several times faster than the standard library on megabyte payloads
    import pybase64 as base64
except ImportError:  # pragma: no cover - pybase64 is a dependency; the stdlib is the fallback
    import base64

import engine
from engine import backend
from engine.op import numel
from engine.tensor import Tensor

np = backend.np

# KServe / Open Inference Protocol datatype names, accepted as dtype aliases.
DATATYPES = {
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
    "INT32": "int32",
    "INT64": "int64",
    "BOOL": "bool",
}
NONFINITE_IN = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
TENSOR_KEYS = {"data", "b64", "shape", "dtype", "datatype", "requires_grad", "name", "parameters"}
MAX_DIMS = 32


class CodecError(ValueError):
    """A tensor in the request cannot be decoded; ``input`` names it (e.g. ``inputs.a``)."""

    def __init__(self, message: str, *, input: str | None = None, too_large: bool = False):  # noqa: A002
        super().__init__(message)
        self.message = message
        self.input = input
        self.too_large = too_large


@dataclass
class ElementBudget:
    """Counts elements over one request's tensors against the settings' limits."""

    per_tensor: int
    per_request: int
    used: int = 0

    def take(self, count: int, where: str) -> None:
        if count > self.per_tensor:
            raise CodecError(
                f"{where} has {count} elements; at most {self.per_tensor} are allowed per tensor",
                input=where, too_large=True,
            )
        self.used += count
        if self.used > self.per_request:
            raise CodecError(
                f"the request's tensors hold more than {self.per_request} elements in all (at {where})",
                input=where, too_large=True,
            )


def resolve_dtype(spec, where: str = "dtype"):
    """An engine dtype from a name ("float32", "double") or a KServe datatype ("FP32")."""
    if not isinstance(spec, str):
        raise CodecError(f"{where}: dtype must be a string such as 'float32', got {spec!r}", input=where)
    try:
        return backend.dtype(DATATYPES.get(spec, spec))
    except TypeError:
        names = sorted(set(backend.DTYPES) | set(DATATYPES))
        raise CodecError(f"{where}: unknown dtype {spec!r}; expected one of {names}", input=where) from None


def _replace_nonfinite(value, where: str):
    """The slow path for lists that hold strings: only the three non-finite names are allowed."""
    if isinstance(value, list):
        return [_replace_nonfinite(v, where) for v in value]
    if isinstance(value, str):
        try:
            return NONFINITE_IN[value]
        except KeyError:
            raise CodecError(
                f"{where}: unexpected string {value[:40]!r} in tensor data; numbers, booleans and "
                '"NaN", "Infinity", "-Infinity" are allowed', input=where,
            ) from None
    if isinstance(value, dict) or value is None:
        raise CodecError(f"{where}: tensor data holds {type(value).__name__}; expected numbers", input=where)
    return value


def _array_from_list(data, where: str):
    if isinstance(data, str):
        data = _replace_nonfinite(data, where)
    try:
        array = np.asarray(data)
        if array.dtype.kind in "UOS":
            array = np.asarray(_replace_nonfinite(data, where))
    except (ValueError, TypeError, RecursionError, OverflowError) as error:
        reason = str(error).split(". ")[0] if "inhomogeneous" not in str(error) else "rows of unequal length"
        raise CodecError(f"{where}: tensor data is not a rectangular array of numbers ({reason})",
                         input=where) from None
    if array.dtype.kind not in "fiub":
        raise CodecError(f"{where}: tensor data must be numbers or booleans", input=where)
    if array.ndim > MAX_DIMS:
        raise CodecError(f"{where}: at most {MAX_DIMS} dimensions are supported", input=where)
    return array


def _cast(array, dtype, where: str):
    target = dtype.np
    if array.dtype == target:
        return array
    whole = target.kind in "iu" and array.dtype.kind == "f"
    if whole and (not np.all(np.isfinite(array)) or not np.all(array == np.round(array))):
        raise CodecError(f"{where}: dtype {dtype.name} needs whole numbers", input=where)
    if target.kind == "b" and array.dtype.kind != "b" and not np.all((array == 0) | (array == 1)):
        raise CodecError(f"{where}: dtype bool needs true/false (or 0/1)", input=where)
    if target.kind in "iu" and array.size:
        info = np.iinfo(target)
        if array.max() > info.max or array.min() < info.min:
            raise CodecError(f"{where}: values out of range for {dtype.name}", input=where)
    with np.errstate(over="ignore", invalid="ignore"):
        return array.astype(target)


def _shape(value, where: str) -> tuple:
    if not isinstance(value, list) or not all(isinstance(n, int) and not isinstance(n, bool) for n in value):
        raise CodecError(f"{where}.shape must be a list of integers, got {value!r}"[:200], input=where)
    if len(value) > MAX_DIMS or any(n < 0 for n in value):
        raise CodecError(f"{where}.shape must have at most {MAX_DIMS} non-negative sizes", input=where)
    return tuple(value)


def _b64decode_writable(text: str) -> bytearray:
    """Strictly validated base64 -> a writable buffer (gradcheck perturbs inputs in place)."""
    if hasattr(base64, "b64decode_as_bytearray"):
        return base64.b64decode_as_bytearray(text, validate=True)
    return bytearray(base64.b64decode(text, validate=True))


def _from_little_endian(buffer, dtype, count: int, offset: int):
    """``count`` little-endian ``dtype`` numbers at ``offset`` in ``buffer``: a view on a little-endian
    host, with numpy's own dtype object (an explicitly little-endian dtype, equal to it but not the
    same object, made float64 inputs compute in float32), else a byte-swapped copy."""
    if sys.byteorder == "little":
        return np.frombuffer(buffer, dtype=dtype.np, count=count, offset=offset)
    return np.frombuffer(buffer, dtype=dtype.np.newbyteorder("<"), count=count, offset=offset).astype(dtype.np)


def _decode_object(value: dict, where: str, dtype_default):
    unknown = set(value) - TENSOR_KEYS
    if unknown:
        raise CodecError(f"{where}: unknown tensor field(s) {sorted(unknown)}; expected {sorted(TENSOR_KEYS)}",
                         input=where)
    if isinstance(value.get("parameters"), dict) and "binary_data_size" in value["parameters"]:
        raise CodecError(f"{where}: parameters.binary_data_size belongs to a binary request (Content-Type "
                         f"{BINARY_MEDIA_TYPE} with {HEADER_LENGTH}); in JSON send 'data' or 'b64'", input=where)
    if ("data" in value) == ("b64" in value):
        raise CodecError(f"{where}: a tensor object needs exactly one of 'data' and 'b64'", input=where)
    spec = value.get("dtype", value.get("datatype"))
    dtype = resolve_dtype(spec, f"{where}.dtype") if spec is not None else dtype_default
    shape = _shape(value["shape"], where) if value.get("shape") is not None else None
    if "b64" in value:
        if not isinstance(value["b64"], str):
            raise CodecError(f"{where}.b64 must be a base64 string", input=where)
        try:
            raw = _b64decode_writable(value["b64"])
        except (binascii.Error, ValueError):
            raise CodecError(f"{where}.b64 is not valid base64", input=where) from None
        if len(raw) % dtype.itemsize:
            raise CodecError(f"{where}.b64 holds {len(raw)} bytes, not a whole number of {dtype.name} "
                             f"({dtype.itemsize} bytes each)", input=where)
        array = _from_little_endian(raw, dtype, len(raw) // dtype.itemsize, 0)
    else:
        array = _array_from_list(value["data"], where)
        if shape is not None and array.ndim != 1:
            array = array.reshape(-1)
        array = _cast(array, dtype, where)
    if shape is not None:
        if numel(shape) != array.size:
            raise CodecError(f"{where}: shape {list(shape)} needs {numel(shape)} elements, data has {array.size}",
                             input=where)
        array = array.reshape(shape)
    return array, value.get("requires_grad", False)


def decode_array(value, where: str, dtype_default, budget: ElementBudget):
    """One wire tensor -> (numpy array, requires_grad)."""
    if isinstance(value, BinaryTensor):
        array, requires_grad = value.array, value.get("requires_grad", False)
    elif isinstance(value, dict):
        array, requires_grad = _decode_object(value, where, dtype_default)
    elif isinstance(value, (int, float, list, str)) and value is not None:
        array = _cast(_array_from_list(value, where), dtype_default, where)
        requires_grad = False
    else:
        raise CodecError(f"{where}: expected a number, a nested list or a tensor object", input=where)
    if not isinstance(requires_grad, bool):
        raise CodecError(f"{where}.requires_grad must be true or false", input=where)
    budget.take(int(array.size), where)
    return array, requires_grad


def decode_tensor(value, where: str, dtype_default, budget: ElementBudget, device: str = "cpu") -> Tensor:
    """One wire tensor -> an engine Tensor (a fresh leaf; requires_grad as the wire says)."""
    array, requires_grad = decode_array(value, where, dtype_default, budget)
    if requires_grad and array.dtype.kind != "f":
        raise CodecError(f"{where}: only floating point tensors can require gradients (dtype {array.dtype})",
                         input=where)
    if not array.flags.writeable:
        array = array.copy()
    tensor = engine.from_numpy(array)
    if device != "cpu":
        tensor = tensor.to(device)
    if requires_grad:
        tensor.requires_grad_(True)
    return tensor


# ---- binary frames (Open Inference Protocol binary-data extension) -----------

BINARY_MEDIA_TYPE = "application/octet-stream"
HEADER_LENGTH = "Inference-Header-Content-Length"


_BINARY_KEY = b'"binary_data_size"'
_DONE = object()


class FrameError(CodecError):
    """The binary framing itself is wrong: the header length, or bytes that do not add up (400)."""


class BinaryTensor(dict):
    """A tensor of a binary request: its JSON object as sent, and ``array``, a view of the body.

    A dict, so that wherever no tensor belongs it reads as the JSON it came from (and is refused
    as that would be); ``decode_array`` takes its array as it is.
    """

    __slots__ = ("array",)


def _header_length(text: str | None, body_size: int) -> int:
    if text is None:
        raise FrameError(f"an {BINARY_MEDIA_TYPE} body is a binary frame: give the length of its JSON header "
                         f"in the {HEADER_LENGTH} header")
    stripped = text.strip()
    if not (stripped.isascii() and stripped.isdigit()) or len(stripped) > 20:
        raise FrameError(f"{HEADER_LENGTH} must be a non-negative integer, got {text[:40]!r}")
    length = int(stripped)
    if length > body_size:
        raise FrameError(f"{HEADER_LENGTH} is {length} but the body holds only {body_size} bytes")
    return length


def decode_frame(body, header_length: str | None):
    """A binary request -> its JSON, each binary tensor in it a ``BinaryTensor`` viewing ``body``.

    ``body``: the request's bytes (a bytearray makes the views writable, so the engine uses
    them in place); ``header_length``: the ``Inference-Header-Content-Length`` header's text.
    The bytes after the JSON header are the binary tensors' bytes, in the order the tensors
    appear in the header's text (orjson keeps the text's order in every object and list).
    Raises ``FrameError`` (400) when the header length is missing or wrong, the header is not
    JSON, a tensor's ``binary_data_size`` disagrees with its shape and dtype, or the sizes do not
    add up to the body; ``CodecError`` (422) for a tensor that is not one (unknown dtype).
    """
    length = _header_length(header_length, len(body))
    try:
        header = loads(body if length == len(body) else bytes(memoryview(body)[:length]))
    except orjson.JSONDecodeError as error:
        raise FrameError(f"the first {length} bytes ({HEADER_LENGTH}) are not valid JSON: {error}") from None
    offset = length
    root = [header]
    expected = body.count(_BINARY_KEY, 0, length)  # at most this many binary tensors: stop once all are found
    # Depth first, in document order, without recursion (the header nests as deep as orjson allows)
    # and holding only the path: a stack of (container, its keys left), one per level.
    stack, path, found = [(root, iter((0,)))], [], 0
    while stack and found < expected:
        container, keys = stack[-1]
        key = next(keys, _DONE)
        if key is _DONE:
            stack.pop()
            if path:
                path.pop()
            continue
        value = container[key]
        if isinstance(value, dict):
            parameters = value.get("parameters")
            if isinstance(parameters, dict) and "binary_data_size" in parameters:
                where = ".".join(map(str, [*path[1:], key])) if path else "body"
                container[key] = _bind(value, where, body, offset)
                offset += parameters["binary_data_size"]
                found += 1
                continue
            stack.append((value, iter(value)))
        elif isinstance(value, list) and _holds_objects(value):
            stack.append((value, iter(range(len(value)))))
        else:
            continue
        path.append(key)
    if offset != len(body):
        raise FrameError(f"{len(body) - offset} byte(s) follow the last binary tensor: the header's "
                         f"binary_data_size values and its length ({length}) account for {offset} of the "
                         f"body's {len(body)} bytes")
    if isinstance(root[0], BinaryTensor):
        raise FrameError("the JSON header must be the request object, not a tensor")
    return root[0]


def _holds_objects(items: list) -> bool:
    """Whether a JSON list holds an object at any depth; a nested list of numbers is read level by
    level at C speed (``map``, ``set``, ``chain``), never item by item in Python."""
    level = items
    while level:
        kinds = set(map(type, level))
        if dict in kinds:
            return True
        if list not in kinds:
            return False
        inner = level if kinds == {list} else [item for item in level if type(item) is list]
        level = list(itertools.chain.from_iterable(inner))
    return False


def _bind(value: dict, where: str, body, offset: int) -> BinaryTensor:
    """One binary tensor's object -> a ``BinaryTensor`` viewing its bytes at ``offset`` in ``body``."""
    size = value["parameters"]["binary_data_size"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise FrameError(f"{where}.parameters.binary_data_size must be a non-negative integer, got {size!r}"[:200])
    unknown = set(value) - TENSOR_KEYS
    if unknown:
        raise CodecError(f"{where}: unknown tensor field(s) {sorted(unknown)}; expected {sorted(TENSOR_KEYS)}",
                         input=where)
    if "data" in value or "b64" in value:
        raise FrameError(f"{where}: a binary tensor's bytes follow the JSON header; it has no 'data' or 'b64'")
    if value.get("shape") is None:
        raise CodecError(f"{where}: a binary tensor needs its shape", input=where)
    shape = _shape(value["shape"], where)
    spec = value.get("dtype", value.get("datatype"))
    if spec is None:
        raise CodecError(f"{where}: a binary tensor needs its dtype (its bytes mean nothing without it)", input=where)
    dtype = resolve_dtype(spec, f"{where}.dtype")
    count = numel(shape)
    if count * dtype.itemsize != size:
        raise FrameError(f"{where}: binary_data_size is {size} but shape {list(shape)} of {dtype.name} takes "
                         f"{count * dtype.itemsize} bytes")
    if offset + size > len(body):
        raise FrameError(f"{where}: its {size} bytes would end at byte {offset + size}, past the body's end "
                         f"({len(body)} bytes): the binary_data_size values sum past the body")
    try:
        array = _from_little_endian(body, dtype, count, offset).reshape(shape)
    except ValueError as error:  # a shape numpy cannot hold (a dimension past 2**63 with a zero beside it)
        raise CodecError(f"{where}: shape {list(shape)} cannot be held ({error})"[:300], input=where) from None
    tensor = BinaryTensor(value)
    tensor.array = array
    return tensor


# ---- out ---------------------------------------------------------------------

# Numbers one response lets orjson write into its own buffer (each takes at most 25 bytes);
# larger tensors go through ``_Spliced``, SPLICE_CHUNK numbers per orjson call, and long lists
# (a profile's trace events) through ``spliced_list``, SPLICE_ITEMS items per call.
INLINE_ELEMENTS = 1 << 16
SPLICE_CHUNK = 1 << 16
SPLICE_ITEMS = 2048
# Address space that must be free before an orjson call, when the process has a limit: its
# buffer grows by doubling, so a call writing n bytes may hold ~3n at once. A piece writes at
# most 25 * SPLICE_CHUNK bytes (or SPLICE_ITEMS trace events); what stays in the skeleton of a
# response (keys, INLINE_ELEMENTS numbers, an autograd graph of at most max_graph_depth levels)
# stays under ~10 MB. A problem body is a few hundred bytes: it is written without a check.
CHUNK_RESERVE_BYTES = 8 << 20
SKELETON_RESERVE_BYTES = 32 << 20


# What orjson's Python objects take per byte of JSON (measured with tracemalloc: 15 for floats,
# 16 for small ints, 27 for short strings), plus what each list or object adds (an empty list,
# `[],`, takes ~100 bytes).
PARSED_BYTES_PER_BODY_BYTE = 16
PARSED_BYTES_PER_CONTAINER = 56


def _reserve(nbytes: int) -> None:
    """Raise MemoryError unless ``nbytes`` of address space can be had now (see the module docstring).

    Maps and unmaps that much without touching it: cheap, and it asks the kernel exactly what
    RLIMIT_AS governs. Without a limit the kernel overcommits and the check would say nothing.
    """
    if not _address_space_limited():
        return
    try:
        mmap.mmap(-1, nbytes).close()
    except (OSError, ValueError):
        raise MemoryError(f"less than {nbytes} bytes of address space left") from None


def address_space_limit() -> int | None:
    """This process's address-space limit (RLIMIT_AS, soft) in bytes, or None when it has none."""
    try:
        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    except (NameError, AttributeError, ValueError, OSError):  # no resource module (or RLIMIT_AS) here
        return None
    return None if soft == resource.RLIM_INFINITY else soft


def _address_space_limited() -> bool:
    return address_space_limit() is not None


class ResponseTooLargeError(Exception):
    """A response would hold more numbers than its limit; nothing of it was encoded."""

    def __init__(self, message: str, *, elements: int, limit: int):
        super().__init__(message)
        self.message = message
        self.elements = elements
        self.limit = limit


class ResponseBudget:
    """The numbers one response's tensors hold, counted against ``limit`` as each is encoded."""

    __slots__ = ("elements", "inline", "limit")

    def __init__(self, limit: int):
        self.limit = limit
        self.elements = 0
        self.inline = 0

    def check(self, count: int, what: str) -> None:
        """Refuse ``what`` (``count`` more numbers) if the response could not hold it."""
        if self.elements + count > self.limit:
            taken = f", and {self.elements} are taken already" if self.elements else ""
            raise ResponseTooLargeError(
                f"{what} would have {count} numbers; a response holds at most {self.limit} "
                f"(GRADSERVE_MAX_RESPONSE_ELEMENTS){taken}",
                elements=self.elements + count, limit=self.limit,
            )

    def admit(self, count: int, what: str) -> bool:
        """Count ``count`` more numbers; True when they may go through orjson's own buffer."""
        self.check(count, what)
        self.elements += count
        if self.inline + count <= INLINE_ELEMENTS:
            self.inline += count
            return True
        return False


_response_budget: contextvars.ContextVar[ResponseBudget | None] = contextvars.ContextVar(
    "gradserve_response_budget", default=None)


@contextlib.contextmanager
def response_limit(limit: int):
    """Count the tensors encoded in this context against ``limit`` numbers (one response)."""
    budget = ResponseBudget(limit)
    token = _response_budget.set(budget)
    try:
        yield budget
    finally:
        _response_budget.reset(token)


def check_response(count: int, what: str) -> None:
    """Refuse at once a result of ``count`` numbers the active response limit cannot hold."""
    budget = _response_budget.get()
    if budget is not None:
        budget.check(count, what)


def _numbers_in(value) -> int:
    if isinstance(value, Tensor):
        return value.numel()
    if backend.is_array(value):
        return int(value.size)
    return 1


def _host_array(value):
    """A C-contiguous numpy array for a Tensor, array or number (0-d stays 0-d)."""
    if isinstance(value, Tensor):
        array = value.numpy(force=True)  # PyTorch's way to the host bytes, whatever the device or grad
    elif backend.is_array(value):
        array = backend.to_numpy(value)
    elif isinstance(value, bool):
        array = np.asarray(value)
    elif isinstance(value, int):
        array = np.asarray(value, dtype=np.int64)
    elif isinstance(value, float):
        array = np.asarray(value, dtype=backend.default_dtype.np)
    else:
        raise TypeError(f"a function returned {type(value).__name__}; expected tensors or numbers")
    return array if array.flags.c_contiguous else array.copy(order="C")


def _json_data(array):
    """Flat data for JSON: the numpy array itself (orjson writes it), or a list when it holds NaN/Infinity."""
    flat = array.reshape(-1)
    if flat.dtype.kind == "f" and not np.isfinite(flat).all():
        out = flat.astype(np.float64).tolist()
        for i in np.flatnonzero(~np.isfinite(flat)).tolist():
            v = out[i]
            out[i] = "NaN" if v != v else ("Infinity" if v > 0 else "-Infinity")
        return out
    return flat


def encode_tensor(value, encoding: str = "json", what: str = "a response tensor"):
    """An engine Tensor (or number) -> its wire object, in the request's encoding.

    ``"binary"``: an object ``dumps_frame`` writes as ``{"shape", "dtype", "parameters":
    {"binary_data_size"}}``, the array's bytes following the JSON.

    Inside ``response_limit`` (the server's responses): counted against the limit before
    anything is copied, and past the first ``INLINE_ELEMENTS`` numbers the data is left
    for ``dumps`` to write piecewise. Outside it (a client building a request), the wire
    object is plain data, as ``json.dumps`` needs it.
    """
    budget = _response_budget.get()
    inline = budget is None or budget.admit(_numbers_in(value), what)
    array = _host_array(value)
    dtype = backend.dtype_of(array).name
    if encoding == "binary":
        return _BinaryOut(array)
    key = "b64" if encoding == "base64" else "data"
    if not inline:
        return {"shape": list(array.shape), "dtype": dtype, key: _Spliced(array, encoding)}
    if encoding == "base64":
        data = base64.b64encode(_little_endian(array)).decode("ascii")
        return {"shape": list(array.shape), "dtype": dtype, "b64": data}
    return {"shape": list(array.shape), "dtype": dtype, "data": _json_data(array)}


def _little_endian(array):
    """The array's bytes, little-endian, without a copy when they already are."""
    return memoryview(array.astype(array.dtype.newbyteorder("<"), copy=False)).cast("B")


class _BinaryOut:
    """A response tensor in a binary frame: ``dumps_frame`` writes its JSON object and appends its bytes."""

    __slots__ = ("array",)

    def __init__(self, array):
        self.array = array

    def header(self) -> dict:
        return {"shape": list(self.array.shape), "dtype": backend.dtype_of(self.array).name,
                "parameters": {"binary_data_size": int(self.array.nbytes)}}


class _Spliced:
    """A large tensor's wire data (JSON list or base64 string), written by ``dumps`` outside orjson's buffer."""

    __slots__ = ("array", "encoding")

    def __init__(self, array, encoding: str):
        self.array = array
        self.encoding = encoding

    def parts(self):
        """The data's JSON text, in pieces of at most ``SPLICE_CHUNK`` numbers."""
        if self.encoding == "base64":
            return [b'"', base64.b64encode(_little_endian(self.array)), b'"']
        flat = self.array.reshape(-1)
        return _json_list_pieces(flat.size, SPLICE_CHUNK, lambda start, stop: _json_data(flat[start:stop]))


class _SplicedList:
    """A long list of JSON values, written by ``dumps`` ``SPLICE_ITEMS`` at a time."""

    __slots__ = ("items",)

    def __init__(self, items: list):
        self.items = items

    def parts(self):
        return _json_list_pieces(len(self.items), SPLICE_ITEMS, lambda start, stop: self.items[start:stop])


def spliced_list(items: list):
    """``items`` as a response value that orjson's own buffer never holds whole (when it is long)."""
    return items if len(items) <= SPLICE_ITEMS else _SplicedList(items)


def _json_list_pieces(count: int, step: int, values) -> list:
    """A JSON list of ``count`` items as pieces: ``values(start, stop)`` gives each slice to orjson."""
    parts = [b"["]
    try:
        for start in range(0, count, step):
            _reserve(CHUNK_RESERVE_BYTES)
            piece = orjson.dumps(values(start, min(start + step, count)), option=orjson.OPT_SERIALIZE_NUMPY)
            if start:
                parts.append(b",")
            parts.append(memoryview(piece)[1:-1])  # without the piece's own brackets
    except MemoryError:
        parts.clear()  # the traceback keeps this frame alive while the 503 is written
        raise
    parts.append(b"]")
    return parts


def encode_nested(value, encoding: str = "json"):
    """A Tensor, a tuple of Tensors, or a tuple of tuples -> T, [T...] or [[T...]...] (None stays null)."""
    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        return [encode_nested(v, encoding) for v in value]
    return encode_tensor(value, encoding)


def quiet_floating_point():
    """numpy's floating-point warnings off (per thread): log(0) = -inf is an answer, not a failure."""
    return np.errstate(all="ignore")


def dumps(content, reserve_bytes: int | None = None) -> bytes:
    """Serialise a response body (numpy arrays included) with orjson, as one bytes object."""
    parts = dumps_parts(content, reserve_bytes)
    return parts[0] if len(parts) == 1 else b"".join(parts)


@dataclass
class Frame:
    """A binary response: ``parts`` concatenated are the body; its first ``header_length`` bytes are the JSON."""

    parts: list
    header_length: int


def dumps_frame(content, reserve_bytes: int | None = None) -> Frame:
    """Serialise a response body as a binary frame: the JSON (every ``encode_tensor(..., "binary")``
    object in it naming its size), then each such tensor's bytes in the order the JSON names them.

    The JSON is padded with spaces to a multiple of 8 bytes, so that a client's views of the
    tensors that follow it start aligned (JSON allows the whitespace; the length counts it).
    """
    arrays: list = []
    parts = _dumps_parts(content, reserve_bytes, arrays)
    length = sum(len(part) for part in parts)
    if length % 8:
        parts.append(b" " * (-length % 8))
        length += -length % 8
    return Frame(parts + [_little_endian(array) for array in arrays if array.size], length)


def dumps_parts(content, reserve_bytes: int | None = None) -> list:
    """Serialise a response body as a list of bytes-like pieces, which concatenated are the JSON text.

    orjson writes each ``_Spliced`` (or ``_SplicedList``) value as a placeholder string (a random
    token per call, which no client content can forge); the list holds the text
    between placeholders and, in their place, the tensors' pieces. A server can
    send the pieces one by one, never holding the whole text twice.
    ``reserve_bytes``: the room orjson's own buffer may need (see ``_reserve``);
    compute and model responses pass ``SKELETON_RESERVE_BYTES``; small bodies
    (problems, events) need no check.
    """
    return _dumps_parts(content, reserve_bytes, None)


def _dumps_parts(content, reserve_bytes: int | None, binary: list | None) -> list:
    """``dumps_parts``; with a ``binary`` list, binary tensors are written as their JSON objects and
    their arrays appended to ``binary`` in document order (orjson calls ``default`` in that order)."""
    spliced: list[_Spliced] = []
    token = ""

    def placeholder(value):
        nonlocal token
        if type(value) is _BinaryOut and binary is not None:
            binary.append(value.array)
            return value.header()
        if type(value) is not _Spliced and type(value) is not _SplicedList:
            raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")
        token = token or secrets.token_hex(12)
        spliced.append(value)
        return f"{token}:{len(spliced) - 1}"

    if reserve_bytes:
        _reserve(reserve_bytes)
    skeleton = orjson.dumps(content, default=placeholder, option=orjson.OPT_SERIALIZE_NUMPY)
    if not spliced:
        return [skeleton]
    view, parts, at = memoryview(skeleton), [], 0
    try:
        for index, value in enumerate(spliced):  # orjson calls ``placeholder`` in document order
            mark = f'"{token}:{index}"'.encode()
            found = skeleton.index(mark, at)
            parts.append(view[at:found])
            parts.extend(value.parts())
            at = found + len(mark)
    except MemoryError:
        # The traceback keeps this frame alive while the 503 is written: let go of the pieces.
        parts.clear()
        spliced.clear()
        raise
    parts.append(view[at:])
    return parts


def loads(body: bytes):
    """Parse JSON with orjson; a failed allocation is a MemoryError (orjson reports it as SystemError).

    The cyclic garbage collector is paused meanwhile: it would otherwise walk every list and
    object parsed so far, again and again, and a 64 MB body of empty lists (20 million of
    them) took three times as long, blocking whatever thread parses it (the event loop).
    Parsed JSON holds no cycles, so nothing is left for the collector to find.

    Under an address-space limit, a body of a megabyte or more is parsed only when the room its
    objects may take is there (``_reserve``): orjson that runs out of memory half-way keeps
    going, failing every allocation, and took two minutes to give up on a 60 MB body.
    """
    if len(body) >= 1 << 20 and _address_space_limited():
        containers = body.count(b"[") + body.count(b"{")
        _reserve(PARSED_BYTES_PER_BODY_BYTE * len(body) + PARSED_BYTES_PER_CONTAINER * containers)
    collecting = gc.isenabled()
    gc.disable()
    try:
        return orjson.loads(body)
    except SystemError as error:
        if isinstance(error.__cause__ or error.__context__, MemoryError):
            raise MemoryError("not enough memory to parse the request body") from None
        raise
    finally:
        if collecting:
            gc.enable()


def decode_to_python(wire: dict) -> list | float:
    """Test and client helper: a wire tensor object -> nested Python lists (NaN as float('nan'))."""
    array, _ = decode_array(wire, "tensor", backend.float32, ElementBudget(1 << 62, 1 << 62))
    return array.tolist()


def decode_to_array(wire: dict):
    """Test and client helper: a wire tensor object -> a numpy array with its dtype and shape."""
    array, _ = decode_array(wire, "tensor", backend.float32, ElementBudget(1 << 62, 1 << 62))
    return array
