"""``/v1/models``: trainable models as resources: create, inspect, step through the training loop, export.

Every call on one model runs under that model's in-process lock (requests to
one model queue up; others run in parallel) and in a worker thread under the
compute concurrency limit. Mutations answer with the model's new ``ETag``
(its version); ``If-Match`` makes them conditional (412 when it does not
match). ``POST .../train`` with ``Accept: text/event-stream`` streams one
``progress`` event per step, then a ``result`` event with the whole history.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from typing import Annotated

import anyio
from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request
from starlette.responses import Response, StreamingResponse

from service import codec, schemas
from service.codec import ElementBudget
from service.config import Settings
from service.dependencies import AppServices, AppSettings, Services
from service.errors import MODEL_ERRORS, ServiceError, problem_for
from service.model_service import ModelService, check_if_match, describe, etag, run_model_work, wire_number
from service.routes.base import (
    BINARY_PROSE,
    BINARY_REQUEST,
    BINARY_RESPONSE,
    BINARY_SCHEMA,
    OrjsonRoute,
    accepts_binary,
    is_framed,
    json_response,
    negotiated,
)
from service.state_codec import NPZ_MEDIA_TYPE, state_from_json, unpack_state

router = APIRouter(prefix="/v1/models", tags=["models"], route_class=OrjsonRoute, responses=MODEL_ERRORS)
logger = logging.getLogger("gradserve")

ModelId = Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$", description="the id POST returned")
# Named examples (a menu on the docs page); the first fits the forward, train and state examples.
ModelSpec = Body(openapi_examples=schemas.MODEL_SPEC_EXAMPLES)
IfMatch = Header(None, description='make the call conditional on the model\'s ETag (e.g. "3"); 412 otherwise')
EVENT_STREAM = "text/event-stream"


class ModelWork:
    """What every model route runs its work with: the settings and the app's services."""

    def __init__(self, settings: Settings, services: Services):
        self.settings = settings
        self.runtime = services.runtime
        self.models = services.models
        self.metrics = services.metrics

    async def run(self, work, model_id: str | None = None):
        """``work()`` in a worker thread (under the model's lock when ``model_id`` is given)."""
        lock = self.models.lock(model_id) if model_id is not None else contextlib.nullcontext()
        async with lock, self.runtime.slot():
            return await self.runtime.in_worker(run_model_work, work, self.settings, self.metrics.count_ops)


async def model_work(settings: AppSettings, services: AppServices) -> ModelWork:
    """``async def``, so FastAPI builds it on the event loop (a class dependency would take a thread-pool trip)."""
    return ModelWork(settings, services)


Work = Annotated[ModelWork, Depends(model_work)]


def _json(content, version: int, status: int = 200, headers: dict | None = None, binary: bool = False) -> Response:
    """The response, JSON or (``binary``: its tensors were encoded ``"binary"``) a binary frame."""
    encode = codec.dumps_frame if binary else codec.dumps_parts
    return json_response(encode(content, codec.SKELETON_RESERVE_BYTES), status,
                         {"ETag": etag(version), **(headers or {})})


@router.post("", status_code=201, response_model=schemas.ModelResponse)
async def create_model(request: Request, work: Work, body: schemas.ModelCreateRequest = ModelSpec):
    """Build a model from its spec; 201 with its id, ``Location``, parameter shapes and count."""
    content, record = await work.run(lambda: work.models.create(body))
    return _json(content, record.version, 201, {"Location": f"/v1/models/{record.id}"})


@router.get("", response_model=schemas.ModelListResponse)
async def list_models(request: Request, work: Work, offset: int = Query(0, ge=0),
                      limit: int = Query(20, ge=1, le=100)):
    """A page of models in creation order; ``next`` links the following page."""
    return Response(codec.dumps(await work.run(lambda: work.models.list_models(offset, limit))),
                    media_type="application/json")


@router.post("/{model_id}/forward", response_model=schemas.ForwardResponse, openapi_extra=BINARY_REQUEST,
             responses=BINARY_RESPONSE)
async def run_forward(body: schemas.ForwardRequest, request: Request, work: Work, model_id: str = ModelId):
    """The model's output (eval mode, no graph) and, with a target, the loss. Changes nothing."""
    body = negotiated(request, body)
    content, record = await work.run(lambda: work.models.forward(model_id, body), model_id)
    return _json(content, record.version, binary=body.encoding == "binary")


