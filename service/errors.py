"""The one place where failures become RFC 9457 problems (``application/problem+json``).

Every error the service answers has ``type``, ``title``, ``status`` and
``detail``, plus what locates it: ``op`` (the engine op that raised),
``node`` (a JSON-graph node), ``line``/``column``/``construct`` (a program),
``input`` (a request tensor), ``kind``/``limit`` (a budget), ``errors`` (422).

Status codes: 400 engine and client-function errors (and device "cuda"
without a GPU); 401 missing/wrong API key; 404/405 routing and unknown models;
408 deadline; 409/412 model version conflicts; 507 the model store is full;
413 too large (body, tensors, a program's allocations, a result or response
over ``max_response_elements``, one allocation larger than the process may
hold, more than the GPU memory limit at once); 422 schema violations and
undecodable tensors and invalid model specs (``SpecError``); 503 overload (and host or
GPU memory full of other work, and a locked or unreachable model store).
A 500 is always a bug: it says so and carries no internals.

Engine exceptions reach this module wrapped: compute code runs the client's
function inside ``engine_errors()``, which turns the builtin exceptions the
engine raises on bad input (``engine.errors.ENGINE_ERRORS``: RuntimeError,
ValueError, TypeError, ...) into ``EngineError``; any other exception (an
AttributeError, an AssertionError), or one raised anywhere else, is a bug and
gives 500. The model store raises its own typed errors (``service.store``:
``ModelNotFound``, ``FunctionNotFound``, ``StoreFull``, ``StoreUnavailable``); they, and ``SpecError``,
are mapped here too, wherever they are raised.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import traceback
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from engine import cuda as engine_cuda
from engine.errors import ENGINE_ERRORS
from engine.profiler import ProfileLimitError
from frontends.model_spec import SpecError
from service.codec import CodecError, FrameError, ResponseTooLargeError, address_space_limit, dumps
from service.store.base import FunctionNotFound, ModelNotFound, StoreError, StoreFull, StoreUnavailable

logger = logging.getLogger("gradserve")

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "/problems/"


class Problem(BaseModel):
    """An RFC 9457 problem detail."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "type": "/problems/engine-error",
                    "title": "Engine error",
                    "status": 400,
                    "detail": "grad can be implicitly created only for scalar outputs",
                    "op": "mul",
                }
            ]
        },
    )

    type: str = Field(description="a URI reference naming the problem kind")
    title: str
    status: int
    detail: str
    op: str | None = None
    node: int | str | None = Field(None, description="the JSON-graph node (its index)")
    output: str | list[str] | None = Field(None, description="the failing graph node's output name")
    line: int | None = None
    column: int | None = None
    construct_: str | None = Field(None, alias="construct", description="the program construct at fault")
    input: str | None = None
    kind: str | None = None
    limit: float | None = None
    elements: int | None = Field(None, description="for a result or response that is too large: its numbers")


# ---- service-side failures ------------------------------------------------------


class ServiceError(Exception):
    """A failure the service detects itself; carries its HTTP status and extras."""

    status = 400
    slug = "bad-request"
    title = "Bad request"

    def __init__(self, detail: str, **extras):
        super().__init__(detail)
        self.detail = detail
        self.extras = extras


class DeviceUnavailableError(ServiceError):
    slug, title = "device-unavailable", "Device unavailable"


class UnsupportedMediaTypeError(ServiceError):
    status, slug, title = 415, "unsupported-media-type", "Unsupported media type"


class OverloadedError(ServiceError):
    status, slug, title = 503, "overloaded", "Service overloaded"


class UnauthorizedError(ServiceError):
    status, slug, title = 401, "unauthorized", "Missing or wrong API key"


class BodyTooLargeError(ServiceError):
    status, slug, title = 413, "body-too-large", "Request body too large"


class ModelNotFoundError(ServiceError):
    status, slug, title = 404, "model-not-found", "Model not found"


class FunctionNotFoundError(ServiceError):
    status, slug, title = 404, "function-not-found", "Function not found"


