"""The application factory: assembles routers, error handlers, middleware and offline docs."""

from __future__ import annotations

import contextlib
import inspect

from fastapi import FastAPI, Security
from fastapi.security import APIKeyHeader
from fastapi_offline import FastAPIOffline

import engine
from service import compute, errors
from service.config import Settings, get_settings
from service.dependencies import Services
from service.functions import FunctionRegistry
from service.metrics import Metrics
from service.middleware import ApiKeyMiddleware, BodyLimitMiddleware, MetricsMiddleware
from service.model_service import ModelService
from service.routes import compute as compute_routes
from service.routes import front, functions, health, models, ops, profile, transforms
from service.runtime import Runtime, install_op_tracking

DESCRIPTION = """Gradients over HTTP.

Send a function (an `expr`, a restricted-Python `program`, or a JSON `graph`)
and named input tensors; get outputs, gradients, Jacobians, Hessians,
vector products, the autograd graph and profiler summaries. Errors are
RFC 9457 `application/problem+json`.

Tensors travel as JSON, as base64, or as raw bytes: an `application/octet-stream`
body framed by the Open Inference Protocol's binary-data extension (KServe v2,
Triton), and with `Accept: application/octet-stream` a response framed the same
way. Each route's request body describes the framing, with a worked example.
"""

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the service's API key")


def _telemetry(settings: Settings) -> dict:
    """FastAPI's native OpenTelemetry switched off unless asked for (FastAPI versions without it: nothing)."""
    if settings.opentelemetry or "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI):
    # Startup, in every worker process: the BLAS thread limit is process-wide, so it is set here
    # rather than per request.
    engine.set_num_threads(app.state.settings.blas_threads)
    app.state.runtime.start()
    yield
    # Shutdown: uvicorn has answered or cut every request by now; let the workers finish
    # what they run, then close the model store.
    app.state.runtime.close()
    app.state.models.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPIOffline(
        **_telemetry(settings),
        lifespan=_lifespan,
        title="gradserve",
        version=engine.__version__,
        description=DESCRIPTION,
        openapi_tags=[
            {"name": "compute", "description": "evaluate, differentiate, gradcheck"},
            {"name": "transforms", "description": "Jacobians, Hessians, vector products"},
            {"name": "profile", "description": "the engine's profiler"},
            {"name": "functions", "description": "functions kept in the store by content hash: register once, "
                                                  "then call any transform with inputs only"},
            {"name": "models", "description": "trainable models kept in the store: the training loop over HTTP"},
            {"name": "ops", "description": "the derivative table and service info"},
            {"name": "health", "description": "liveness, readiness, metrics"},
        ],
    )
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.state.runtime = Runtime(settings, app.state.metrics)  # started and closed by _lifespan
    app.state.models = ModelService(settings)  # opens the model store on first use
    app.state.functions = FunctionRegistry(app.state.models)  # kept in the same store
    app.state.services = Services(app.state.runtime, app.state.models, app.state.metrics, app.state.functions)
    install_op_tracking()
    compute.configure_gpu(settings)

    secured = [Security(api_key_header)] if settings.api_key is not None else []
    app.include_router(front.router)
    app.mount(front.ASSETS_PATH, front.playground_assets(), name="playground")
    app.include_router(health.router)
    for module in (compute_routes, transforms, profile, functions, models, ops):
        app.include_router(module.router, dependencies=secured)
    errors.install(app)

    # Added innermost first: metrics see every response, the key is checked before the body is read.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.api_key is not None:
        app.add_middleware(ApiKeyMiddleware, api_key=settings.api_key.get_secret_value())
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    return app
