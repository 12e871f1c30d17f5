"""What every router shares: orjson body parsing, and running compute work off the event loop.

``OrjsonRoute`` makes FastAPI parse JSON bodies with orjson (several times
faster than ``json`` on big tensors); the models' tensor fields are ``Any``, so
pydantic passes the parsed lists through untouched.

Binary requests (``Content-Type: application/octet-stream`` with
``Inference-Header-Content-Length``, the Open Inference Protocol's binary-data
extension) are unframed here, before FastAPI sees them: ``codec.decode_frame``
turns the frame into the JSON request, each binary tensor an array viewing the
body, and the route validates it as it would the JSON. ``Accept:
application/octet-stream`` (or ``"encoding": "binary"``) asks for a binary response.

``run_compute`` runs an engine-facing function from ``service.compute`` in
the runtime's worker threads (``service.runtime``), at most ``max_concurrency``
at once; a request that waits longer than ``queue_timeout_s`` for a slot gets 503. A small one first
tries ``Runtime.inline`` (tiny compiled replays on the event loop, no thread hop). The response's
``Server-Timing`` says how long the worker took (``compute;dur=<ms>``), whether the function's
plan was cached (``plan;desc="hit"`` or ``"miss"``), how its calls ran (``run;desc="replayed"``,
``"recompiled"``, ``"eager"``, or those that ran joined by ``+``; ``service.plans.CallTally``) and, on a
miss, how long building it took (``build;dur=<ms>``), and where it ran (``thread;desc="inline"``, on the
event loop, or ``"worker"``). The calls also feed the plan metrics.
"""

from __future__ import annotations

import time
from collections import Counter

from fastapi import HTTPException, Request
from fastapi.routing import APIRoute
from starlette.responses import Response

from service import codec, compute
from service.compute import ComputeContext
from service.config import Settings
from service.dependencies import Services
from service.errors import UnsupportedMediaTypeError
from service.plans import FunctionSource
from service.runtime import INLINE_MAX_BODY_BYTES


class OrjsonRequest(Request):
    async def body(self):
        """The body as the body-limit middleware passed it on (a bytearray: binary tensors view it
        writably), not joined again into bytes (Starlette's ``Request.body`` would copy it)."""
        if not hasattr(self, "_body"):
            chunks = [chunk async for chunk in self.stream() if chunk]
            self._body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return self._body

    async def json(self):
        if not hasattr(self, "_json"):
            try:
                self._json = codec.loads(await self.body())
            except MemoryError as error:  # FastAPI would make any other exception here a 400
                raise HTTPException(503, f"the server has no memory to parse this body now ({error}); retry shortly",
                                    headers={"Retry-After": "1"}) from None
        return self._json