class PreconditionFailedError(ServiceError):
    """``If-Match`` named another version than the model's (or the model changed meanwhile)."""

    status, slug, title = 412, "precondition-failed", "Model version does not match If-Match"


class VersionConflictError(ServiceError):
    """A mutation kept losing the compare-and-set to other replicas."""

    status, slug, title = 409, "version-conflict", "Model changed concurrently"


class ModelLimitError(ServiceError):
    """The store holds ``max_models`` models: 507, the server's capacity, not the client's request."""

    status, slug, title = 507, "model-limit", "Too many models"


class FunctionLimitError(ServiceError):
    """The store holds ``max_functions`` functions: 507, as for models."""

    status, slug, title = 507, "function-limit", "Too many functions"


class ModelTooLargeError(ServiceError):
    status, slug, title = 413, "model-too-large", "Model too large"


class InvalidSpecError(ServiceError):
    """A model spec the engine rejected (``SpecError``); ``layer`` names the part at fault."""

    status, slug, title = 422, "invalid-model-spec", "Invalid model spec"


class EngineError(Exception):
    """An exception the engine raised while running a client's function; ``op`` is the op running then."""

    def __init__(self, error: BaseException, op: str | None = None):
        super().__init__(str(error))
        self.error = error
        self.op = op


@contextlib.contextmanager
def engine_errors(current_op=lambda: None):
    """Run client-driven engine work: its builtin exceptions become ``EngineError``.

    Exceptions that already carry their own meaning (the interpreter's, the
    codec's, budgets) pass through unchanged.
    """
    try:
        yield
    except (EngineError, ServiceError, CodecError, StoreError, SpecError):
        raise
    except Exception as error:
        if isinstance(error, ENGINE_ERRORS) or _known_engine_class(error) is not None:
            raise EngineError(error, current_op()) from error
        raise


def _engine_types() -> dict:
    """The interpreter's and budget's exception classes, when those modules exist."""
    found = {}
    try:
        from frontends.program import ProgramError

        found["program"] = ProgramError
    except ImportError:
        pass
    try:
        from frontends.graph import GraphError

        found["graph"] = GraphError
    except ImportError:
        pass
    try:
        from frontends.budget import BudgetExceeded

        found["budget"] = BudgetExceeded
    except ImportError:
        pass
    return found


def _known_engine_class(error) -> str | None:
    for key, cls in _engine_types().items():
        if isinstance(error, cls):
            return key
    return None


# ---- exception -> problem --------------------------------------------------------


def problem(status: int, slug: str, title: str, detail: str, **extras) -> dict:
    body = {"type": PROBLEM_BASE + slug, "title": title, "status": status, "detail": detail}
    body.update({k: v for k, v in extras.items() if v is not None})
    return body


BUDGET_STATUS = {"deadline": 408, "elements": 413}


def _budget_problem(error) -> dict:
    kind = getattr(error, "kind", None)
    status = BUDGET_STATUS.get(kind, 400)
    title = {408: "Deadline exceeded", 413: "Too large"}.get(status, "Budget exceeded")
    return problem(status, f"budget-{kind or 'exceeded'}", title, str(error) or f"{kind} budget exceeded",
                   kind=kind, limit=getattr(error, "limit", None),
                   line=getattr(error, "line", None), op=getattr(error, "op", None))


# A frontends error about a name a function may not use ends, in Python, with a hint naming the
# Python function that lists the allowed ones; over HTTP the listing is GET /v1/ops.
HTTP_LISTING = "; see GET /v1/ops"


