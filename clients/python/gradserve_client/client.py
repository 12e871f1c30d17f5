"""``Client`` and ``AsyncClient``: one method per gradserve endpoint, numpy arrays in and out.

Every method builds a ``Call`` (method, path, body, how to read the answer) and
hands it to the client's ``_do``: ``Client._do`` sends it and returns the
result, ``AsyncClient._do`` returns a coroutine for it. So the endpoints, the
remote functions and the remote models are written once, in ``Endpoints``,
``RemoteFunction`` and ``RemoteModel``, and each method of them returns a value
on a ``Client`` and an awaitable on an ``AsyncClient``. Only the two transports
(and the server-sent event stream of ``train``) are written twice.

Calls that are safe to repeat (every compute call, ``GET``/``PUT``/``DELETE``,
registering a function, whose id is a content hash) are retried with
exponential backoff on 503 and on a dropped connection; a model's
``backward``, ``step`` or ``train`` is never sent twice.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from gradserve_client import wire
from gradserve_client.errors import NotFoundError, ProblemError, problem_error

COMPUTE = ("evaluate", "grad", "jacobian", "hessian", "vjp", "jvp", "hvp", "vhp", "gradcheck", "profile")
# The result fields that torch.autograd.functional nests in tuples.
NESTED = ("jacobian", "hessian", "vjp", "jvp", "hvp", "vhp")
EVENT_STREAM = "text/event-stream"
NPZ = "application/x-npz"
RETRIED_EXCEPTIONS = (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


class Result(dict):
    """A response's fields, as attributes too: ``result.outputs``, ``result.grads``, ``result.graph``."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"the response has no field {name!r} (it has {', '.join(self)})") from None


def _tuples(value):
    """Lists of results as tuples, the way torch.autograd.functional nests them."""
    if isinstance(value, list):
        return tuple(_tuples(item) for item in value)
    return value


def _result(decoded: dict) -> Result:
    return Result({key: _tuples(value) if key in NESTED else value for key, value in decoded.items()})


@dataclass
class Call:
    """One request: what to send, whether it may be sent again, and how to read the answer."""

    method: str
    path: str
    body: dict | None = None
    content: bytes | None = None
    headers: dict = field(default_factory=dict)
    idempotent: bool = True
    read: Callable[[httpx.Response], object] | None = None
    compute: bool = False  # a compute route, whose body names the encoding of its answer


def _source(expr, program, graph) -> dict:
    given = {name: value for name, value in (("expr", expr), ("program", program), ("graph", graph))
             if value is not None}
    if len(given) != 1:
        raise TypeError("give exactly one of expr=, program= or graph=")
    return given


def _inputs(inputs: dict, requires_grad) -> dict:
    """``inputs`` as arrays, those named in ``requires_grad`` (a name, a list of names, or True
    for all) marked as leaves."""
    if requires_grad is True:
        requires_grad = list(inputs)
    elif isinstance(requires_grad, str):
        requires_grad = [requires_grad]
    unknown = set(requires_grad or ()) - set(inputs)
    if unknown:
        raise KeyError(f"requires_grad names {sorted(unknown)}, which are not inputs ({', '.join(inputs)})")
    return {name: wire.Leaf(wire.as_array(value)) if name in (requires_grad or ()) else wire.as_array(value)
            for name, value in inputs.items()}


def _tensors(value):
    """A ``v`` or ``grad_outputs``: an array, or a list/tuple of them."""
    if isinstance(value, (list, tuple)) and value and not isinstance(value[0], (int, float)):
        return [wire.as_array(item) for item in value]
    return wire.as_array(value)


def compute_body(source: dict, inputs: dict, requires_grad=(), **options) -> dict:
    body = dict(source)
    body["inputs"] = _inputs(inputs, requires_grad)
    for name, value in options.items():
        if value is None:
            continue
        body[name] = _tensors(value) if name in ("v", "grad_outputs") else value
    return body


