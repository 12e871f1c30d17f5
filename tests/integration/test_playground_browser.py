"""The playground at ``/`` in a real headless Chromium, walled off from every origin but the server's.

Each example runs as a person runs it (click, or keys), and what the page draws is read back from
the SVG's data attributes and checked against the API's own answer to the same request (taken from
the page's curl command, so the command is checked too) and against the mathematics: sin and 2 cos,
exp_adder's diagonal Jacobian, a Hessian by formula, SGD's update. Every request the page makes must
stay on the server's origin, and the console must stay free of errors (a Content-Security-Policy
refusal would land there). Screenshots at 1280 and 390 px, light and dark, go to test-artifacts/.
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
import shutil
import subprocess

import numpy as np
import pytest

from tests.integration.browser import Page
from tests.integration.conftest import LiveServer

pytestmark = pytest.mark.integration

RESULTS = "document.getElementById('results').dataset.status"
MODELS = "document.getElementById('panel-models').dataset.status"
LR = 0.001  # the TinyModel spec's SGD learning rate


@pytest.fixture(scope="module")
def browser():
    page = Page()
    yield page
    page.close()


@pytest.fixture
def page(browser, server):
    # Cleared before the page loads, so that what loading asks for, and refuses, is checked too.
    browser.requests.clear()
    browser.errors.clear()
    browser.emulate(1280)
    browser.open(f"{server.url}/")
    yield browser
    stray = [request["url"] for request in browser.requests if not request["url"].startswith(server.url + "/")]
    assert not stray, f"requests left the server's origin: {stray}"


def assert_no_console_errors(page: Page, allowed: tuple[str, ...] = ()) -> None:
    unexpected = [error for error in page.errors if not any(text in error for text in allowed)]
    assert not unexpected, unexpected


def run_example(page: Page, name: str) -> str:
    page.click(f'[data-example="{name}"]')
    page.click("#run")
    return page.wait_for(f"{RESULTS} !== 'running' && {RESULTS} !== 'idle' && {RESULTS}")


def request_from_curl(page: Page, element: str = "curl") -> tuple[str, dict]:
    """The path and JSON body of the curl command the page shows, parsed as a shell would."""
    words = shlex.split(page.evaluate(f"document.getElementById('{element}').textContent").replace("\\\n", " "))
    url = next(word for word in words if word.startswith("http://"))
    body = json.loads(words[words.index("-d") + 1])
    return re.sub(r"^http://[^/]+", "", url), body


def plotted(page: Page, series: str) -> list[dict]:
    """The points of one chart series: their data (x, y) and where they were drawn (cx, cy)."""
    return page.evaluate(f"""[...document.querySelectorAll('#chart g.series')]
        .filter((g) => g.dataset.series === {json.dumps(series)}).flatMap((g) => [...g.querySelectorAll('circle')])
        .map((c) => ({{x: Number(c.dataset.x), y: Number(c.dataset.y), cx: Number(c.getAttribute('cx')),
                      cy: Number(c.getAttribute('cy'))}}))""")


def assert_drawn_where_the_values_are(points: list[dict]) -> None:
    """Larger x further right, larger y higher up: the picture matches the numbers it carries."""
    by_x = sorted(points, key=lambda p: p["x"])
    assert all(a["cx"] < b["cx"] for a, b in itertools.pairwise(by_x))
    by_y = sorted(points, key=lambda p: p["y"])
    assert all(a["cy"] >= b["cy"] for a, b in itertools.pairwise(by_y))
    assert by_y[0]["cy"] > by_y[-1]["cy"]


def heat_map_blocks(page: Page) -> dict[str, np.ndarray]:
    blocks = page.evaluate("""Object.fromEntries([...document.querySelectorAll('#heatmap g.block')].map((g) =>
        [g.dataset.block, [...g.querySelectorAll('rect')].map((r) =>
            [Number(r.dataset.row), Number(r.dataset.col), Number(r.dataset.value)])]))""")
    result = {}
    for label, cells in blocks.items():
        rows, cols = max(c[0] for c in cells) + 1, max(c[1] for c in cells) + 1
        matrix = np.full((rows, cols), np.nan)
        for row, col, value in cells:
            matrix[row, col] = value
        result[label] = matrix
    return result


def graph_names(tree) -> list[str]:
    """Every node of the response's graph once (a repeated node is a reference, not a new node)."""
    names = []

    def visit(node):
        if node is None or node.get("repeat"):
            return
        names.append(node["name"])
        for child, _ in node["next_functions"]:
            visit(child)

    for root in tree:
        visit(root)
    return sorted(names)