def _engine_problem(error: BaseException, op: str | None) -> dict:
    kind = _known_engine_class(error)
    listed = getattr(error, "hint", None) is not None
    inner = getattr(error, "error", None)  # ProgramRuntimeError: what the engine raised inside the program
    for raised in (error, inner):
        if isinstance(raised, ProfileLimitError):
            return problem(413, "profile-too-large", "Profile too large", str(raised), kind="events",
                           limit=raised.limit, line=getattr(error, "line", None), op=op)
    if kind == "program" and isinstance(inner, MemoryError) and not engine_cuda.is_out_of_memory(inner):
        return memory_problem(inner, op, line=getattr(error, "line", None), column=getattr(error, "column", None),
                              construct=getattr(error, "construct", None))
    if kind == "program" and isinstance(inner, (MemoryError, RecursionError)):
        status, slug = (413, "too-large") if isinstance(inner, MemoryError) else (400, "program-error")
        return problem(status, slug, "Program failed", str(error), line=getattr(error, "line", None),
                       column=getattr(error, "column", None), construct=getattr(error, "construct", None), op=op)
    if kind == "program":
        title = "Program failed" if inner is not None else "Invalid program"
        detail = (getattr(error, "message", None) or str(error)) + (HTTP_LISTING if listed else "")
        return problem(400, "program-error", title, detail,
                       line=getattr(error, "line", None), column=getattr(error, "column", None),
                       construct=getattr(error, "construct", None), op=op)
    if kind == "graph":
        title = "Graph failed" if inner is not None else "Invalid graph"
        detail = f"{error.where}: {error.message}{HTTP_LISTING}" if listed else str(error)
        return problem(400, "graph-error", title, detail, node=getattr(error, "node", None),
                       output=getattr(error, "output", None), op=getattr(error, "op", None) or op)
    if kind == "budget":
        return _budget_problem(error)
    if engine_cuda.is_out_of_memory(error):
        return gpu_memory_problem(error, op)
    if isinstance(error, MemoryError):
        return memory_problem(error, op)
    if isinstance(error, RecursionError):
        return problem(400, "engine-error", "Engine error", "the computation nests too deeply", op=op)
    detail = str(error) if not isinstance(error, KeyError) else f"unknown key {error}"
    return problem(400, "engine-error", "Engine error", detail or type(error).__name__, op=op)


def memory_limit_bytes() -> int | None:
    """The most memory this process may ever hold: its address-space limit (RLIMIT_AS, which
    ``gradserve serve`` sets from GRADSERVE_MEMORY_LIMIT_BYTES) or the machine's physical memory."""
    limit = address_space_limit()
    limits = [] if limit is None else [limit]
    with contextlib.suppress(AttributeError, ValueError, OSError):
        limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    return min(limits) if limits else None


def memory_problem(error: BaseException, op: str | None = None, **extras) -> dict:
    """The host ran out of memory (MemoryError): 413 when the one allocation that failed is
    larger than the process may ever hold, so a retry cannot help; else 503 (the memory is
    held by other work now, or this request's intermediates did not fit beside it)."""
    size = getattr(error, "_total_size", None)  # numpy's MemoryError says how much it asked for
    limit = memory_limit_bytes()
    if isinstance(size, int) and limit is not None and size > limit:
        return problem(413, "memory-limit", "Too large for the server's memory",
                       f"the computation needs {size} bytes at once; this server may hold at most {limit} bytes",
                       kind="memory", limit=limit, op=op, **extras)
    logger.warning("memory exhausted%s", f" in {op}" if op else "")
    return problem(503, "memory-exhausted", "Memory exhausted",
                   "the server ran out of memory computing this request; retry shortly, or ask for a smaller "
                   "result (fewer outputs, a chunk_size, smaller tensors)", kind="memory", op=op, **extras)


MEMORY_EXHAUSTED_BODY = dumps(problem(503, "memory-exhausted", "Memory exhausted",
                                      "the server ran out of memory; retry shortly", kind="memory"))


def gpu_memory_problem(error: BaseException, op: str | None = None) -> dict:
    """cupy's OutOfMemoryError: 413 when the request alone needs more than the pool's limit (it can
    never fit), else 503 (the GPU is full of other work now; retry)."""
    size, limit = getattr(error, "_size", None), getattr(error, "_limit", 0) or None
    if size is not None and limit is not None and size > limit:
        return problem(413, "gpu-memory-limit", "Too large for the GPU memory limit",
                       f"the computation needs {size} bytes at once on the GPU; the limit is {limit} bytes "
                       "(GRADSERVE_GPU_MEMORY_LIMIT_BYTES)", kind="gpu_memory", limit=limit, op=op)
    return problem(503, "gpu-memory-exhausted", "GPU memory exhausted",
                   f"the GPU ran out of memory ({error}); retry shortly or use device 'cpu'",
                   kind="gpu_memory", limit=limit, op=op)


