"""``/`` over a real socket: the playground page and its assets, with its Content-Security-Policy."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_the_server_address_opens_the_playground(http):
    response = http.get("/", follow_redirects=True, headers={"Accept": "text/html,*/*;q=0.8"})
    assert response.status_code == 200 and response.url.path == "/" and not response.history
    assert "gradserve playground" in response.text
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert http.get("/playground/main.js").status_code == 200


def test_head_has_the_headers_without_a_body(http):
    get = http.get("/")
    head = http.head("/")
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len(get.content) > 0
