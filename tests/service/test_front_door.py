"""``/`` in-process: the playground page, its assets and its Content-Security-Policy; JSON clients get
the entry points; all of it open without the key. The page in a real browser: tests/integration."""

from __future__ import annotations

import tomllib
from fnmatch import fnmatch
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings

ROOT = Path(__file__).resolve().parents[2]
PLAYGROUND = ROOT / "service" / "static" / "playground"
ENTRY_POINTS = {"/", "/docs", "/redoc", "/openapi.json", "/v1/info"}
BROWSER = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


class ReferenceCollector(HTMLParser):
    """Every URL the page names: links, scripts, styles, icons; and the body's attributes."""

    def __init__(self):
        super().__init__()
        self.references: list[str] = []
        self.body: dict[str, str] = {}
        self.inline_scripts = 0
        self.style_attributes = 0
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        for name in ("href", "src"):
            if attributes.get(name):
                self.references.append(attributes[name])
        if tag == "body":
            self.body = attributes
        if "style" in attributes or tag == "style":
            self.style_attributes += 1
        self._in_script = tag == "script"

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.inline_scripts += 1

    def handle_endtag(self, tag):
        self._in_script = False


def read_page(text: str) -> ReferenceCollector:
    collector = ReferenceCollector()
    collector.feed(text)
    return collector


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(Settings()), follow_redirects=False) as client:
        yield client


def test_a_browser_gets_the_playground_page(client):
    response = client.get("/", headers=BROWSER)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "<title>gradserve playground</title>" in response.text


def test_the_page_allows_nothing_but_its_own_origin(client):
    policy = client.get("/", headers=BROWSER).headers["content-security-policy"]
    directives = {part.split()[0]: part.split()[1:] for part in policy.split(";") if part.strip()}
    assert directives["default-src"] == ["'self'"]
    for directive in ("script-src", "style-src", "connect-src", "img-src"):
        assert directives[directive] == ["'self'"], directive
    assert directives["frame-ancestors"] == ["'none'"] and directives["object-src"] == ["'none'"]
    # A policy without 'unsafe-inline' only holds if the page has no inline script or style.
    page = read_page(client.get("/").text)
    assert page.inline_scripts == 0 and page.style_attributes == 0


def test_every_url_the_page_names_is_served_from_this_origin(client):
    page = read_page(client.get("/").text)
    assert page.references
    for reference in page.references:
        url = urljoin("http://testserver/", reference)
        assert url.startswith("http://testserver/"), reference
        assert client.get(url).status_code == 200, reference


def test_every_module_the_scripts_import_is_served(client):
    for script in PLAYGROUND.glob("*.js"):
        response = client.get(f"/playground/{script.name}")
        assert response.status_code == 200 and "javascript" in response.headers["content-type"], script.name
        for line in response.text.splitlines():
            if line.startswith("import ") and " from " in line:
                target = line.split(" from ")[1].strip(' ";')
                assert target.startswith("./"), f"{script.name} imports {target} from elsewhere"
                assert client.get(f"/playground/{target[2:]}").status_code == 200, target


def test_the_assets_are_package_data():
    """A non-editable install (the Dockerfile's) carries the page: every file matches package-data."""
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["service"]
    for path in PLAYGROUND.iterdir():
        relative = path.relative_to(ROOT / "service").as_posix()
        assert any(fnmatch(relative, pattern) for pattern in patterns), relative


def test_a_json_client_gets_the_entry_points(client):
    response = client.get("/", headers={"Accept": "application/json"})
    assert response.status_code == 200
    body = response.json()
    assert set(body["links"].values()) == ENTRY_POINTS and body["docs"] == "/docs"
    assert response.headers["vary"] == "Accept"
    for name, url in body["links"].items():
        if name != "info":
            assert client.get(url).status_code == 200, url


def test_link_header_names_the_docs_and_the_openapi_document(client):
    link = client.get("/").headers["link"]
    assert '</docs>; rel="service-doc"' in link and '</openapi.json>; rel="service-desc"' in link


def test_head_answers_like_get(client):
    get, head = client.get("/"), client.head("/")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-security-policy"] == get.headers["content-security-policy"]


def test_other_methods_are_405(client):
    assert client.post("/").status_code == 405


def test_the_page_is_not_an_api_operation(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert not [path for path in paths if path == "/" or path.startswith("/playground")]


def test_docs_pages_stay_where_they_were(client):
    assert "swagger-ui" in client.get("/docs").text
    assert client.get("/redoc").status_code == 200


def test_the_page_needs_no_key_and_asks_for_one_when_the_server_has_it(client):
    assert read_page(client.get("/").text).body["data-api-key"] == "none"
    with TestClient(create_app(Settings(api_key="k")), follow_redirects=False) as keyed:
        response = keyed.get("/", headers=BROWSER)
        assert response.status_code == 200
        assert read_page(response.text).body["data-api-key"] == "required"
        assert keyed.get("/playground/main.js").status_code == 200
        assert keyed.get("/v1/info").status_code == 401
        assert keyed.get("/v1/info", headers={"X-API-Key": "k"}).status_code == 200


def test_links_carry_the_root_path_behind_a_proxy():
    """The page names everything relative to itself, so under a proxy's prefix it loads from there."""
    with TestClient(create_app(Settings()), root_path="/gradserve", follow_redirects=False) as client:
        json_links = client.get("/", headers={"Accept": "application/json"}).json()["links"]
        page = read_page(client.get("/").text)
    assert set(json_links.values()) == {"/gradserve" + path for path in ENTRY_POINTS}
    assert all(not reference.startswith("/") for reference in page.references)