def _chain(error: BaseException | None, depth: int = 8):
    """``error`` and the exceptions it was raised from or during (at most ``depth`` of them)."""
    for _ in range(depth):
        if error is None:
            return
        yield error
        error = error.__cause__ or error.__context__


def _memory_error_behind(error: BaseException | None) -> MemoryError | None:
    """``error`` if it is a MemoryError, or the one it was raised from. A C function that fails an
    allocation without reporting it leaves the MemoryError for the next call, which then raises
    SystemError("... returned a result with an exception set") from it (orjson, dict methods)."""
    return next((e for e in _chain(error) if isinstance(e, MemoryError)), None)


def release_frames(error: BaseException) -> None:
    """Drop the locals of the finished frames in ``error``'s tracebacks (its chain's too).

    An exception keeps every frame it passed through alive, and with them the arrays the
    failed request built: after a MemoryError, the memory needed to write the 503 itself.
    """
    for raised in _chain(error):
        traceback.clear_frames(raised.__traceback__)


def _model_error(error: StoreError | SpecError) -> ServiceError | None:
    """The store's conditions and an invalid model spec, as the service errors they answer with."""
    if isinstance(error, ModelNotFound):
        return ModelNotFoundError(str(error), model=error.model_id)
    if isinstance(error, FunctionNotFound):
        return FunctionNotFoundError(str(error), function=error.function_id)
    if isinstance(error, StoreFull):
        limited = FunctionLimitError if error.what == "functions" else ModelLimitError
        return limited(str(error), limit=error.limit)
    if isinstance(error, SpecError):
        return InvalidSpecError(str(error), layer=error.path or None)
    if isinstance(error, StoreUnavailable):  # a locked or unreachable store: retry
        return OverloadedError(str(error))
    return None


def problem_for(error: BaseException) -> dict:
    """The problem body for any exception (500 for what no rule covers)."""
    if isinstance(error, (StoreError, SpecError)):
        error = _model_error(error) or error
    if isinstance(error, ServiceError):
        return problem(error.status, error.slug, error.title, error.detail, **error.extras)
    if isinstance(error, ResponseTooLargeError):
        return problem(413, "response-too-large", "Response too large", error.message, kind="response_elements",
                       elements=error.elements, limit=error.limit)
    if isinstance(error, FrameError):
        return problem(400, "invalid-binary-frame", "Invalid binary frame", error.message, input=error.input)
    if isinstance(error, CodecError):
        if error.too_large:
            return problem(413, "tensor-too-large", "Tensor too large", error.message, input=error.input)
        return problem(422, "invalid-tensor", "Invalid tensor", error.message, input=error.input)
    if isinstance(error, EngineError):
        return _engine_problem(error.error, error.op)
    if _known_engine_class(error) is not None:
        return _engine_problem(error, getattr(error, "op", None))
    if engine_cuda.is_out_of_memory(error):  # outside engine_errors(): moving inputs to the GPU
        return gpu_memory_problem(error)
    memory_error = _memory_error_behind(error)
    if memory_error is not None:  # outside engine work: parsing a body, writing a response
        return memory_problem(memory_error)
    return problem(500, "internal-error", "Internal server error",
                   "the server hit a bug handling this request; it has been logged")


def problem_response(body: dict, headers: dict | None = None) -> Response:
    return Response(dumps(body), status_code=body["status"], media_type=PROBLEM_MEDIA_TYPE, headers=headers)


# pydantic names the branch of a union it tried (``program.constrained-str``); readers want the field.
_UNION_BRANCH = re.compile(r"^(constrained-\w+|str|int|float|bool|none|list\[.*\]|dict\[.*\]|function-\w+\[.*\])$")


