"""A throwaway redis-server on a free loopback port, for the store and scale-out tests.

Started with no persistence (``--save '' --appendonly no``) in a temporary
directory; tests that need it skip cleanly when ``redis-server`` is not
installed (``.ci/run`` installs it).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time

import pytest

from tests import processes
from tests.loopback import free_port


@contextlib.contextmanager
def running_redis():
    """Yield the URL of a fresh redis-server; stop it afterwards."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    import redis

    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", directory],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{port}/0"
        try:
            client = redis.Redis.from_url(url)
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise RuntimeError("redis-server did not start") from None
                    time.sleep(0.05)
            client.close()
            yield url
        finally:
            processes.stop(process)
