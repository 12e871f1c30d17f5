"""The engine-facing side of ``/v1/models``: trainable models kept in the store, versioned.

A model lives in the store as a ``ModelRecord`` plus its packed state
(``service.state_codec.pack_state``: ``TrainableModel.state()`` as an ``.npz`` archive, so
``GET /state`` with ``Accept: application/x-npz`` hands out the stored bytes
as they are and ``numpy.load`` reads them). A process keeps recently used
models deserialised in a small cache keyed by (id, version), so a ``step``
costs one version read, the step, and one packed write, not a rebuild.

Every mutation runs ``ModelService.mutate``: read the stored version, check
``If-Match``, apply the change to the model at that version, then
compare-and-set the new state at version + 1. Losing the compare-and-set
(another replica wrote first) drops the cached copy and retries from the
stored state; with ``If-Match`` it is a 412 instead, since the client asked
for that exact version. Within one process the routes also hold a per-model
lock around each call (``ModelService.lock``), so requests to one model
queue up instead of retrying, and reads that use the cached model never see
it half-updated.

Nothing here knows about HTTP beyond the errors it raises (the store's and the
spec's own errors pass through to ``service.errors``); the functions are
synchronous and run in worker threads (``run_model_work``).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import threading
import time
import uuid
import weakref
from collections.abc import Callable

from engine import backend
from engine.tensor import Tensor
from frontends import model_spec
from frontends.model_spec import ModelSpec, TrainableModel
from service import codec, compute, schemas
from service.codec import ElementBudget
from service.config import Settings
from service.errors import (
    ModelTooLargeError,
    PreconditionFailedError,
    ServiceError,
    VersionConflictError,
)
from service.runtime import engine_work
from service.state_codec import pack_state, state_to_json, unpack_state
from service.store import ModelRecord, ModelStore, open_store

np = backend.np

CACHE_SIZE = 32


# ---- records, ETags ------------------------------------------------------------------


def etag(version: int) -> str:
    return f'"{version}"'


def check_if_match(if_match: str | None, version: int) -> None:
    """RFC 9110 If-Match: ``*`` or a list of strong tags; a mismatch is 412."""
    if if_match is None:
        return
    tags = [tag.strip() for tag in if_match.split(",")]
    if "*" in tags or etag(version) in tags:
        return
    raise PreconditionFailedError(
        f"If-Match {if_match.strip()[:80]} does not match the model's current ETag {etag(version)}; "
        "GET the model for its current version and retry", etag=etag(version))


def parameter_shapes(spec: dict) -> dict[str, list[int]]:
    """named_parameters() names and shapes, from the (parsed) spec alone."""
    return {f"{index}.{name}": shape
            for index, layer in enumerate(spec["layers"])
            for name, shape in model_spec.layer_parameter_shapes(layer).items()}


def describe(record: ModelRecord) -> dict:
    """The JSON a model's GET, POST and list entries show."""
    return {
        "id": record.id,
        "version": record.version,
        "etag": etag(record.version),
        "step": record.step,
        "parameters": parameter_shapes(record.spec),
        "parameter_count": record.parameter_count,
        "spec": record.spec,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "location": f"/v1/models/{record.id}",
    }


def wire_number(value: float):
    """A loss as JSON: the non-finite ones as "NaN" / "Infinity" / "-Infinity", never null."""
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    return value


# ---- the service ------------------------------------------------------------------------