def _union_branch(part: str) -> bool:
    from service import schemas

    model = getattr(schemas, part, None)
    return bool(_UNION_BRANCH.match(part)) or (isinstance(model, type) and issubclass(model, BaseModel))


def _readable_location(loc) -> str:
    parts = [str(p) for p in loc if p != "body"]
    parts = [p for i, p in enumerate(parts) if i == 0 or not _union_branch(p)]
    return ".".join(parts) or "body"


MAX_LISTED_ERRORS = 100  # a problem lists this many violations (error_count says how many there were)


def validation_problem(error: RequestValidationError) -> dict:
    """422 with one readable line per violation: ``inputs.a: Input should be ...``."""
    errors = []
    for item in error.errors():
        if item.get("type") == "none_required":
            continue  # the "or null" branch of an optional field: not what the client meant
        location = _readable_location(item.get("loc", ()))
        message = item.get("msg", "invalid")
        if item.get("type") == "json_invalid":
            message = f"request body is not valid JSON ({item.get('ctx', {}).get('error', 'decode error')})"
            location = "body"
        errors.append({"location": location, "message": message, "type": item.get("type")})
    detail = "; ".join(f"{e['location']}: {e['message']}" for e in errors[:5]) or "invalid request"
    if len(errors) > 5:
        detail += f"; and {len(errors) - 5} more"
    return problem(422, "validation-error", "Request does not match the schema", detail,
                   errors=errors[:MAX_LISTED_ERRORS], error_count=len(errors))


def install(app: FastAPI) -> None:
    """Register the handlers that give every error response its problem+json body."""

    @app.exception_handler(RequestValidationError)
    async def handle_validation_error(request: Request, error: RequestValidationError) -> Response:
        return problem_response(validation_problem(error))

    @app.exception_handler(StarletteHTTPException)
    async def handle_http_error(request: Request, error: StarletteHTTPException) -> Response:
        status = error.status_code
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
        detail = error.detail if isinstance(error.detail, str) else phrase
        slug = phrase.lower().replace(" ", "-")
        return problem_response(problem(status, slug, phrase, detail), headers=getattr(error, "headers", None))

    async def handle_known(request: Request, error: Exception) -> Response:
        body = problem_for(error)
        if body.get("kind") == "memory":
            release_frames(error)
        headers = {"Retry-After": "1"} if body["status"] == 503 else None
        if body["status"] == 401:
            headers = {"WWW-Authenticate": 'APIKey header="X-API-Key"'}
        if body["status"] >= 500 and body["status"] not in (503, 507):
            logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
        try:
            return problem_response(body, headers)
        except MemoryError:  # not even the problem fits now: the one written at startup does
            return Response(MEMORY_EXHAUSTED_BODY, status_code=503, media_type=PROBLEM_MEDIA_TYPE,
                            headers={"Retry-After": "1"})

    # MemoryError (and the SystemError a lost MemoryError becomes) are registered by name: Starlette
    # re-raises what only the catch-all handles (and uvicorn then logs it as a crash), where a
    # full memory is an answer, 503, not a bug. A SystemError of any other cause stays a 500.
    for cls in (ServiceError, CodecError, ResponseTooLargeError, EngineError, StoreError, SpecError, MemoryError,
                SystemError, *_engine_types().values()):
        app.add_exception_handler(cls, handle_known)
    app.add_exception_handler(Exception, handle_known)


def problem_responses(*statuses: int) -> dict:
    """OpenAPI ``responses`` entries documenting problem+json for the given statuses."""
    schema = Problem.model_json_schema()
    return {
        status: {
            "description": HTTPStatus(status).phrase + " (RFC 9457 problem)",
            "content": {PROBLEM_MEDIA_TYPE: {"schema": schema}},
        }
        for status in statuses
    }


COMPUTE_ERRORS = problem_responses(400, 401, 408, 413, 415, 422, 503)
READ_ERRORS = problem_responses(401)
MODEL_ERRORS = problem_responses(400, 401, 404, 408, 409, 412, 413, 415, 422, 503, 507)