class Endpoints:
    """The compute endpoints, for a client (``source`` is the function sent inline) and for a
    registered function (``source`` is empty and the path is the function's)."""

    def _compute(self, endpoint: str, source: dict, inputs: dict, requires_grad=(), **options):
        raise NotImplementedError

    def _function(self, expr, program, graph) -> dict:
        """The function a call sends inline: exactly one of ``expr``, ``program``, ``graph``."""
        return _source(expr, program, graph)

    def evaluate(self, expr=None, program=None, graph=None, *, inputs: dict, **options):
        """``POST /v1/evaluate``: ``result.outputs``, a list of arrays."""
        return self._compute("evaluate", self._function(expr, program, graph), inputs, **options)

    def grad(self, expr=None, program=None, graph=None, *, inputs: dict, requires_grad=(), grad_outputs=None,
             **options):
        """``POST /v1/grad``: ``.outputs``, ``.grads`` (name -> array, or None for inputs that need no
        grad) and ``.graph``. ``grad_outputs`` is the tutorial's ``y.backward(v)``."""
        return self._compute("grad", self._function(expr, program, graph), inputs, requires_grad,
                             grad_outputs=grad_outputs, **options)

    def jacobian(self, expr=None, program=None, graph=None, *, inputs: dict, **options):
        """``POST /v1/jacobian``: ``.jacobian`` nested as torch.autograd.functional.jacobian nests it."""
        return self._compute("jacobian", self._function(expr, program, graph), inputs, **options)

    def hessian(self, expr=None, program=None, graph=None, *, inputs: dict, **options):
        """``POST /v1/hessian``: ``.hessian``."""
        return self._compute("hessian", self._function(expr, program, graph), inputs, **options)

    def vjp(self, expr=None, program=None, graph=None, *, inputs: dict, v=None, **options):
        """``POST /v1/vjp``: ``.vjp``."""
        return self._compute("vjp", self._function(expr, program, graph), inputs, v=v, **options)

    def jvp(self, expr=None, program=None, graph=None, *, inputs: dict, v=None, **options):
        """``POST /v1/jvp``: ``.jvp``."""
        return self._compute("jvp", self._function(expr, program, graph), inputs, v=v, **options)

    def hvp(self, expr=None, program=None, graph=None, *, inputs: dict, v=None, **options):
        """``POST /v1/hvp``: ``.hvp``."""
        return self._compute("hvp", self._function(expr, program, graph), inputs, v=v, **options)

    def vhp(self, expr=None, program=None, graph=None, *, inputs: dict, v=None, **options):
        """``POST /v1/vhp``: ``.vhp``."""
        return self._compute("vhp", self._function(expr, program, graph), inputs, v=v, **options)

    def gradcheck(self, expr=None, program=None, graph=None, *, inputs: dict, requires_grad=True, **options):
        """``POST /v1/gradcheck``: ``.passed``, ``.max_abs_error``, ``.max_rel_error``."""
        return self._compute("gradcheck", self._function(expr, program, graph), inputs, requires_grad, **options)

    def profile(self, expr=None, program=None, graph=None, *, inputs: dict, requires_grad=(), **options):
        """``POST /v1/profile``: ``.rows``, ``.table`` (PyTorch's key_averages table) and ``.trace``."""
        return self._compute("profile", self._function(expr, program, graph), inputs, requires_grad, **options)


