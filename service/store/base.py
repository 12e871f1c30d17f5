"""The model store's interface: records, versions and compare-and-set.

A stored model is a ``ModelRecord`` (id, version, step, parameter count,
spec, timestamps) plus its state: an opaque byte string (``service.model_service``
packs ``TrainableModel.state()`` into it). Every mutation of a model goes
through ``replace``, a compare-and-set on the version: it writes only when
the stored version is still the one the caller read, and bumps it by one.
That is what keeps two replicas (two processes sharing one Redis) from losing
each other's updates; within one process the routes also hold a per-model
lock, so the compare-and-set fails only across processes.

The store also keeps the functions registered under ``/v1/functions``: an id
(the content hash of the canonical function, ``service.plans``) and the
function's JSON. A function never changes once stored (its id is its content), so
storing it again is a no-op, and any replica may serve it.

Backends: ``SQLiteStore`` (default, embedded) and ``RedisStore`` (replicas).
Every backend raises only this module's errors: ``ModelNotFound``,
``FunctionNotFound``, ``StoreFull``, and ``StoreUnavailable`` for its driver's "not now" errors
(``driver_errors``); ``service.errors`` makes them problems.
"""

from __future__ import annotations

import abc
import dataclasses
import functools


@dataclasses.dataclass(frozen=True)
class ModelRecord:
    """What the store knows about a model besides its state bytes."""

    id: str
    version: int
    step: int
    parameter_count: int
    spec: dict
    created_at: float
    updated_at: float


class StoreError(Exception):
    """A store failure the caller can act on."""


class ModelNotFound(StoreError):  # noqa: N818 - reads as a condition: raise ModelNotFound(id)
    """No model with this id (never created, deleted, or expired)."""

    def __init__(self, model_id: str):
        super().__init__(f"no model with id {model_id!r} (it may have been deleted or expired)")
        self.model_id = model_id


class FunctionNotFound(StoreError):  # noqa: N818
    """No function with this id (never registered, or deleted)."""

    def __init__(self, function_id: str):
        super().__init__(f"no function with id {function_id!r} (register it with POST /v1/functions)")
        self.function_id = function_id


class StoreFull(StoreError):  # noqa: N818
    """Creating one more model (or function) would exceed ``max_models`` (``max_functions``)."""

    def __init__(self, limit: int, what: str = "models"):
        super().__init__(f"the store already holds its limit of {limit} {what}; delete one first")
        self.limit = limit
        self.what = what


class StoreUnavailable(StoreError):  # noqa: N818
    """The store cannot answer now (a locked database, an unreachable server); the caller may retry."""


def driver_errors(method):
    """Make a store method raise ``StoreUnavailable`` for its backend's driver errors
    (``self.unavailable_errors``, described by ``self.unavailable_detail``), so no caller
    needs to know which driver is underneath."""

    @functools.wraps(method)
    def translated(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except self.unavailable_errors as error:
            raise StoreUnavailable(self.unavailable_detail(error)) from error

    return translated


class ModelStore(abc.ABC):
    """Models by id. Every method is synchronous and thread-safe (routes call them from worker threads).

    ``ttl_s`` (0 = never) drops models whose last mutation is older than that:
    an expired model behaves exactly like a deleted one.
    """

    # The driver's errors that mean "not now" rather than a bug; each backend names its own.
    unavailable_errors: tuple[type[Exception], ...] = ()

    def unavailable_detail(self, error: Exception) -> str:
        return f"the model store is unavailable ({type(error).__name__}); retry shortly"

    def __init__(self, max_models: int, ttl_s: float = 0.0, max_functions: int = 1000):
        self.max_models = max_models
        self.ttl_s = ttl_s
        self.max_functions = max_functions

    @abc.abstractmethod
    def create(self, record: ModelRecord, state: bytes) -> None:
        """Insert a new model at ``record.version``; ``StoreFull`` when at the limit."""

    @abc.abstractmethod
    def get(self, model_id: str) -> ModelRecord:
        """The record (not the state); ``ModelNotFound`` when absent."""

    @abc.abstractmethod
    def load(self, model_id: str) -> tuple[ModelRecord, bytes]:
        """The record and its state, read together (one consistent version)."""

    @abc.abstractmethod
    def replace(self, model_id: str, expected_version: int, record: ModelRecord, state: bytes) -> bool:
        """Compare-and-set: write ``record``/``state`` iff the stored version is ``expected_version``.

        ``record.version`` must be ``expected_version + 1``. Returns False when
        another writer got there first; ``ModelNotFound`` when the model is gone.
        """

    @abc.abstractmethod
    def delete(self, model_id: str, expected_version: int | None = None) -> bool:
        """Remove the model (only at ``expected_version`` when given); False on a version mismatch."""

    @abc.abstractmethod
    def list(self, offset: int, limit: int) -> tuple[list[ModelRecord], int]:
        """A page of records in creation order, and the total count."""

    @abc.abstractmethod
    def put_function(self, function_id: str, body: bytes) -> bool:
        """Store a function's JSON under its id; True if it was new, False if already there (unchanged).
        ``StoreFull`` when a new one would exceed ``max_functions``."""

    @abc.abstractmethod
    def get_function(self, function_id: str) -> bytes:
        """A stored function's JSON; ``FunctionNotFound`` when absent."""

    @abc.abstractmethod
    def delete_function(self, function_id: str) -> None:
        """Remove a function; ``FunctionNotFound`` when absent."""

    def close(self) -> None:  # noqa: B027 - optional for backends without resources
        """Release connections."""
