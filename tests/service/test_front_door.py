"""``/`` in-process: a 307 to the docs whose body (HTML or JSON) links every entry point, open without the key."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings

ENTRY_POINTS = {"/docs", "/redoc", "/openapi.json", "/v1/info"}


class LinkCollector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.hrefs.append(dict(attrs)["href"])


def links_in(page: str) -> set[str]:
    collector = LinkCollector()
    collector.feed(page)
    return set(collector.hrefs)


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(Settings()), follow_redirects=False) as client:
        yield client


def test_a_browser_is_sent_to_the_docs_with_every_entry_point_linked(client):
    response = client.get("/", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert response.status_code == 307
    assert response.headers["location"] == "/docs"
    assert response.headers["content-type"].startswith("text/html")
    assert links_in(response.text) == ENTRY_POINTS
    for href in links_in(response.text):  # every link leads somewhere real
        assert client.get(href).status_code == 200, href


def test_following_the_redirect_lands_on_the_swagger_page(client):
    response = client.get("/", follow_redirects=True)
    assert response.status_code == 200 and response.url.path == "/docs"
    assert "swagger-ui" in response.text
    assert [step.status_code for step in response.history] == [307]


def test_a_json_client_gets_the_links_as_json(client):
    response = client.get("/", headers={"Accept": "application/json"})
    assert response.status_code == 307 and response.headers["location"] == "/docs"
    body = response.json()
    assert set(body["links"].values()) == ENTRY_POINTS and body["docs"] == "/docs"
    assert response.headers["vary"] == "Accept"


def test_link_header_names_the_docs_and_the_openapi_document(client):
    link = client.get("/").headers["link"]
    assert '</docs>; rel="service-doc"' in link and '</openapi.json>; rel="service-desc"' in link


def test_head_answers_like_get(client):
    response = client.head("/")
    assert response.status_code == 307 and response.headers["location"] == "/docs"


def test_other_methods_are_405(client):
    assert client.post("/").status_code == 405


def test_front_door_is_not_an_api_operation(client):
    assert "/" not in client.get("/openapi.json").json()["paths"]


def test_front_door_needs_no_api_key_but_info_still_does():
    with TestClient(create_app(Settings(api_key="k")), follow_redirects=False) as client:
        response = client.get("/")
        assert response.status_code == 307 and response.headers["location"] == "/docs"
        assert client.get("/", follow_redirects=True).status_code == 200
        assert client.get("/v1/info").status_code == 401
        assert client.get("/v1/info", headers={"X-API-Key": "k"}).status_code == 200


def test_links_carry_the_root_path_behind_a_proxy():
    with TestClient(create_app(Settings()), root_path="/gradserve", follow_redirects=False) as client:
        response = client.get("/")
    assert response.headers["location"] == "/gradserve/docs"
    assert links_in(response.text) == {"/gradserve" + path for path in ENTRY_POINTS}
