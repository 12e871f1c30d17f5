"""``/healthz`` (liveness), ``/readyz`` (readiness) and ``/metrics`` (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

import engine
from service import schemas
from service.dependencies import AppServices
from service.errors import READ_ERRORS, problem_responses

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=schemas.HealthResponse)
def check_liveness() -> dict:
    """Liveness: the process is up."""
    return {"status": "ok"}


@router.get("/readyz", response_model=schemas.HealthResponse, responses=problem_responses(503))
def check_readiness() -> dict:
    """Readiness: the engine computes (a one-op smoke test)."""
    with engine.no_grad():
        value = engine.ones(2).sum().item()
    if value != 2.0:
        from service.errors import OverloadedError

        raise OverloadedError("the engine failed its smoke test")
    return {"status": "ready"}


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}, **READ_ERRORS},
)
async def get_metrics(services: AppServices) -> Response:
    """Prometheus metrics: requests by route and status, latency, engine op counts, the plan cache."""
    metrics = services.metrics
    return Response(metrics.render(), media_type=metrics.content_type)