class ModelService:
    """The store, a cache of deserialised models, and per-model locks (one per process)."""

    def __init__(self, settings: Settings, store: ModelStore | None = None):
        self.settings = settings
        self._store = store
        self._store_lock = threading.Lock()
        self._cache: collections.OrderedDict[str, tuple[int, TrainableModel]] = collections.OrderedDict()
        self._cache_lock = threading.Lock()
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    @property
    def store(self) -> ModelStore:
        """The store, opened on first use (an app that never sees a model never creates a data dir)."""
        if self._store is None:
            with self._store_lock:
                if self._store is None:
                    self._store = open_store(self.settings)
        return self._store

    def close(self) -> None:
        """Close the store (a later call opens it again)."""
        with self._store_lock:
            store, self._store = self._store, None
        if store is not None:
            store.close()

    def lock(self, model_id: str) -> asyncio.Lock:
        """The in-process lock of one model (called on the event loop; dropped when nobody holds it)."""
        lock = self._locks.get(model_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[model_id] = lock
        return lock

    # ---- the cache -----------------------------------------------------------------

    def _remember(self, model_id: str, version: int, model: TrainableModel) -> None:
        with self._cache_lock:
            self._cache[model_id] = (version, model)
            self._cache.move_to_end(model_id)
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)

    def _forget(self, model_id: str) -> None:
        with self._cache_lock:
            self._cache.pop(model_id, None)

    def _current(self, model_id: str) -> tuple[ModelRecord, TrainableModel]:
        """The stored record and the model at exactly that version (cached, or rebuilt from the state)."""
        record = self.store.get(model_id)
        with self._cache_lock:
            cached = self._cache.get(model_id)
        if cached is not None and cached[0] == record.version:
            return record, cached[1]
        record, blob = self.store.load(model_id)
        model = TrainableModel.from_state(unpack_state(blob))
        self._remember(model_id, record.version, model)
        return record, model

    # ---- mutations -------------------------------------------------------------------

    def mutate(self, model_id: str, if_match: str | None,
               change: Callable[[TrainableModel], tuple[dict, TrainableModel]]) -> tuple[dict, ModelRecord]:
        """Apply ``change`` to the current model and store the result at version + 1 (compare-and-set).

        ``change(model)`` returns the response content and the model to store
        (the same one, or a new one for a state import).
        """
        for _ in range(self.settings.model_retries):
            record, model = self._current(model_id)
            check_if_match(if_match, record.version)
            try:
                content, model = change(model)
                state = pack_state(model.state())
            except BaseException:
                self._forget(model_id)  # the cached model may be half-changed; the store is not
                raise
            new = dataclasses.replace(record, version=record.version + 1, step=model.steps,
                                      parameter_count=model.spec.parameter_count(),
                                      spec=model.spec.as_dict(), updated_at=time.time())
            stored = self.store.replace(model_id, record.version, new, state)
            if stored:
                self._remember(model_id, new.version, model)
                return content, new
            self._forget(model_id)
            if if_match is not None:
                check_if_match(if_match, self.get_record(model_id).version)
                raise PreconditionFailedError("the model changed while this request ran; retry with its new ETag")
        raise VersionConflictError(f"the model kept changing under {self.settings.model_retries} attempts; retry")

    # ---- endpoints ---------------------------------------------------------------------

    def create(self, body: schemas.ModelCreateRequest) -> tuple[dict, ModelRecord]:
        spec_body = body.model_dump(exclude_none=True)
        spec = ModelSpec.parse(spec_body)
        compute.check_device(spec.device)
        count = spec.parameter_count()
        if count > self.settings.max_parameters_per_model:
            raise ModelTooLargeError(
                f"the spec has {count} parameters; at most {self.settings.max_parameters_per_model} are allowed",
                limit=self.settings.max_parameters_per_model)
        model = TrainableModel(spec)
        now = time.time()
        record = ModelRecord(uuid.uuid4().hex, 1, model.steps, count, spec.as_dict(), now, now)
        self.store.create(record, pack_state(model.state()))
        self._remember(record.id, record.version, model)
        return describe(record), record

    def get_record(self, model_id: str) -> ModelRecord:
        return self.store.get(model_id)

    def list_models(self, offset: int, limit: int) -> dict:
        records, total = self.store.list(offset, limit)
        following = offset + len(records)
        return {"models": [describe(r) for r in records], "total": total, "offset": offset, "limit": limit,
                "next": f"/v1/models?offset={following}&limit={limit}" if following < total else None}

    def delete(self, model_id: str, if_match: str | None) -> None:
        record = self.store.get(model_id)
        check_if_match(if_match, record.version)
        if not self.store.delete(model_id, record.version if if_match is not None else None):
            raise PreconditionFailedError("the model changed while this request ran; retry with its new ETag")
        self._forget(model_id)

    def _decode(self, value, where: str, model: TrainableModel, budget: ElementBudget) -> Tensor:
        return codec.decode_tensor(value, where, backend.dtype(model.spec.dtype), budget)

    def _budget(self) -> ElementBudget:
        return ElementBudget(self.settings.max_tensor_elements, self.settings.max_request_elements)

    def forward(self, model_id: str, body: schemas.ForwardRequest) -> tuple[dict, ModelRecord]:
        record, model = self._current(model_id)
        budget = self._budget()
        x = self._decode(body.input, "input", model, budget)
        target = None if body.target is None else self._decode(body.target, "target", model, budget)
        output, loss = model.forward(x, target)
        content = {"output": codec.encode_tensor(output, body.encoding), "step": record.step,
                   "version": record.version}
        if loss is not None:
            content["loss"] = wire_number(loss)
        return content, record

    def backward(self, model_id: str, body: schemas.BackwardRequest, if_match: str | None):
        def change(model):
            budget = self._budget()
            x = self._decode(body.input, "input", model, budget)
            target = self._decode(body.target, "target", model, budget)
            return {"loss": wire_number(model.backward(x, target))}, model

        return self._versioned(self.mutate(model_id, if_match, change))

    def step(self, model_id: str, if_match: str | None):
        return self._versioned(self.mutate(model_id, if_match, lambda model: ({"step": model.step()}, model)))

    def zero_grad(self, model_id: str, body: schemas.ZeroGradRequest, if_match: str | None):
        def change(model):
            model.zero_grad(set_to_none=body.set_to_none)
            return {"step": model.steps}, model

        return self._versioned(self.mutate(model_id, if_match, change))

    def train(self, model_id: str, body: schemas.TrainRequest, if_match: str | None,
              progress: Callable[[int, float], None] | None = None):
        """``body.steps`` training steps; ``progress(step, loss)`` after each one when given (the SSE stream)."""

        def change(model):
            budget = self._budget()
            x = self._decode(body.inputs, "inputs", model, budget)
            y = self._decode(body.targets, "targets", model, budget)
            if progress is None:
                losses = model.train(x, y, body.steps, body.batch_size)
            else:
                losses = self._train_reporting(model, x, y, body, progress)
            return {"losses": [wire_number(v) for v in losses], "step": model.steps}, model

        return self._versioned(self.mutate(model_id, if_match, change))

    @staticmethod
    def _train_reporting(model: TrainableModel, x: Tensor, y: Tensor, body: schemas.TrainRequest, progress):
        """``model.train`` one step at a time: step k sees rows ``(k * size + arange(size)) % count``, as it does."""
        count = x.shape[0] if x.dim() else 0
        if count == 0 or y.dim() == 0 or y.shape[0] != count:
            raise ValueError(f"inputs and targets must have the same number of rows, got {list(x.shape)} and "
                             f"{list(y.shape)}")
        size = count if body.batch_size is None else min(body.batch_size, count)
        xs, ys = x.numpy(force=True), y.numpy(force=True)
        losses = []
        for k in range(body.steps):
            rows = (np.arange(size) + k * size) % count
            batch_x, batch_y = (x, y) if size == count else (Tensor._make(xs[rows]), Tensor._make(ys[rows]))
            (loss,) = model.train(batch_x, batch_y, 1)
            losses.append(loss)
            progress(model.steps, loss)
        return losses

    def import_state(self, model_id: str, state: dict, if_match: str | None):
        def change(model):
            spec = ModelSpec.parse(state.get("spec"))
            compute.check_device(spec.device)
            if spec.parameter_count() > self.settings.max_parameters_per_model:
                raise ModelTooLargeError(f"the state's spec has {spec.parameter_count()} parameters; at most "
                                         f"{self.settings.max_parameters_per_model} are allowed",
                                         limit=self.settings.max_parameters_per_model)
            restored = TrainableModel.from_state(state)
            return {"step": restored.steps}, restored

        return self._versioned(self.mutate(model_id, if_match, change))

    @staticmethod
    def _versioned(outcome: tuple[dict, ModelRecord]) -> tuple[dict, ModelRecord]:
        content, record = outcome
        content["version"] = record.version
        return content, record

    # ---- reads from a stored snapshot (no lock needed: the bytes are one version) ---------

    def snapshot(self, model_id: str) -> tuple[ModelRecord, bytes]:
        return self.store.load(model_id)

    def parameters(self, model_id: str, name: str | None, index: str | None, encoding: str,
                   with_grads: bool) -> tuple[dict, ModelRecord]:
        record, blob = self.snapshot(model_id)
        state = unpack_state(blob)
        names = list(state["parameters"])
        if name is not None and name not in state["parameters"]:
            raise ServiceError(f"no parameter named {name!r}; the model has {names}", input="name")
        selector = parse_index(index) if index is not None else None
        chosen = [name] if name is not None else names

        def pick(array):
            if array is None or selector is None:
                return array
            try:
                return np.ascontiguousarray(array[selector])
            except IndexError as error:
                raise ServiceError(f"index {index!r} does not fit the parameter: {error}", input="index") from None

        content = {"parameters": {n: codec.encode_tensor(pick(state["parameters"][n]), encoding) for n in chosen},
                   "step": record.step, "version": record.version}
        if with_grads:
            grads = state.get("grads", {})
            content["grads"] = {n: None if grads.get(n) is None else codec.encode_tensor(pick(grads[n]), encoding)
                                for n in chosen}
        return content, record

    def export_state(self, model_id: str, encoding: str) -> tuple[dict, ModelRecord]:
        record, blob = self.snapshot(model_id)
        return state_to_json(unpack_state(blob), encoding), record


def parse_index(text: str) -> tuple:
    """A NumPy basic index from text: ``"0"``, ``"0,0:10"``, ``"::2"``, ``":,3"`` (no eval)."""
    parts = []
    for part in text.split(","):
        part = part.strip()
        try:
            if ":" in part:
                bounds = part.split(":")
                if len(bounds) > 3:
                    raise ValueError
                parts.append(slice(*(int(b) if b.strip() else None for b in bounds)))
            else:
                parts.append(int(part))
        except ValueError:
            raise ServiceError(f"index {text!r}: each comma-separated part must be an integer or start:stop:step",
                               input="index") from None
    if len(parts) > codec.MAX_DIMS:
        raise ServiceError(f"index {text!r} has too many parts", input="index")
    return tuple(parts)


def run_model_work(work: Callable, settings: Settings, on_ops: Callable) -> object:
    """``work()`` in a worker thread, under the same budget, op tracking, errors and response limit as compute."""
    with engine_work(settings, on_ops), codec.response_limit(settings.max_response_elements):
        return work()