def drawn_graph(page: Page) -> dict:
    return page.evaluate("""({nodes: [...document.querySelectorAll('#graph g.node')].map((g) =>
        ({name: g.dataset.name, variable: g.dataset.variable || null})),
        edges: document.querySelectorAll('#graph line.edge').length})""")


# ---- the examples ----


def test_sin_example_plots_sin_and_its_gradient_as_the_api_computes_them(page, http):
    assert run_example(page, "sin") == "done"
    path, body = request_from_curl(page)
    assert path == "/v1/grad"
    expected = http.post(path, json=body).json()
    a = np.array(body["inputs"]["a"]["data"])
    np.testing.assert_allclose(a, np.linspace(0, 2 * np.pi, 25))

    f, f_prime = plotted(page, "f: output 1"), plotted(page, "f': a.grad")
    assert len(f) == len(f_prime) == 25
    np.testing.assert_allclose([p["x"] for p in f], a)
    np.testing.assert_array_equal([p["y"] for p in f], expected["outputs"][1]["data"])
    np.testing.assert_array_equal([p["y"] for p in f_prime], expected["grads"]["a"]["data"])
    np.testing.assert_allclose([p["y"] for p in f], np.sin(a), atol=1e-6)  # the tutorial's first figure
    np.testing.assert_allclose([p["y"] for p in f_prime], 2 * np.cos(a), atol=1e-6)  # and its second
    assert_drawn_where_the_values_are(f)
    assert_drawn_where_the_values_are(f_prime)

    drawn = drawn_graph(page)
    assert sorted(node["name"] for node in drawn["nodes"]) == graph_names(expected["graph"])
    assert sorted(node["name"] for node in drawn["nodes"]) == sorted(
        ["SumBackward0", "AddBackward0", "MulBackward0", "SinBackward0", "AccumulateGrad"])
    assert {"name": "AccumulateGrad", "variable": "a"} in drawn["nodes"]
    assert drawn["edges"] == 4  # Sum -> Add -> Mul -> Sin -> AccumulateGrad; the constants have None
    assert_no_console_errors(page)


def test_doubling_loop_with_backward_v(page, http):
    assert run_example(page, "doubling") == "done"
    path, body = request_from_curl(page)
    assert body["grad_outputs"] == [[0.1, 1.0, 0.0001]]
    expected = http.post(path, json=body).json()
    x = np.array(body["inputs"]["x"]["data"])
    y = np.array(expected["outputs"][0]["data"])
    scale = y / x  # the loop doubled every element the same number of times
    assert np.allclose(scale, scale[0]) and np.log2(scale[0]).is_integer()
    f_prime = sorted(plotted(page, "f': x.grad"), key=lambda p: p["x"])
    order = np.argsort(x)
    np.testing.assert_allclose([p["y"] for p in f_prime], (np.array([0.1, 1.0, 0.0001]) * scale)[order], rtol=1e-6)
    np.testing.assert_allclose([p["y"] for p in sorted(plotted(page, "f: output 0"), key=lambda p: p["x"])],
                               y[order])
    drawn = drawn_graph(page)
    assert sorted(node["name"] for node in drawn["nodes"]) == graph_names(expected["graph"])
    assert [node["name"] for node in drawn["nodes"]].count("MulBackward0") == np.log2(scale[0])
    assert_no_console_errors(page)


