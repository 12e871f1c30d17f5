"""The application factory: assembles routers, error handlers and middleware."""

from __future__ import annotations

from fastapi import FastAPI

import engine
from service.config import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(title="gradserve", version=engine.__version__)
    app.state.settings = settings

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict:
        """Liveness: the process is up."""
        return {"status": "ok"}

    return app