class _Base(Endpoints):
    """What both clients share: settings, building calls, reading answers."""

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 30.0,
                 encoding: str = "binary", retries: int = 3, backoff: float = 0.1):
        if encoding not in wire.ENCODINGS:
            raise ValueError(f"encoding must be one of {', '.join(wire.ENCODINGS)}, not {encoding!r}")
        self.base_url = base_url.rstrip("/")
        self.encoding = encoding
        self.retries = retries
        self.backoff = backoff
        self._headers = {"X-API-Key": api_key} if api_key else {}
        self._timeout = timeout
        self._functions_supported = True

    # ---- building calls

    def _compute(self, endpoint: str, source: dict, inputs: dict, requires_grad=(), **options):
        body = compute_body(source, inputs, requires_grad, **options)
        return self._do(Call("POST", f"/v1/{endpoint}", body, read=_read_result, compute=True))

    def _request(self, call: Call) -> dict:
        """``httpx`` request arguments for ``call``."""
        headers = {**self._headers}
        content = call.content
        if call.body is not None:
            encoding = self.encoding
            content, content_headers = wire.encode_body(call.body, encoding, name_encoding=call.compute)
            headers.update(content_headers)
            if encoding == "binary":
                headers["Accept"] = wire.BINARY
        headers.update(call.headers)  # the call's own Accept (an event stream) wins
        return {"method": call.method, "url": call.path, "content": content, "headers": headers}

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        retry_after = response.headers.get("retry-after") if response is not None else None
        if retry_after and retry_after.isdigit():
            return min(float(retry_after), 5.0)
        return self.backoff * (2 ** attempt) * (0.5 + random.random())  # jitter: replicas do not retry in step

    def _retry(self, call: Call, attempt: int, response: httpx.Response | None) -> bool:
        return call.idempotent and attempt < self.retries and (response is None or response.status_code == 503)

    @staticmethod
    def _answer(call: Call, response: httpx.Response):
        if response.status_code >= 400:
            raise problem_error(response.status_code, response.content)
        return call.read(response) if call.read else None

    # ---- functions and models

    def function(self, expr=None, program=None, graph=None) -> RemoteFunction:
        """The function registered once on the server (``POST /v1/functions``), called by id from then
        on; on a server without ``/v1/functions``, the same object sends the function inline."""
        return RemoteFunction.register(self, _source(expr, program, graph))

    def create_model(self, spec: dict) -> RemoteModel:
        """``POST /v1/models``: a remote model built from ``spec`` (DESIGN.md's model spec)."""
        return self._do(Call("POST", "/v1/models", content=json.dumps(spec).encode(),
                             headers={"Content-Type": "application/json"}, idempotent=False,
                             read=lambda r: RemoteModel(self, r.json()["id"], r.headers.get("etag"))))

    def model(self, model_id: str) -> RemoteModel:
        """A model that already exists, by id (its ETag is learnt on the first answer)."""
        return RemoteModel(self, model_id, None)

    def info(self):
        """``GET /v1/info``: version, devices and limits."""
        return self._do(Call("GET", "/v1/info", read=lambda r: Result(r.json())))


def _read_result(response: httpx.Response) -> Result:
    return _result(wire.decode_body(response.content, response.headers))


class Client(_Base):
    """A synchronous client. Use it as a context manager, or call ``close()``."""

    def __init__(self, base_url: str, **options):
        super().__init__(base_url, **options)
        self._http = httpx.Client(base_url=self.base_url, timeout=self._timeout)

    def _do(self, call: Call):
        request = self._request(call)
        for attempt in range(self.retries + 1):
            try:
                response = self._http.request(**request)
            except RETRIED_EXCEPTIONS:
                if not self._retry(call, attempt, None):
                    raise
                time.sleep(self._delay(attempt, None))
                continue
            if not self._retry(call, attempt, response):
                return self._answer(call, response)
            time.sleep(self._delay(attempt, response))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _events(self, call: Call):
        """The server-sent events of ``call``, as ``(event, data)`` pairs."""
        with self._http.stream(**self._request(call)) as response:
            if response.status_code >= 400:
                response.read()
                raise problem_error(response.status_code, response.content)
            yield from _parse_events(response.iter_lines())

    def _train(self, model: RemoteModel, call: Call, on_progress, steps: int):
        with _Progress(steps, on_progress) as progress:
            for event, data in self._events(call):
                outcome = _training_event(model, event, data, progress)
                if outcome is not None:
                    return outcome
        raise ProblemError({"status": 502, "title": "training stream ended early",
                            "detail": "the server closed the event stream before its result"})

    def close(self) -> None:
        self._http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncClient(_Base):
    """The same methods as ``Client``, each awaited. Use it with ``async with``, or ``await aclose()``."""

    def __init__(self, base_url: str, **options):
        super().__init__(base_url, **options)
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=self._timeout)

    async def _do(self, call: Call):
        request = self._request(call)
        for attempt in range(self.retries + 1):
            try:
                response = await self._http.request(**request)
            except RETRIED_EXCEPTIONS:
                if not self._retry(call, attempt, None):
                    raise
                await asyncio.sleep(self._delay(attempt, None))
                continue
            if not self._retry(call, attempt, response):
                return self._answer(call, response)
            await asyncio.sleep(self._delay(attempt, response))
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _train(self, model: RemoteModel, call: Call, on_progress, steps: int):
        async with self._http.stream(**self._request(call)) as response:
            if response.status_code >= 400:
                await response.aread()
                raise problem_error(response.status_code, response.content)
            with _Progress(steps, on_progress) as progress:
                pending: list[str] = []
                async for line in response.aiter_lines():
                    pending.append(line)
                    if line == "":
                        for event, data in _parse_events(pending):
                            outcome = _training_event(model, event, data, progress)
                            if outcome is not None:
                                return outcome
                        pending = []
        raise ProblemError({"status": 502, "title": "training stream ended early",
                            "detail": "the server closed the event stream before its result"})

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()


