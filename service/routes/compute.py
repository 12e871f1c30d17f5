"""``/v1/evaluate``, ``/v1/grad``, ``/v1/gradcheck``: run a function, differentiate it, check it."""

from __future__ import annotations

from fastapi import APIRouter, Request

from service import compute, schemas
from service.dependencies import AppServices, AppSettings
from service.errors import COMPUTE_ERRORS
from service.routes.base import BINARY_REQUEST, BINARY_RESPONSE, OrjsonRoute, run_compute

router = APIRouter(prefix="/v1", tags=["compute"], route_class=OrjsonRoute, responses=COMPUTE_ERRORS)


@router.post("/evaluate", response_model=schemas.EvaluateResponse, openapi_extra=BINARY_REQUEST,
             responses=BINARY_RESPONSE)
async def evaluate_function(body: schemas.EvaluateRequest, request: Request,
                            settings: AppSettings, services: AppServices):
    """Run the function under no_grad and return its outputs."""
    return await run_compute(request, services, compute.evaluate, body, settings)


@router.post("/grad", response_model=schemas.GradResponse, openapi_extra=BINARY_REQUEST,
             responses=BINARY_RESPONSE)
async def compute_gradient(body: schemas.GradRequest, request: Request, settings: AppSettings, services: AppServices):
    """Run the function, backpropagate from its outputs, return outputs, leaf grads and the autograd graph."""
    return await run_compute(request, services, compute.gradient, body, settings)


@router.post("/gradcheck", response_model=schemas.GradcheckResponse, openapi_extra=BINARY_REQUEST,
             responses=BINARY_RESPONSE)
async def check_gradient(body: schemas.GradcheckRequest, request: Request,
                         settings: AppSettings, services: AppServices):
    """Compare the engine's Jacobian with float64 central differences."""
    return await run_compute(request, services, compute.gradcheck, body, settings)
