"""``/v1/profile``: the function (and optionally its backward) under the engine's profiler."""

from __future__ import annotations

from fastapi import APIRouter

from service import compute, schemas
from service.dependencies import AppServices, AppSettings
from service.errors import COMPUTE_ERRORS
from service.routes.base import OrjsonRoute, run_compute

router = APIRouter(prefix="/v1", tags=["profile"], route_class=OrjsonRoute, responses=COMPUTE_ERRORS)


@router.post("/profile", response_model=schemas.ProfileResponse)
async def profile_function(body: schemas.ProfileRequest, settings: AppSettings, services: AppServices):
    """Profile the function: key_averages rows, the formatted table and a Chrome trace."""
    return await run_compute(services, compute.profile, body, settings)
