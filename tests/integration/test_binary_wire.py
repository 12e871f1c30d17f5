"""Binary tensors on the wire against a real uvicorn over a socket (httpx), and under a memory cap.

Every compute route answers a binary frame with the numbers it gives the same request in JSON;
malformed frames, chunked or not, are 4xx problems; and a server under ``prlimit --as`` with
little room beside its warm footprint takes 40 MB binary tensors (the most one tensor may hold)
and bodies at the size limit without a 500, staying healthy and correct afterwards.
"""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from tests.binary_frames import (
    ACCEPT_BINARY,
    BINARY,
    COMPUTE_CASES,
    HEADER_LENGTH,
    binary_and_json,
    frame,
    read_frame,
)
from tests.integration.conftest import LiveServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    server = LiveServer({"GRADSERVE_DATA_DIR": str(tmp_path_factory.mktemp("data"))})
    yield server
    server.stop_clean()


@pytest.fixture(scope="module")
def http(live):
    with live.client() as client:
        yield client


@pytest.mark.parametrize("case", sorted(COMPUTE_CASES))
def test_every_compute_route_over_a_socket(http, case):
    binary_and_json(http, f"/v1/{case.split('/')[0]}", COMPUTE_CASES[case])


def test_model_forward_over_a_socket(http):
    spec = {"layers": [{"type": "linear", "in_features": 3, "out_features": 2}], "seed": 1}
    model = http.post("/v1/models", json=spec).json()["id"]
    inputs = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)
    binary_and_json(http, f"/v1/models/{model}/forward", {"input": inputs, "target": np.zeros((4, 2), np.float32)})


def test_a_chunked_binary_body_is_read_whole(http):
    x = np.arange(100_000, dtype=np.float32)
    body, headers = frame({"inputs": {"x": x}, "expr": "x + 1"})
    chunks = (body[i:i + 7919] for i in range(0, len(body), 7919))  # no Content-Length: chunked
    response = http.post("/v1/evaluate", content=chunks, headers={**headers, **ACCEPT_BINARY})
    np.testing.assert_array_equal(read_frame(response)["outputs"][0], x + 1)


@pytest.mark.parametrize(("cut", "extra", "length_delta", "status"), [
    (1, b"", 0, 400), (0, b"\0\0\0\0", 0, 400), (0, b"", 10**9, 400), (0, b"", -3, 400)])
def test_malformed_frames_over_a_socket(http, live, cut, extra, length_delta, status):
    body, headers = frame({"inputs": {"x": np.ones(10, np.float32)}, "expr": "x"})
    body = body[:len(body) - cut] + extra
    headers[HEADER_LENGTH] = str(int(headers[HEADER_LENGTH]) + length_delta)
    response = http.post("/v1/evaluate", content=body, headers=headers)
    assert response.status_code == status and response.headers["content-type"] == "application/problem+json"
    assert http.get("/healthz").status_code == 200


# ---- under a memory cap -------------------------------------------------------------------------

# Room beside what a warmed-up server maps: enough for a few 40 MB tensors and their results, far
# less than JSON would need for them (a 1e7-element JSON list parses into ~1.5 GB of Python floats).
HEADROOM_BYTES = 768 << 20
LARGEST = 10_000_000  # GRADSERVE_MAX_TENSOR_ELEMENTS' default


