"""What handlers receive through ``Depends``: the app's settings, runtime, model service, metrics, functions.

``create_app(settings)`` keeps one of each per app on ``app.state``; a provider
here hands it to a handler that declares, e.g., ``runtime: AppRuntime``, and a
test swaps it with ``app.dependency_overrides[app_runtime] = ...``. No route
reads ``request.app.state`` itself.

The providers are ``async def`` so FastAPI calls them on the event loop: a plain
``def`` dependency would cost every request a trip through the thread pool.
Each is one attribute read; the three a compute route declares were measured with
``make bench BENCH=http`` against the former ``request.app.state`` reads (no difference
beyond the noise of the run).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.config import Settings
from service.functions import FunctionRegistry
from service.metrics import Metrics
from service.model_service import ModelService
from service.runtime import Runtime


async def app_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    return request.app.state.settings


async def app_runtime(request: Request) -> Runtime:
    """The app's runtime (``service.runtime``): compute slots, worker threads, the plan cache."""
    return request.app.state.runtime


async def app_models(request: Request) -> ModelService:
    """The app's model service (``service.model_service``): the store, its cache and per-model locks."""
    return request.app.state.models


async def app_metrics(request: Request) -> Metrics:
    """The app's Prometheus collectors (``service.metrics``)."""
    return request.app.state.metrics


async def app_functions(request: Request) -> FunctionRegistry:
    """The app's registry of stored functions (``service.functions``)."""
    return request.app.state.functions


AppSettings = Annotated[Settings, Depends(app_settings)]
AppRuntime = Annotated[Runtime, Depends(app_runtime)]
AppModels = Annotated[ModelService, Depends(app_models)]
AppMetrics = Annotated[Metrics, Depends(app_metrics)]
AppFunctions = Annotated[FunctionRegistry, Depends(app_functions)]