def _parse_events(lines):
    """``(event, data)`` for each server-sent event in ``lines`` (``data`` parsed as JSON)."""
    event, data = "message", []
    for line in lines:
        if line == "":
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())
    if data:
        yield event, json.loads("\n".join(data))


class _Progress:
    """Calls ``on_progress(step, loss)``; without one, a tqdm bar when tqdm is installed (and
    stderr is a terminal), else nothing."""

    def __init__(self, steps: int, on_progress):
        self.on_progress = on_progress
        self.bar = None
        if on_progress is None:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                return
            self.bar = tqdm(total=steps, unit="step", disable=None)

    def __enter__(self):
        return self

    def __call__(self, step: int, loss) -> None:
        if self.on_progress is not None:
            self.on_progress(step, loss)
        elif self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=loss)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()


def _training_event(model: RemoteModel, event: str, data, progress):
    """Act on one training event; the run's losses when it is the result."""
    if event == "progress":
        progress(data["step"], data["loss"])
        return None
    if event == "error":
        raise problem_error(data.get("status", 500), json.dumps(data).encode())
    if event == "result":
        model.etag = f'"{data["version"]}"' if "version" in data else model.etag
        return [float(loss) for loss in data["losses"]]
    return None


class RemoteFunction(Endpoints):
    """A function registered on the server: the compute methods without ``expr``/``program``/``graph``.

    ``as_torch(*names)`` and ``as_engine(*names)`` make it an autograd Function of
    those libraries, its arguments the inputs ``names`` in order: the forward calls
    ``/evaluate``, the backward ``/vjp``, so the remote function sits inside a local graph.
    """

    def __init__(self, client: _Base, source: dict, function_id: str | None):
        self.client = client
        self.source = source
        self.id = function_id

    @classmethod
    def register(cls, client: _Base, source: dict):
        def read(response: httpx.Response) -> RemoteFunction:
            return cls(client, source, response.json()["id"])

        call = Call("POST", "/v1/functions", content=json.dumps(source).encode(),
                    headers={"Content-Type": "application/json"}, read=read)
        if isinstance(client, AsyncClient):
            return cls._register_async(client, call, source)
        try:
            return client._do(call)
        except NotFoundError:  # an older server without /v1/functions: send the function inline
            return cls(client, source, None)

    @classmethod
    async def _register_async(cls, client: AsyncClient, call: Call, source: dict):
        try:
            return await client._do(call)
        except NotFoundError:
            return cls(client, source, None)

    def _compute(self, endpoint: str, source: dict, inputs: dict, requires_grad=(), **options):
        body = compute_body(self.source if self.id is None else source, inputs, requires_grad, **options)
        path = f"/v1/{endpoint}" if self.id is None else f"/v1/functions/{self.id}/{endpoint}"
        return self.client._do(Call("POST", path, body, read=_read_result, compute=True))

    def _function(self, expr, program, graph) -> dict:
        if (expr, program, graph) != (None, None, None):
            raise TypeError("a registered function is called with its inputs only, not expr=, program= or graph=")
        return {}

    def delete(self):
        """``DELETE /v1/functions/{id}``."""
        return self.client._do(Call("DELETE", f"/v1/functions/{self.id}"))

    def as_torch(self, *names: str):
        """A callable ``f(*tensors)`` running this function inside torch's autograd."""
        import torch

        from gradserve_client.adapters import autograd_function
        return autograd_function(torch, self, names)

    def as_engine(self, *names: str):
        """A callable ``f(*tensors)`` running this function inside the engine's autograd."""
        import engine
        from gradserve_client.adapters import autograd_function
        return autograd_function(engine, self, names)