def address_space_in_use(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize"))


@pytest.fixture(scope="module")
def capped(tmp_path_factory):
    if shutil.which("prlimit") is None:
        pytest.skip("needs prlimit (util-linux)")
    probe = LiveServer({"GRADSERVE_DATA_DIR": str(tmp_path_factory.mktemp("probe"))})
    try:
        with probe.client() as client:  # warm: the worker threads exist, numpy has run
            client.post("/v1/grad", json={"inputs": {"x": {"data": [1.0] * 1000, "requires_grad": True}},
                                          "expr": "(x.sin() @ x).sum()"})
        cap = address_space_in_use(probe.process.pid) + HEADROOM_BYTES
    finally:
        probe.stop_clean()
    server = LiveServer({"GRADSERVE_DATA_DIR": str(tmp_path_factory.mktemp("capped")),
                         "GRADSERVE_QUEUE_TIMEOUT_S": "120"}, prefix=["prlimit", f"--as={cap}"],
                        start_timeout=120.0)  # the full suite's load once kept it from answering in 30 s
    yield server
    server.stop_clean()  # not one 500 logged


@pytest.fixture(scope="module")
def capped_http(capped):
    with httpx.Client(base_url=capped.url, timeout=120) as client:
        yield client


def test_the_largest_binary_tensor_round_trips_under_the_cap(capped_http):
    x = np.random.default_rng(0).standard_normal(LARGEST).astype(np.float32)
    body, headers = frame({"inputs": {"x": x}, "expr": "x"})
    response = capped_http.post("/v1/evaluate", content=body, headers={**headers, **ACCEPT_BINARY})
    assert response.status_code == 200, response.text[:500]
    np.testing.assert_array_equal(read_frame(response)["outputs"][0], x)


def test_its_gradient_round_trips_under_the_cap(capped_http):
    x = np.linspace(-4, 4, LARGEST, dtype=np.float32)
    body, headers = frame({"inputs": {"x": x}, "expr": "(x * x.sin()).sum()", "wrt": ["x"]})
    response = capped_http.post("/v1/grad", content=body, headers={**headers, **ACCEPT_BINARY})
    assert response.status_code in (200, 503), response.text[:500]
    if response.status_code == 200:
        x64 = x.astype(np.float64)
        np.testing.assert_allclose(read_frame(response)["grads"]["x"], np.sin(x64) + x64 * np.cos(x64),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("elements", "declared", "status", "problem"), [
    (LARGEST + 1, None, 413, "tensor-too-large"),  # past the elements limit: refused from the header
    (1 << 24, None, 413, "body-too-large"),  # 64 MiB of float32 and the header: past the body limit
    (1_000, 2**62, 400, "invalid-binary-frame"),  # a header that claims exabytes: nothing allocated
])
def test_oversized_binary_bodies_are_refused(capped_http, elements, declared, status, problem):
    x = np.zeros(elements, np.float32)
    body, headers = frame({"inputs": {"x": x}, "expr": "x"})
    if declared is not None:  # the same frame, its header claiming a huge tensor
        old = f'"shape":[{elements}],"dtype":"float32","parameters":{{"binary_data_size":{x.nbytes}}}'.encode()
        new = f'"shape":[{declared // 4}],"dtype":"float32","parameters":{{"binary_data_size":{declared}}}'.encode()
        header = body[:int(headers[HEADER_LENGTH])].replace(old, new)
        body, headers[HEADER_LENGTH] = header + body[int(headers[HEADER_LENGTH]):], str(len(header))
    response = capped_http.post("/v1/evaluate", content=body, headers=headers)
    assert response.status_code == status, response.text[:500]
    assert response.json()["type"].endswith("/" + problem)


def test_several_largest_binary_requests_at_once(capped_http):
    """Four 40 MB bodies with their 40 MB answers at once: each is answered or 503, never 500."""
    x = np.ones(LARGEST, np.float32)
    body, headers = frame({"inputs": {"x": x}, "expr": "x * 2"})

    def send(_):
        return capped_http.post("/v1/evaluate", content=body, headers={**headers, **ACCEPT_BINARY})

    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(send, range(4)))
    assert {r.status_code for r in responses} <= {200, 503}, [r.text[:300] for r in responses]
    for response in responses:
        if response.status_code == 200:
            assert response.headers["content-type"] == BINARY
            assert float(read_frame(response)["outputs"][0][-1]) == 2.0


def test_the_capped_server_is_healthy_and_correct_afterwards(capped_http):
    assert capped_http.get("/healthz").status_code == 200
    body, headers = frame({"inputs": {"x": np.array([3.0], np.float32)}, "expr": "(x * x).sum()", "wrt": ["x"]})
    grads = read_frame(capped_http.post("/v1/grad", content=body, headers={**headers, **ACCEPT_BINARY}))["grads"]
    assert grads["x"].tolist() == [6.0]