def test_exp_adder_jacobian_as_a_heat_map_with_values_on_hover_and_keys(page, http):
    assert run_example(page, "exp_adder") == "done"
    path, body = request_from_curl(page)
    assert path == "/v1/jacobian"
    expected = http.post(path, json=body).json()["jacobian"]
    blocks = heat_map_blocks(page)
    assert list(blocks) == ["∂output0 / ∂x", "∂output0 / ∂y"]
    np.testing.assert_array_equal(blocks["∂output0 / ∂x"].ravel(), expected[0]["data"])
    np.testing.assert_array_equal(blocks["∂output0 / ∂y"].ravel(), expected[1]["data"])
    x = np.array(body["inputs"]["x"])
    np.testing.assert_allclose(blocks["∂output0 / ∂x"], np.diag(2 * np.exp(x)), rtol=1e-6)
    np.testing.assert_allclose(blocks["∂output0 / ∂y"], 3 * np.eye(3))

    page.evaluate("document.querySelector('#heatmap rect[data-row=\"1\"][data-col=\"1\"]')"
                  ".dispatchEvent(new PointerEvent('pointerenter'))")
    readout = page.evaluate("document.getElementById('heatmap-readout').textContent")
    assert readout.startswith("∂output0 / ∂x[1, 1] = ")
    assert float(readout.split("= ")[1]) == pytest.approx(2 * np.exp(x[1]), rel=1e-4)
    page.evaluate("document.querySelector('#heatmap svg').focus()")
    page.press("ArrowRight")
    assert page.evaluate("document.getElementById('heatmap-readout').textContent").startswith("∂output0 / ∂x[1, 2] = 0")
    assert_no_console_errors(page)


def test_hessian_heat_map_matches_the_formula(page, http):
    assert run_example(page, "hessian") == "done"
    path, body = request_from_curl(page)
    expected = http.post(path, json=body).json()["hessian"]
    (label, drawn), = heat_map_blocks(page).items()
    assert label == "∂²f / ∂x ∂x"
    np.testing.assert_array_equal(drawn.ravel(), expected["data"])
    # f = sin(S) Q with S = sum x, Q = sum x^2:
    # H_ij = -sin(S) Q + 2 cos(S) (x_i + x_j) + 2 sin(S) delta_ij
    x = np.array(body["inputs"]["x"])
    s, q = x.sum(), (x ** 2).sum()
    formula = -np.sin(s) * q + 2 * np.cos(s) * (x[:, None] + x[None, :]) + 2 * np.sin(s) * np.eye(len(x))
    np.testing.assert_allclose(drawn, formula, atol=1e-5)
    assert_no_console_errors(page)


def test_a_hessian_too_large_to_draw_says_so_instead(page):
    page.click('[data-example="hessian"]')
    page.fill('[data-field="steps"]', "250")
    page.click("#run")
    assert page.wait_for(f"{RESULTS} !== 'running' && {RESULTS} !== 'idle' && {RESULTS}") == "done"
    assert page.evaluate("document.querySelectorAll('#heatmap rect').length") == 0
    assert "62500 numbers" in page.evaluate("document.getElementById('heatmap-caption').textContent")
    assert_no_console_errors(page)


def test_profiler_loop_table_counts_every_op(page, http):
    assert run_example(page, "profiler") == "done"
    path, body = request_from_curl(page)
    assert path == "/v1/profile"
    expected = {row["name"]: row["count"] for row in http.post(path, json=body).json()["rows"]}
    shown = page.evaluate("""Object.fromEntries([...document.querySelectorAll('#profile-table tbody tr')]
        .map((tr) => [tr.dataset.name, Number(tr.dataset.count)]))""")
    assert shown == expected == {"engine::div": 1000, "engine::mul": 1000}  # the tutorial's 1000 iterations
    assert "Self CPU" in page.evaluate("document.getElementById('profile-text').textContent")
    assert_no_console_errors(page)


def test_a_program_error_is_shown_as_the_problem_says_with_its_line_and_column_marked(page, http):
    page.click('[data-example="sin"]')
    page.fill("#source", "b = sin(a)\nc = b.foo()\nreturn c.sum()")
    page.click("#run")
    assert page.wait_for(f"{RESULTS} === 'problem' && {RESULTS}")
    path, body = request_from_curl(page)
    problem = http.post(path, json=body).json()
    assert problem["line"] == 2 and problem["column"] >= 1
    shown = page.evaluate("document.getElementById('problem').textContent")
    assert problem["detail"] in shown and problem["title"] in shown and problem["construct"] in shown
    editor = page.evaluate("""(() => { const e = document.getElementById('source');
        return {start: e.selectionStart, invalid: e.getAttribute('aria-invalid'),
                gutter: document.querySelector('#gutter .error-line').textContent,
                excerpt: document.querySelector('#problem .excerpt').textContent}; })()""")
    # The selection starts at the problem's column (1-based) on its line.
    assert editor["start"] == len("b = sin(a)\n") + problem["column"] - 1
    assert editor["invalid"] == "true" and editor["gutter"] == "2"
    caret_line = editor["excerpt"].splitlines()[-1]
    assert caret_line.index("^") == problem["column"] - 1
    assert_no_console_errors(page, allowed=("status of 400",))


