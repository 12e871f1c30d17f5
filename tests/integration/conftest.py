"""A real uvicorn serving the app on a free loopback port, in a subprocess; httpx talks to it."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from tests import processes
from tests.loopback import free_port

ROOT = Path(__file__).resolve().parents[2]


UVICORN = ["-m", "uvicorn", "service.app:create_app", "--factory", "--host", "127.0.0.1", "--port", "{port}",
           "--log-level", "warning", "--no-access-log"]


class LiveServer:
    """``uvicorn service.app:create_app --factory`` with ``GRADSERVE_*`` settings from ``env``.

    ``prefix`` runs it under another command (``["prlimit", "--as=..."]``); ``args`` replaces
    the arguments after the Python executable (``{port}`` is filled in).
    """

    def __init__(self, env: dict[str, str] | None = None, *, prefix: list[str] = (), args: list[str] = UVICORN,
                 start_timeout: float = 30.0):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the GC after stop(); a pipe could stall the server
        environment = {k: v for k, v in os.environ.items() if not k.startswith("GRADSERVE_")}
        environment.update(env or {})
        self.process = subprocess.Popen(
            [*prefix, sys.executable, *(arg.format(port=self.port) for arg in args)],
            cwd=ROOT, env=environment, stdout=self.log, stderr=subprocess.STDOUT,
        )
        self._wait_until_up(start_timeout)

    def _wait_until_up(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"uvicorn exited: {self.stop()[-2000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("uvicorn did not start in time")

    def client(self, **options) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60.0, **options)

    def stop(self) -> str:
        """Stop the server; return everything it logged."""
        processes.stop(self.process)
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop_clean(self) -> None:
        """Stop the server and fail if it ever logged a 500."""
        assert_no_server_errors(self.stop())


def assert_no_server_errors(log: str) -> None:
    """A 500 is always a bug: the server logs every one, so its log must show none."""
    assert "unhandled error" not in log and "Exception in ASGI application" not in log, log[-4000:]


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    # Models the tests (and schemathesis) create go to a temporary store, not ./data.
    data_dir = tmp_path_factory.mktemp("data")
    live = LiveServer({"GRADSERVE_MAX_CONCURRENCY": "8", "GRADSERVE_QUEUE_TIMEOUT_S": "30",
                       "GRADSERVE_DATA_DIR": str(data_dir)})
    yield live
    live.stop_clean()  # the whole session must not have logged a single 500


@pytest.fixture(scope="session")
def http(server):
    with server.client() as client:
        yield client
