"""``/`` over a real socket: a browser-like client that follows redirects lands on the docs page."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_following_the_front_door_lands_on_the_docs_page(http):
    response = http.get("/", follow_redirects=True, headers={"Accept": "text/html,*/*;q=0.8"})
    assert response.status_code == 200 and response.url.path == "/docs"
    assert "swagger-ui" in response.text
    assert [(step.status_code, step.headers["location"]) for step in response.history] == [(307, "/docs")]


def test_head_is_a_redirect_without_a_body(http):
    get = http.get("/")
    head = http.head("/")
    assert head.status_code == 307 and head.headers["location"] == "/docs"
    assert head.content == b""
    assert int(head.headers["content-length"]) == len(get.content) > 0
