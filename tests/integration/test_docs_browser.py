"""/docs and /redoc render in a real headless Chromium with the network blocked but for loopback.

The command line that walls the browser off (tests/integration/browser.py) sends every host but
127.0.0.1 nowhere, so a page that needed a CDN would render empty. Skips cleanly where Debian's
chromium is not installed. The screenshot is kept under test-artifacts/ (git-ignored).
"""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.integration.browser import ARTIFACTS, OFFLINE_FLAGS, chromium
from tests.integration.docs_walk import page_order

pytestmark = pytest.mark.integration


def run_chromium(url: str, *actions: str) -> str:
    command = [chromium(), *OFFLINE_FLAGS, "--virtual-time-budget=15000", "--window-size=1280,1600", *actions, url]
    result = subprocess.run(command, capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_swagger_ui_lists_every_operation_offline(server, http):
    dom = run_chromium(f"{server.url}/docs", "--dump-dom")
    paths = http.get("/openapi.json").json()["paths"]
    assert paths
    for path in paths:
        assert f'data-path="{path}"' in dom, f"{path} missing from the rendered operations list"
    assert "opblock-tag" in dom


def test_the_docs_list_operations_in_page_order(server, http):
    """/docs lists the operations in the order docs_walk.page_order computes, the order the examples
    walk (test_docs_examples) follows."""
    dom = run_chromium(f"{server.url}/docs", "--dump-dom")
    rendered = re.findall(r'class="opblock opblock-[^"]*" id="operations-([^"]+)"', dom)
    expected = [f"{operation['tags'][0]}-{operation['operationId']}"
                for _, _, operation in page_order(http.get("/openapi.json").json())]
    assert rendered == expected


def test_swagger_ui_screenshot(server):
    ARTIFACTS.mkdir(exist_ok=True)
    target = ARTIFACTS / "docs.png"
    target.unlink(missing_ok=True)
    run_chromium(f"{server.url}/docs", f"--screenshot={target}")
    assert target.exists() and target.stat().st_size > 10_000


def test_redoc_renders_offline(server):
    dom = run_chromium(f"{server.url}/redoc", "--dump-dom")
    assert "compute_gradient" in dom and "/v1/grad" in dom
