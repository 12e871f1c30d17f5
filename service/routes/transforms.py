"""``/v1/jacobian``, ``/v1/hessian``, ``/v1/vjp``, ``/v1/jvp``, ``/v1/hvp``, ``/v1/vhp``.

Results are nested exactly as torch.autograd.functional nests them: several
inputs (or outputs) mean a list, one a bare tensor.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from service import compute, schemas
from service.dependencies import AppServices, AppSettings
from service.errors import COMPUTE_ERRORS
from service.routes.base import BINARY_REQUEST, BINARY_RESPONSE, OrjsonRoute, run_compute

router = APIRouter(prefix="/v1", tags=["transforms"], route_class=OrjsonRoute, responses=COMPUTE_ERRORS)


@router.post("/jacobian", response_model=schemas.JacobianResponse, openapi_extra=BINARY_REQUEST,
             responses=BINARY_RESPONSE)
async def compute_jacobian(body: schemas.JacobianRequest, request: Request,
                           settings: AppSettings, services: AppServices):
    """The Jacobian of the function at the inputs."""
    return await run_compute(request, services, compute.jacobian, body, settings)


@router.post("/hessian", response_model=schemas.HessianResponse, openapi_extra=BINARY_REQUEST,
             responses=BINARY_RESPONSE)
async def compute_hessian(body: schemas.HessianRequest, request: Request, settings: AppSettings, services: AppServices):
    """The Hessian of a scalar function at the inputs."""
    return await run_compute(request, services, compute.hessian, body, settings)


@router.post("/vjp", response_model=schemas.VjpResponse, openapi_extra=BINARY_REQUEST,
             responses=BINARY_RESPONSE)
async def compute_vjp(body: schemas.VjpRequest, request: Request, settings: AppSettings, services: AppServices):
    """The vector-Jacobian product v^T J (v: one tensor per output)."""
    return await run_compute(request, services, compute.vjp, body, settings)


@router.post("/jvp", response_model=schemas.JvpResponse, openapi_extra=BINARY_REQUEST,
             responses=BINARY_RESPONSE)
async def compute_jvp(body: schemas.JvpRequest, request: Request, settings: AppSettings, services: AppServices):
    """The Jacobian-vector product J v (v: one tensor per input), by forward mode."""
    return await run_compute(request, services, compute.jvp, body, settings)


@router.post("/hvp", response_model=schemas.HvpResponse, openapi_extra=BINARY_REQUEST,
             responses=BINARY_RESPONSE)
async def compute_hvp(body: schemas.HvpRequest, request: Request, settings: AppSettings, services: AppServices):
    """The Hessian-vector product H v of a scalar function."""
    return await run_compute(request, services, compute.hvp, body, settings)


@router.post("/vhp", response_model=schemas.VhpResponse, openapi_extra=BINARY_REQUEST,
             responses=BINARY_RESPONSE)
async def compute_vhp(body: schemas.HvpRequest, request: Request, settings: AppSettings, services: AppServices):
    """The vector-Hessian product v^T H of a scalar function."""
    return await run_compute(request, services, compute.vhp, body, settings)
