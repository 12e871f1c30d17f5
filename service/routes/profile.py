"""``/v1/profile``: the function (and optionally its backward) under the engine's profiler."""

from __future__ import annotations

from fastapi import APIRouter, Request

from service import compute, schemas
from service.dependencies import AppServices, AppSettings
from service.errors import COMPUTE_ERRORS
from service.routes.base import BINARY_REQUEST, BINARY_RESPONSE, OrjsonRoute, run_compute

router = APIRouter(prefix="/v1", tags=["profile"], route_class=OrjsonRoute, responses=COMPUTE_ERRORS)


@router.post("/profile", response_model=schemas.ProfileResponse, openapi_extra=BINARY_REQUEST,
             responses=BINARY_RESPONSE)
async def profile_function(body: schemas.ProfileRequest, request: Request,
                           settings: AppSettings, services: AppServices):
    """Profile the function: key_averages rows, the formatted table and a Chrome trace."""
    return await run_compute(request, services, compute.profile, body, settings)
