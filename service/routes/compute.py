"""``/v1/evaluate``, ``/v1/grad``, ``/v1/gradcheck``: run a function, differentiate it, check it."""

from __future__ import annotations

from fastapi import APIRouter

from service import compute, schemas
from service.dependencies import AppServices, AppSettings
from service.errors import COMPUTE_ERRORS
from service.routes.base import OrjsonRoute, run_compute

router = APIRouter(prefix="/v1", tags=["compute"], route_class=OrjsonRoute, responses=COMPUTE_ERRORS)


@router.post("/evaluate", response_model=schemas.EvaluateResponse)
async def evaluate_function(body: schemas.EvaluateRequest, settings: AppSettings, services: AppServices):
    """Run the function under no_grad and return its outputs."""
    return await run_compute(services, compute.evaluate, body, settings)


@router.post("/grad", response_model=schemas.GradResponse)
async def compute_gradient(body: schemas.GradRequest, settings: AppSettings, services: AppServices):
    """Run the function, backpropagate from its outputs, return outputs, leaf grads and the autograd graph."""
    return await run_compute(services, compute.gradient, body, settings)


@router.post("/gradcheck", response_model=schemas.GradcheckResponse)
async def check_gradient(body: schemas.GradcheckRequest, settings: AppSettings, services: AppServices):
    """Compare the engine's Jacobian with float64 central differences."""
    return await run_compute(services, compute.gradcheck, body, settings)
