"""The app in-process: one ``client`` on default settings per test module, its lifespan run."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings


@pytest.fixture(scope="module")
def client():
    # raise_server_exceptions=False: a bug answers 500 as it would over a socket, and the test sees it.
    with TestClient(create_app(Settings()), raise_server_exceptions=False) as client:
        yield client
