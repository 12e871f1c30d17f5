"""``/v1/functions``: client functions as resources: register once, then call by id with inputs only.

``POST /v1/functions`` with an ``expr``, ``program`` or ``graph`` validates it (the same
problems as an inline request) and stores it under its id, the sha256 of its canonical
form (``service.plans``): 201 with ``Location`` the first time, 200 with the same id and
``Location`` when it is already stored (registration is idempotent, on every replica).
``POST /v1/functions/{id}/{evaluate,grad,jacobian,...}`` take the inline route's body
without the function and run the same compute function (``service.compute``) on the
stored one. ``GET`` returns the function, ``DELETE`` removes it.
"""

# No ``from __future__ import annotations``: the per-transform handlers below are made in a
# loop, and FastAPI reads their body type from annotations evaluated where they are defined.

from typing import Annotated

from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from service import codec, compute, schemas
from service.config import Settings
from service.dependencies import AppServices, AppSettings, Services
from service.errors import MODEL_ERRORS
from service.functions import describe
from service.model_service import run_model_work
from service.plans import FunctionSource, function_source
from service.routes.base import BINARY_REQUEST, BINARY_RESPONSE, OrjsonRoute, run_compute
from service.runtime import budget_for

router = APIRouter(prefix="/v1/functions", tags=["functions"], route_class=OrjsonRoute, responses=MODEL_ERRORS)

EXAMPLE_FUNCTION_ID = function_source("expr", schemas.EXAMPLE_FUNCTION["expr"]).id
FunctionId = Path(min_length=64, max_length=64, pattern=r"^[0-9a-f]{64}$",
                  description="the id POST /v1/functions returned (the sha256 of the canonical function)",
                  openapi_examples={"sin": {"summary": "the first example function", "value": EXAMPLE_FUNCTION_ID}})

HANDLERS = {
    "evaluate": (compute.evaluate, schemas.EvaluateResponse, "Run the stored function under no_grad."),
    "grad": (compute.gradient, schemas.GradResponse, "Outputs, leaf gradients and the autograd graph."),
    "jacobian": (compute.jacobian, schemas.JacobianResponse, "The Jacobian at the inputs."),
    "hessian": (compute.hessian, schemas.HessianResponse, "The Hessian of a scalar function at the inputs."),
    "vjp": (compute.vjp, schemas.VjpResponse, "The vector-Jacobian product v^T J."),
    "jvp": (compute.jvp, schemas.JvpResponse, "The Jacobian-vector product J v, by forward mode."),
    "hvp": (compute.hvp, schemas.HvpResponse, "The Hessian-vector product H v."),
    "vhp": (compute.vhp, schemas.VhpResponse, "The vector-Hessian product v^T H."),
    "gradcheck": (compute.gradcheck, schemas.GradcheckResponse, "The Jacobian against central differences."),
    "profile": (compute.profile, schemas.ProfileResponse, "The stored function under the profiler."),
}


async def _in_worker(services: Services, settings: Settings, work):
    """``work()`` in a worker thread, under the compute limits and the engine-error mapping."""
    async with services.runtime.slot():
        return await services.runtime.in_worker(run_model_work, work, settings, services.metrics.count_ops)


async def _stored_function(services: Services, settings: Settings,
                           function_id: str) -> tuple[FunctionSource, list[str]]:
    """The stored function: from the registry's cache (no thread hop), else read in a worker."""
    cached = services.functions.cached(function_id)
    if cached is not None:
        return cached
    return await _in_worker(services, settings, lambda: services.functions.load(function_id))


def _json(content: dict, status: int = 200, headers: dict | None = None) -> Response:
    return Response(codec.dumps(content), status_code=status, media_type="application/json", headers=headers)


@router.post("", status_code=201, response_model=schemas.FunctionResponse,
             responses={200: {"description": "already registered: the same id and Location",
                              "model": schemas.FunctionResponse}})
async def register_function(body: schemas.FunctionCreateRequest, settings: AppSettings, services: AppServices):
    """Validate and store a function; 201 with its id and ``Location`` (200 when already stored)."""
    function = compute.function_of(body)
    content, created = await _in_worker(services, settings,
                                        lambda: services.functions.register(function, budget_for(settings)))
    return _json(content, 201 if created else 200, {"Location": content["location"]})


def _transform_route(transform: str):
    handler, response_model, summary = HANDLERS[transform]
    request_model = schemas.STORED_REQUESTS[transform]

    async def run_stored_function(body: request_model, request: Request, settings: AppSettings,
                                  services: AppServices, function_id: Annotated[str, FunctionId]):
        function, _ = await _stored_function(services, settings, function_id)
        return await run_compute(request, services, handler, body, settings, function)

    run_stored_function.__name__ = f"{transform}_stored_function"
    run_stored_function.__doc__ = f"{summary} The body is POST /v1/{transform}'s without the function."
    router.post(f"/{{function_id}}/{transform}", response_model=response_model, openapi_extra=BINARY_REQUEST,
                responses=BINARY_RESPONSE)(run_stored_function)


for _transform in HANDLERS:
    _transform_route(_transform)


# ---- the function itself, last: the docs page lists DELETE after every call that uses it.


@router.get("/{function_id}", response_model=schemas.FunctionResponse)
async def get_function(settings: AppSettings, services: AppServices, function_id: Annotated[str, FunctionId]):
    """The stored function, in canonical form, and the inputs it reads."""
    function, inputs = await _in_worker(services, settings, lambda: services.functions.load(function_id))
    return _json(describe(function, inputs))


@router.delete("/{function_id}", status_code=204, response_class=Response)
async def delete_function(settings: AppSettings, services: AppServices, function_id: Annotated[str, FunctionId]):
    """Remove the stored function; later calls by its id get 404."""
    await _in_worker(services, settings, lambda: services.functions.delete(function_id))
    return Response(status_code=204)