class RemoteModel:
    """A model kept by the server. Its last ETag is sent as ``If-Match`` with every change but
    ``delete``, so a change made elsewhere in between is a ``PreconditionFailedError`` (call
    ``refresh()`` and decide), never an update lost."""

    def __init__(self, client: _Base, model_id: str, etag: str | None):
        self.client = client
        self.id = model_id
        self.etag = etag
        self.path = f"/v1/models/{model_id}"

    def _remember(self, response: httpx.Response) -> None:
        self.etag = response.headers.get("etag", self.etag)

    def _call(self, method: str, action: str, body: dict | None = None, *, idempotent: bool,
              read: Callable[[Result], object] = lambda result: result, headers: dict | None = None,
              content: bytes | None = None) -> object:
        def answer(response: httpx.Response):
            self._remember(response)
            if response.headers.get("content-type", "").startswith(NPZ):
                return read(response.content)
            return read(_read_result(response) if response.content else Result())

        extra = dict(headers or {})
        if self.etag and method not in ("GET", "DELETE"):  # deleting is final whatever changed before
            extra["If-Match"] = self.etag
        path = f"{self.path}/{action}" if action else self.path
        return self.client._do(Call(method, path, body, content, extra, idempotent, answer))

    def refresh(self):
        """``GET /v1/models/{id}``: the model's description; its current ETag is remembered."""
        return self._call("GET", "", idempotent=True)

    def forward(self, input, target=None):  # noqa: A002 - PyTorch's name
        """``.output``, and ``.loss`` when a target is given."""
        body = {"input": wire.as_array(input)}
        if target is not None:
            body["target"] = wire.as_array(target)
        return self._call("POST", "forward", body, idempotent=True)

    def backward(self, input, target) -> float:  # noqa: A002
        """Gradients of the loss accumulate on the server; the loss."""
        body = {"input": wire.as_array(input), "target": wire.as_array(target)}
        return self._call("POST", "backward", body, idempotent=False, read=lambda r: float(r["loss"]))

    def step(self) -> int:
        return self._call("POST", "step", idempotent=False, read=lambda r: r["step"])

    def zero_grad(self, set_to_none: bool = True):
        return self._call("POST", "zero_grad", {"set_to_none": set_to_none}, idempotent=False)

    def train(self, inputs, targets, steps: int, batch_size: int | None = None, on_progress=None):
        """``steps`` rounds of zero_grad, forward, backward, step; the losses. Progress arrives over
        server-sent events: ``on_progress(step, loss)`` for each, or a tqdm bar."""
        body = {"inputs": wire.as_array(inputs), "targets": wire.as_array(targets), "steps": steps}
        if batch_size is not None:
            body["batch_size"] = batch_size
        headers = {"Accept": EVENT_STREAM}
        if self.etag:
            headers["If-Match"] = self.etag
        call = Call("POST", f"{self.path}/train", body, headers=headers, idempotent=False)
        return self.client._train(self, call, on_progress, steps)

    def parameters(self, grads: bool = True):
        """``.parameters`` and ``.grads``: name -> array (grads None before a backward)."""
        return self._call("GET", f"parameters?grads={'true' if grads else 'false'}&encoding=base64",
                          idempotent=True)

    def state(self) -> bytes:
        """The whole training state as ``.npz`` bytes, for ``load_state`` here or on another model."""
        return self._call("GET", "state", idempotent=True, headers={"Accept": NPZ})

    def load_state(self, blob: bytes):
        return self._call("PUT", "state", idempotent=True, headers={"Content-Type": NPZ}, content=blob)

    def delete(self):
        return self._call("DELETE", "", idempotent=True)