def test_a_tensor_problem_marks_the_input_it_names(page, http):
    page.click('[data-example="sin"]')
    page.evaluate("document.querySelector('[data-field=\"kind\"]').value = 'values'")
    page.fill('[data-field="values"]', "[[1, 2], [3]]")
    page.click("#run")
    assert page.wait_for(f"{RESULTS} === 'problem' && {RESULTS}")
    path, body = request_from_curl(page)
    problem = http.post(path, json=body).json()
    assert problem["input"] == "inputs.a"
    assert problem["detail"] in page.evaluate("document.getElementById('problem').textContent")
    assert page.evaluate("document.querySelector('[data-field=\"name\"]').getAttribute('aria-invalid')") == "true"
    assert_no_console_errors(page, allowed=("status of 422",))


def test_values_that_are_not_numbers_are_refused_before_anything_is_sent(page):
    page.click('[data-example="doubling"]')
    page.fill('[data-field="values"]', "0.3, one, 2")
    page.click("#run")
    assert page.wait_for(f"{RESULTS} === 'invalid' && {RESULTS}")
    assert "input x: one is not a number" in page.evaluate("document.getElementById('problem').textContent")
    assert page.evaluate("document.querySelector('[data-field=\"values\"]').getAttribute('aria-invalid')") == "true"
    assert not [request for request in page.requests if "/v1/" in request["url"]]
    page.fill('[data-field="values"]', "0.3 -1.1 2")  # spaces separate values too
    page.click("#run")
    assert page.wait_for(f"{RESULTS} === 'done' && {RESULTS}")
    assert_no_console_errors(page)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_curl_command_on_screen_gives_what_the_page_drew(page):
    assert run_example(page, "sin") == "done"
    command = page.evaluate("document.getElementById('curl').textContent")
    answer = json.loads(subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60,
                                       check=True).stdout)
    assert [p["y"] for p in plotted(page, "f': a.grad")] == answer["grads"]["a"]["data"]
    python = page.evaluate("document.getElementById('python').textContent")
    assert ").grad(" in python and 'requires_grad=["a"]' in python and "np.linspace(0, 6.28318530" in python


def test_tiny_model_one_step_and_live_training(page, http):
    page.click('[data-example="tiny_model"]')
    assert page.evaluate("document.getElementById('panel-models').hidden") is False
    assert page.wait_for(f"{MODELS}") == "created"
    page.click("#model-step")
    assert page.wait_for(f"{MODELS} !== 'created' && {MODELS}") == "stepped"
    rows = page.evaluate("""[...document.querySelectorAll('#step-table tbody tr')].map((tr) =>
        [Number(tr.dataset.before), Number(tr.dataset.grad), Number(tr.dataset.after)])""")
    assert len(rows) == 10
    before, grad, after = np.array(rows).T
    assert np.abs(grad).max() > 0
    # SGD: w <- w - lr * g, within float32 rounding of the update.
    np.testing.assert_allclose(after, before - LR * grad, atol=1e-7 + 2e-7 * np.abs(before).max())

    page.fill("#model-steps", "12")
    page.click("#model-train")
    assert page.wait_for(f"{MODELS} !== 'stepped' && {MODELS} !== 'training' && {MODELS}") == "trained"
    losses = page.evaluate("""[...document.querySelectorAll('#loss-chart circle')].map((c) =>
        [Number(c.dataset.x), Number(c.dataset.y)])""")
    assert [step for step, _ in losses] == list(range(1, 13))

    # Replay the same calls against the API: a fresh model from the same spec, the batch the page sent.
    path, train_body = request_from_curl(page, "model-curl")
    assert path.endswith("/train") and train_body["steps"] == 12
    trains = [r for r in page.requests if r["url"].endswith("/train")]
    assert [r["headers"].get("Accept") for r in trains] == ["text/event-stream"]  # the SSE stream
    spec = json.loads(page.evaluate("document.getElementById('model-spec').value"))
    model = http.post("/v1/models", json=spec).json()["location"]
    batch = {"input": train_body["inputs"], "target": train_body["targets"]}
    for call, payload in (("zero_grad", {"set_to_none": True}), ("backward", batch), ("step", None)):
        assert http.post(f"{model}/{call}", json=payload).status_code == 200
    expected = http.post(f"{model}/train", json=train_body).json()["losses"]
    np.testing.assert_allclose([loss for _, loss in losses], expected, rtol=1e-5)
    assert expected[-1] < expected[0]
    assert_no_console_errors(page)


