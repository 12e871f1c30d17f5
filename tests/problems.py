"""What every problem the service answers must be: RFC 9457 ``application/problem+json`` with the status asked for."""

from __future__ import annotations


def assert_problem(response, status: int) -> dict:
    """Check that ``response`` is a problem with ``status``, ``type``, ``title`` and ``detail``; return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    assert body["type"].startswith("/problems/") and body["title"] and body["detail"]
    return body
