"""Stopping the servers the tests start (uvicorn, redis-server, Chromium): politely, then firmly."""

from __future__ import annotations

import subprocess


def stop(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM, and SIGKILL if ``process`` has not exited within ``timeout`` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