class OrjsonRoute(APIRoute):
    """An APIRoute whose request body is parsed by orjson."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        takes_body = self.body_field is not None

        async def orjson_handler(request: Request) -> Response:
            request = OrjsonRequest(request.scope, request.receive)
            if is_binary_request(request) and (takes_body or codec.HEADER_LENGTH in request.headers):
                request = await unframed(request)
            elif takes_body:
                check_media_type(request)
            return await handler(request)

        return orjson_handler


def _media_type(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


def is_binary_request(request: Request) -> bool:
    """Whether the body is ``application/octet-stream``."""
    return _media_type(request.headers.get("content-type", "")) == codec.BINARY_MEDIA_TYPE


def check_media_type(request: Request) -> None:
    """415 for a body that is neither JSON nor a binary frame (no Content-Type: FastAPI's 422 stands)."""
    media = _media_type(request.headers.get("content-type", ""))
    if media and media != "application/json" and not media.endswith("+json"):
        raise UnsupportedMediaTypeError(f"Content-Type {media[:80]!r} is not accepted here: send application/json, "
                                        f"or {codec.BINARY_MEDIA_TYPE} with {codec.HEADER_LENGTH} (a binary frame)",
                                        content_type=media[:80])


def is_framed(request: Request) -> bool:
    """Whether the request came as a binary frame (``unframed`` made it the JSON request)."""
    return request.scope.get("gradserve.binary_frame", False)


async def unframed(request: OrjsonRequest) -> OrjsonRequest:
    """A binary frame as the JSON request it carries (``codec.decode_frame``), for FastAPI to validate.

    A FrameError (400) or CodecError (422) here reaches the app's problem handlers.
    """
    body = await request.body()
    content = codec.decode_frame(body, request.headers.get(codec.HEADER_LENGTH))
    headers = [(name, value) for name, value in request.scope["headers"] if name != b"content-type"]
    scope = {**request.scope, "headers": [*headers, (b"content-type", b"application/json")],
             "gradserve.binary_frame": True}
    framed = OrjsonRequest(scope, request.receive)
    framed._body, framed._json = body, content
    return framed


def accepts_binary(request: Request) -> bool:
    """Whether ``Accept`` names ``application/octet-stream`` (with a q above 0)."""
    for item in request.headers.get("accept", "").split(","):
        media, *params = (part.strip().lower() for part in item.split(";"))
        if media == codec.BINARY_MEDIA_TYPE:
            return _quality(params) > 0
    return False


def _quality(params: list[str]) -> float:
    """An Accept entry's q (1 when absent; 0 when it is not a number)."""
    for param in params:
        name, _, value = param.partition("=")
        if name.strip() == "q":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 1.0


def negotiated(request: Request, body):
    """The request model with ``encoding="binary"`` when the client accepts a binary response."""
    if accepts_binary(request) and getattr(body, "encoding", "binary") != "binary":
        return body.model_copy(update={"encoding": "binary"})
    return body


# The binary framing in the OpenAPI document: prose and a worked example here, the media types
# on every route that takes or returns tensors.
BINARY_EXAMPLE_HEADER = ('{"inputs":{"x":{"shape":[3],"dtype":"float32","parameters":{"binary_data_size":12}}},'
                         '"expr":"x.sin()"}')
BINARY_PROSE = f"""**Binary tensors** (the Open Inference Protocol's binary-data extension, as KServe v2 and
Triton use it): send `Content-Type: application/octet-stream` and `Inference-Header-Content-Length: N`.
The first N bytes are this JSON request, in which any tensor may be
`{{"shape": [...], "dtype": "float32", "parameters": {{"binary_data_size": K}}}}`; after them come the
tensors' raw little-endian C-order bytes, K each, in the order those tensors appear in the JSON text.
Every byte must be accounted for. For example `sin` of `x = [0, 0.5, 1]`: the header

    {BINARY_EXAMPLE_HEADER}

is {len(BINARY_EXAMPLE_HEADER)} bytes (`Inference-Header-Content-Length: {len(BINARY_EXAMPLE_HEADER)}`), and
the body ends with the 12 bytes `00 00 00 00 00 00 00 3f 00 00 80 3f`. With
`Accept: application/octet-stream` (or `"encoding": "binary"`) the response is framed the same way:
`Inference-Header-Content-Length` names its JSON's length (padded with spaces to a multiple of 8),
and every response tensor is in the binary form, its bytes after the JSON. Problems stay
`application/problem+json`."""
BINARY_SCHEMA = {"type": "string", "format": "binary"}
BINARY_REQUEST = {"requestBody": {
    "description": "JSON, or a binary frame (application/octet-stream).\n\n" + BINARY_PROSE,
    "content": {codec.BINARY_MEDIA_TYPE: {"schema": BINARY_SCHEMA}}}}
BINARY_RESPONSE = {200: {
    "description": "JSON, or with Accept: application/octet-stream a binary frame (see the request body)",
    "content": {codec.BINARY_MEDIA_TYPE: {"schema": BINARY_SCHEMA}},
    "headers": {codec.HEADER_LENGTH: {"description": "binary responses: the length of the JSON that opens the body",
                                      "schema": {"type": "integer", "minimum": 0}}}}}


async def run_compute(request: Request, services: Services, handler, body, settings: Settings,
                      function: FunctionSource | None = None) -> Response:
    """``handler(body, context)`` in a worker thread, under the concurrency limit; a JSON response
    (a binary frame when the client accepts one).

    ``function`` is a stored function's (``/v1/functions/{id}/...``); None: the body's own.
    """
    body = negotiated(request, body)
    runtime = services.runtime
    context = ComputeContext(settings, runtime.plans, function)
    async with runtime.slot():
        started = time.perf_counter()
        try:
            parts = None
            where = "worker"
            if _may_run_inline(request, body):
                ops = Counter()
                parts = runtime.inline(compute.run_in_worker, handler, body, context, ops.update)
                if parts is None:
                    context.calls.clear()  # the attempt is undone: the worker's run counts
                else:
                    services.metrics.count_ops(ops)
                    where = "inline"
            if parts is None:
                parts = await runtime.in_worker(compute.run_in_worker, handler, body, context,
                                                services.metrics.count_ops)
        finally:
            services.metrics.count_plan_calls(context.calls)
    elapsed_ms = (time.perf_counter() - started) * 1000
    timing = (f'compute;dur={elapsed_ms:.2f}, plan;desc="{"hit" if context.plan_hit else "miss"}", '
              f'run;desc="{context.calls.summary()}", thread;desc="{where}"')
    if context.plan_hit is False:
        timing += f", build;dur={context.build_seconds * 1000:.2f}"
    return json_response(parts, headers={"Server-Timing": timing})


def _may_run_inline(request: Request, body) -> bool:
    """A small request on the CPU may try ``Runtime.inline`` (it runs there only if all it does is
    replay tiny plans)."""
    length = request.headers.get("content-length")
    return (length is not None and length.isdigit() and int(length) <= INLINE_MAX_BODY_BYTES
            and getattr(body, "device", "cpu") == "cpu")


def json_response(parts: list | codec.Frame, status_code: int = 200, headers: dict | None = None) -> Response:
    """A JSON response from ``codec.dumps_parts``: one bytes object, or its pieces sent one by one;
    or a binary one from ``codec.dumps_frame``."""
    if isinstance(parts, codec.Frame):
        return PiecewiseResponse(parts.parts, status_code, {**(headers or {}),
                                 codec.HEADER_LENGTH: str(parts.header_length)}, codec.BINARY_MEDIA_TYPE)
    if len(parts) == 1:
        return Response(parts[0], status_code=status_code, media_type="application/json", headers=headers)
    return PiecewiseResponse(parts, status_code, headers)


SEND_BYTES = 1 << 20


class PiecewiseResponse(Response):
    """A body sent as the pieces it was written in (a large tensor's data, ~1 MB each), with its
    Content-Length: the whole text is never joined in memory, and each piece is dropped once sent."""

    media_type = "application/json"

    def __init__(self, parts: list, status_code: int = 200, headers: dict | None = None,
                 media_type: str = "application/json"):
        self.parts = parts
        self.media_type = media_type
        self.status_code = status_code
        self.background = None
        self.body = b""
        length = sum(len(part) for part in parts)
        self.init_headers({**(headers or {}), "content-length": str(length)})

    async def __call__(self, scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        parts, self.parts = self.parts[::-1], []
        batch, size = [], 0
        while parts:  # the small pieces (brackets, commas, keys) go out with their neighbours
            if len(parts[-1]) >= SEND_BYTES and batch:  # a large piece (a binary tensor) goes alone, unjoined
                await send({"type": "http.response.body", "body": b"".join(batch), "more_body": True})
                batch, size = [], 0
            batch.append(parts.pop())
            size += len(batch[-1])
            if size >= SEND_BYTES or not parts:
                chunk = b"".join(batch) if len(batch) > 1 else bytes(batch[0])
                await send({"type": "http.response.body", "body": chunk, "more_body": bool(parts)})
                batch, size = [], 0