@router.post("/{model_id}/backward", response_model=schemas.LossResponse, openapi_extra=BINARY_REQUEST)
async def run_backward(body: schemas.BackwardRequest, request: Request, work: Work, model_id: str = ModelId,
                       if_match: str | None = IfMatch):
    """Forward and backward: the loss; gradients add into the stored grads, as repeated ``loss.backward()``."""
    content, record = await work.run(lambda: work.models.backward(model_id, body, if_match),
                                 model_id)
    return _json(content, record.version)


@router.post("/{model_id}/step", response_model=schemas.StepResponse)
async def take_step(request: Request, work: Work, model_id: str = ModelId, if_match: str | None = IfMatch):
    """One ``optimizer.step()`` (and the scheduler's); the new step count."""
    content, record = await work.run(lambda: work.models.step(model_id, if_match), model_id)
    return _json(content, record.version)


@router.post("/{model_id}/zero_grad", response_model=schemas.StepResponse)
async def zero_grad(request: Request, work: Work, body: schemas.ZeroGradRequest | None = None,
                    model_id: str = ModelId, if_match: str | None = IfMatch):
    """``optimizer.zero_grad(set_to_none=...)``: grads become null (default) or zeros."""
    body = body or schemas.ZeroGradRequest()
    content, record = await work.run(lambda: work.models.zero_grad(model_id, body, if_match),
                                 model_id)
    return _json(content, record.version)


@router.post("/{model_id}/train", response_model=schemas.TrainResponse, openapi_extra=BINARY_REQUEST,
             responses={200: {"content": {EVENT_STREAM: {"schema": {"type": "string"}}},
                              "description": "JSON, or with Accept: text/event-stream, progress events"}})
async def train_model(body: schemas.TrainRequest, request: Request, work: Work, model_id: str = ModelId,
                      if_match: str | None = IfMatch):
    """``steps`` rounds of zero_grad, forward, backward, step; the loss history (streamed with SSE on request)."""
    service = work.models
    if EVENT_STREAM in request.headers.get("accept", ""):
        return await _stream_training(work, service, model_id, body, if_match)
    content, record = await work.run(lambda: service.train(model_id, body, if_match), model_id)
    return _json(content, record.version)


def _event(kind: str, data) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + codec.dumps(data) + b"\n\n"


