"""What handlers receive through FastAPI's ``Depends``: the app's settings.

``create_app(settings)`` keeps one ``Settings`` per app on ``app.state``;
``app_settings`` hands it to a handler that declares ``settings: AppSettings``,
and a test swaps it with ``app.dependency_overrides[app_settings] = ...``.
It is ``async def`` so FastAPI calls it on the event loop: a plain ``def``
dependency would cost every request a trip through the thread pool.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.config import Settings


async def app_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    return request.app.state.settings


AppSettings = Annotated[Settings, Depends(app_settings)]
