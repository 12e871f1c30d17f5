"""A free TCP port on the loopback interface, for the servers the tests start (uvicorn, redis-server)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port nothing listens on now: the kernel picks it for a socket bound to port 0, which is then closed."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