async def _stream_training(work: ModelWork, service: ModelService, model_id: str, body,
                           if_match):
    """SSE: ``progress`` {step, loss} per step, then ``result`` {losses, step, version} or ``error`` (a problem).

    Unknown models and a stale ``If-Match`` are answered before the stream
    starts, as plain problems. Training runs in a task of its own, so a client
    that disconnects does not cut a step in half: the run finishes and is stored.
    """
    record = await work.run(lambda: service.get_record(model_id))
    check_if_match(if_match, record.version)
    send, receive = anyio.create_memory_object_stream(max_buffer_size=math.inf)
    loop = asyncio.get_running_loop()

    def deliver(event) -> None:
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):  # the client left
            send.send_nowait(event)

    def progress(step: int, loss: float) -> None:
        # From the worker thread; queued on the loop ahead of the run's own completion, so every
        # progress event reaches the stream before the result does.
        loop.call_soon_threadsafe(deliver, ("progress", {"step": step, "loss": loss}))

    async def train() -> None:
        async with send:
            try:
                content, _ = await work.run(lambda: service.train(model_id, body, if_match, progress),
                                             model_id)
                outcome = ("result", content)
            except Exception as error:  # reported in the stream: the 200 header is already out
                if not isinstance(error, ServiceError) and problem_for(error)["status"] == 500:
                    logger.error("unhandled error in a training stream", exc_info=error)
                outcome = ("error", problem_for(error))
            with contextlib.suppress(anyio.BrokenResourceError):
                await send.send(outcome)

    task = asyncio.get_running_loop().create_task(train())
    work.runtime.keep(task)  # a strong reference until it is done

    async def events():
        async with receive:
            async for kind, data in receive:
                if kind == "progress":
                    data = {"step": data["step"], "loss": wire_number(data["loss"])}
                yield _event(kind, data)

    return StreamingResponse(events(), media_type=EVENT_STREAM,
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/{model_id}/parameters", response_model=schemas.ParametersResponse, responses=BINARY_RESPONSE)
async def get_parameters(
    request: Request,
    work: Work,
    model_id: str = ModelId,
    name: str | None = Query(None, max_length=200, description='one parameter, e.g. "2.weight"'),
    index: str | None = Query(None, max_length=200, description='a slice of it (or of each), e.g. "0,0:10"'),
    encoding: str = Query("json", pattern="^(json|base64|binary)$",
                      description="binary: an application/octet-stream frame, as with that Accept"),
    grads: bool = Query(True, description="include the gradients"),
):
    """Parameter values and gradients (null before any backward), by PyTorch's ``named_parameters()`` names."""
    encoding = "binary" if accepts_binary(request) else encoding
    content, record = await work.run(lambda: work.models.parameters(model_id, name, index, encoding, grads))
    return _json(content, record.version, binary=encoding == "binary")


@router.get("/{model_id}/state", response_model=schemas.StateResponse,
            responses={200: {"content": {NPZ_MEDIA_TYPE: {"schema": BINARY_SCHEMA},
                                         codec.BINARY_MEDIA_TYPE: {"schema": BINARY_SCHEMA}},
                             "description": "the whole state as JSON, as .npz with Accept: application/x-npz, or "
                                            "as a binary frame with Accept: application/octet-stream"}})
async def export_state(request: Request, work: Work, model_id: str = ModelId,
                       encoding: str = Query("json", pattern="^(json|base64|binary)$",
                                             description="binary: an application/octet-stream frame, as with "
                                                         "that Accept")):
    """The whole training state (spec, parameters, grads, optimizer, scheduler, RNG) for ``PUT .../state``."""
    service = work.models
    if NPZ_MEDIA_TYPE in request.headers.get("accept", ""):
        record, blob = await work.run(lambda: service.snapshot(model_id))
        return Response(blob, media_type=NPZ_MEDIA_TYPE, headers={
            "ETag": etag(record.version), "Content-Disposition": f'attachment; filename="{model_id}.npz"'})
    encoding = "binary" if accepts_binary(request) else encoding
    content, record = await work.run(lambda: service.export_state(model_id, encoding))
    return _json(content, record.version, binary=encoding == "binary")


@router.put("/{model_id}/state", response_model=schemas.StepResponse, openapi_extra={"requestBody": {
    "required": True, "content": {
        "application/json": {
            "schema": {"type": "object", "description": "what GET .../state returns; grads, optimizer, scheduler "
                                                        "and generator may be left out (they start afresh)"},
            "examples": {"hand_made": {"summary": "A state for the first model example, fitted by hand",
                                       "value": schemas.EXAMPLE_MODEL_STATE}}},
        NPZ_MEDIA_TYPE: {"schema": BINARY_SCHEMA},
        codec.BINARY_MEDIA_TYPE: {"schema": BINARY_SCHEMA}},
    "description": "JSON; .npz (application/x-npz, or application/octet-stream without "
                   "Inference-Header-Content-Length); or a binary frame.\n\n" + BINARY_PROSE}})
async def import_state(request: Request, work: Work, model_id: str = ModelId,
                       if_match: str | None = IfMatch):
    """Replace the model's whole state with an exported one (JSON, a binary frame, or .npz with that Content-Type)."""
    service = work.models
    settings = work.settings
    raw = await request.body()
    content_type = request.headers.get("content-type", "application/json")
    framed = await request.json() if is_framed(request) else None  # unframed by OrjsonRoute: the JSON state

    def import_from_body():
        if framed is not None:
            state = state_from_json(framed, ElementBudget(settings.max_tensor_elements, settings.max_request_elements))
        elif content_type.startswith((NPZ_MEDIA_TYPE, "application/octet-stream")):
            state = unpack_state(raw)
        else:
            try:
                parsed = codec.loads(raw)
            except ValueError:
                raise ServiceError("the body is not valid JSON (send application/json or application/x-npz)") from None
            budget = ElementBudget(settings.max_tensor_elements, settings.max_request_elements)
            state = state_from_json(parsed, budget)
        return service.import_state(model_id, state, if_match)

    content, record = await work.run(import_from_body, model_id)
    return _json(content, record.version)


# ---- the model itself, last: the docs page lists the operations of one path together, in the
# order the paths first appear, so a reader who works down the page deletes the model only after
# using it (a path with parameters never matches the deeper paths above, so the order is free).


@router.get("/{model_id}", response_model=schemas.ModelResponse)
async def get_model(request: Request, work: Work, model_id: str = ModelId):
    """The model's spec, step count, version and parameter shapes."""
    record = await work.run(lambda: work.models.get_record(model_id))
    return _json(describe(record), record.version)


@router.delete("/{model_id}", status_code=204, response_class=Response)
async def delete_model(request: Request, work: Work, model_id: str = ModelId,
                       if_match: str | None = IfMatch):
    """Delete the model (only at the ``If-Match`` version when given)."""
    await work.run(lambda: work.models.delete(model_id, if_match), model_id)
    return Response(status_code=204)