# ---- use: keyboard, names, widths, schemes, the key ----


def test_the_page_works_from_the_keyboard(page):
    focused = []
    for _ in range(40):
        page.press("Tab")
        focused.append(page.evaluate("document.activeElement.id || document.activeElement.dataset.example || "
                                     "document.activeElement.textContent.trim()"))
        if focused[-1] == "run":
            break
    assert "tab-functions" in focused and "sin" in focused and "source" in focused and focused[-1] == "run"
    page.press("Enter")
    assert page.wait_for(f"{RESULTS} !== 'running' && {RESULTS} !== 'idle' && {RESULTS}") == "done"

    page.evaluate("document.getElementById('source').focus()")
    page.evaluate("document.getElementById('results').dataset.status = 'idle'")
    page.press("Enter", ctrl=True)  # Ctrl+Enter in the editor runs
    assert page.wait_for(f"{RESULTS} !== 'running' && {RESULTS} !== 'idle' && {RESULTS}") == "done"

    page.evaluate("document.getElementById('tab-functions').focus()")
    page.press("ArrowRight")
    assert page.evaluate("[document.activeElement.id, document.getElementById('panel-models').hidden, "
                         "document.getElementById('panel-functions').hidden]") == ["tab-models", False, True]
    assert_no_console_errors(page)


def test_every_control_has_a_name(page):
    unnamed = page.evaluate("""[...document.querySelectorAll('input, select, textarea, button')].filter((c) =>
        !(c.labels && c.labels.length) && !c.getAttribute('aria-label') && !c.getAttribute('aria-labelledby')
        && !(c.tagName === 'BUTTON' && c.textContent.trim())).map((c) => c.outerHTML)""")
    assert unnamed == []


@pytest.mark.parametrize("width", [1280, 390])
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_screenshots_at_desktop_and_phone_widths_light_and_dark(page, width, scheme):
    page.emulate(width, dark=scheme == "dark")
    assert run_example(page, "sin") == "done"
    # Nothing wider than the screen: the page reads without scrolling sideways.
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == ("rgb(255, 255, 255)" if scheme == "light" else "rgb(15, 20, 25)")
    shot = page.screenshot(f"playground-{width}-{scheme}")
    assert shot.stat().st_size > 20_000
    page.click('[data-example="tiny_model"]')
    assert page.wait_for(f"{MODELS}") == "created"
    page.fill("#model-steps", "20")
    page.click("#model-train")
    assert page.wait_for(f"{MODELS} !== 'training' && {MODELS} !== 'created' && {MODELS}") == "trained"
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    page.screenshot(f"playground-models-{width}-{scheme}")
    assert_no_console_errors(page)


def test_a_server_with_a_key_gets_a_key_field_and_the_key_stays_off_the_screen(browser):
    server = LiveServer({"GRADSERVE_API_KEY": "s3cret-key"})
    try:
        browser.open(f"{server.url}/")
        browser.errors.clear()
        assert browser.evaluate("document.getElementById('api-key-row').hidden") is False
        assert run_example(browser, "sin") == "problem"
        assert "401" in browser.evaluate("document.getElementById('problem').textContent")
        browser.fill("#api-key", "s3cret-key")
        browser.click("#run")
        assert browser.wait_for(f"{RESULTS} !== 'running' && {RESULTS}") == "done"
        curl = browser.evaluate("document.getElementById('curl').textContent")
        assert '-H "X-API-Key: $GRADSERVE_API_KEY"' in curl and "s3cret-key" not in curl
        assert_no_console_errors(browser, allowed=("status of 401",))
    finally:
        server.stop_clean()
