"""Model states on the wire and in the store: ``TrainableModel.state()`` as an .npz archive or as JSON.

``pack_state`` / ``unpack_state``: the archive the store keeps and ``GET /state`` hands out
with ``Accept: application/x-npz`` (arrays by path, ``"parameters/0.weight"``, plus the rest
of the state as JSON), so ``numpy.load`` reads it. ``state_to_json`` / ``state_from_json``:
the same state with every array as a wire tensor (``service.codec``; in a binary frame,
each array a binary tensor whose bytes follow the JSON). A body that is not a
state is an ``InvalidStateError`` (422).
"""

from __future__ import annotations

import io
import json
import zipfile

from engine import backend
from service import codec
from service.codec import ElementBudget
from service.errors import ServiceError

np = backend.np

STATE_ENTRY = "__state__"  # the JSON skeleton inside the .npz; arrays are referenced from it by name
NPZ_MEDIA_TYPE = "application/x-npz"


# ---- state <-> bytes ----------------------------------------------------------------


def pack_state(state: dict) -> bytes:
    """``TrainableModel.state()`` -> an .npz archive: arrays by path ("parameters/0.weight"), plus the rest as JSON."""
    arrays: dict[str, object] = {}

    def strip(value, path: str):
        if backend.is_array(value):
            arrays[path] = backend.to_numpy(value)
            return {"__array__": path}
        if isinstance(value, dict):
            return {key: strip(item, f"{path}/{key}" if path else key) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [strip(item, f"{path}/{i}") for i, item in enumerate(value)]
        if isinstance(value, np.generic):
            return value.item()
        return value

    skeleton = strip(state, "")
    buffer = io.BytesIO()
    np.savez(buffer, **{STATE_ENTRY: np.frombuffer(json.dumps(skeleton).encode(), dtype=np.uint8)}, **arrays)
    return buffer.getvalue()


def unpack_state(blob: bytes) -> dict:
    """The inverse of ``pack_state``; a client's .npz that is not one gives 422."""
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as archive:
            skeleton = json.loads(archive[STATE_ENTRY].tobytes())
            arrays = {name: archive[name] for name in archive.files if name != STATE_ENTRY}
    except (ValueError, KeyError, OSError, zipfile.BadZipFile, json.JSONDecodeError) as error:
        raise InvalidStateError(f"the body is not a model state archive ({error})") from None

    def restore(value):
        if isinstance(value, dict):
            if set(value) == {"__array__"}:
                try:
                    return arrays[value["__array__"]]
                except (KeyError, TypeError):
                    raise InvalidStateError(f"the archive lacks the array {value['__array__']!r}") from None
            return {key: restore(item) for key, item in value.items()}
        if isinstance(value, list):
            return [restore(item) for item in value]
        return value

    return restore(skeleton)


class InvalidStateError(ServiceError):
    status, slug, title = 422, "invalid-model-state", "Invalid model state"


def state_to_json(state: dict, encoding: str) -> dict:
    """A state with every array as a wire tensor; the generator's 128-bit integers as decimal strings."""

    def convert(value, in_generator=False):
        if backend.is_array(value):
            return codec.encode_tensor(value, encoding)
        if isinstance(value, dict):
            return {key: convert(item, in_generator) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [convert(item, in_generator) for item in value]
        if in_generator and isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
            return str(value)  # JSON parsers (orjson, JavaScript) lose integers this large
        return value

    return {key: convert(item, key == "generator") for key, item in state.items()}


def state_from_json(body: dict, budget: ElementBudget) -> dict:
    """``state_to_json``'s form (or plain nested lists) back to what ``TrainableModel.from_state`` takes."""
    if not isinstance(body, dict) or "spec" not in body or "parameters" not in body:
        raise InvalidStateError('a model state is an object with at least "spec" and "parameters"')

    def convert(value, where, in_generator=False):
        if isinstance(value, dict):
            if isinstance(value, codec.BinaryTensor) or (("data" in value or "b64" in value)
                                                         and set(value) <= codec.TENSOR_KEYS):
                return codec.decode_array(value, where, backend.float32, budget)[0]
            return {key: convert(item, f"{where}.{key}", in_generator) for key, item in value.items()}
        if isinstance(value, list):
            return [convert(item, f"{where}.{i}", in_generator) for i, item in enumerate(value)]
        if in_generator and isinstance(value, str) and value.lstrip("-").isdigit():
            return int(value)
        return value

    return {key: convert(item, key, key == "generator") for key, item in body.items()}
