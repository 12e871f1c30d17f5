"""Device "cuda" over HTTP: a clear 400 without a GPU, requests run on the device with one,
the GPU memory limit from settings, and cupy's out-of-memory error as 413/503.

With ``tests/fake_cupy.py`` standing in for cupy (the ``fake_cuda`` fixture),
the whole path runs on a machine without a GPU: decoding inputs onto the
device, computing there, and encoding results back through the host.
"""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from engine import backend
from service import errors
from service.app import create_app
from service.config import Settings
from tests import fake_cupy
from tests.problems import assert_problem

SIN = {"inputs": {"a": {"data": [0.0, 1.0, 2.0], "requires_grad": True}}, "expr": "(2 * sin(a) + 1).sum()"}
SPEC = {"layers": [{"type": "linear", "in_features": 2, "out_features": 1}], "seed": 0, "device": "cuda"}


def make_client(tmp_path, **settings):
    return TestClient(create_app(Settings(data_dir=str(tmp_path), **settings)), raise_server_exceptions=False)


# ---- without cupy: 400 naming what is missing, never 500 ---------------------------------------


@pytest.mark.parametrize("path, body", [
    ("/v1/evaluate", {"inputs": {"a": 1.0}, "expr": "a", "device": "cuda"}),
    ("/v1/grad", {**SIN, "device": "cuda"}),
    ("/v1/jacobian", {"inputs": {"a": [1.0, 2.0]}, "expr": "sin(a)", "device": "cuda"}),
    ("/v1/models", SPEC),
], ids=["evaluate", "grad", "jacobian", "create-model"])
def test_cuda_without_cupy_is_a_400_naming_cupy(tmp_path, monkeypatch, path, body):
    monkeypatch.setattr(backend, "cupy", None)
    with make_client(tmp_path) as client:
        problem = assert_problem(client.post(path, json=body), 400)
    assert problem["type"] == "/problems/device-unavailable"
    assert problem["missing"] == "cupy" and "cupy is not installed" in problem["detail"]


def test_cupy_without_a_device_is_a_400_naming_the_gpu(tmp_path, fake_cuda, monkeypatch):
    monkeypatch.setattr(fake_cupy.runtime, "device_count", 0)
    with make_client(tmp_path) as client:
        problem = assert_problem(client.post("/v1/evaluate", json={"inputs": {"a": 1.0}, "expr": "a",
                                                                   "device": "cuda"}), 400)
        info = client.get("/v1/info").json()
    assert problem["missing"] == "a CUDA GPU" and "finds no CUDA device" in problem["detail"]
    assert info["devices"] == {"cpu": True, "cuda": False}
    assert info["cuda"]["device_count"] == 0 and "no CUDA device" in info["cuda"]["unavailable_reason"]


def test_an_unknown_device_is_a_422(tmp_path):
    with make_client(tmp_path) as client:
        assert_problem(client.post("/v1/evaluate", json={"inputs": {"a": 1.0}, "expr": "a", "device": "tpu"}), 422)


# ---- with a (fake) GPU: requests run there ------------------------------------------------------


def placements(monkeypatch) -> list[str]:
    """The devices arrays are sent to from now on (a spy on backend.to_device)."""
    seen = []
    real = backend.to_device

    def spy(array, dev):
        seen.append(str(dev))
        return real(array, dev)

    monkeypatch.setattr(backend, "to_device", spy)
    return seen


def test_grad_runs_on_the_device_and_matches_the_cpu(tmp_path, fake_cuda, monkeypatch):
    seen = placements(monkeypatch)
    with make_client(tmp_path) as client:
        on_gpu = client.post("/v1/grad", json={**SIN, "device": "cuda"}).json()
        on_cpu = client.post("/v1/grad", json=SIN).json()
        info = client.get("/v1/info").json()
    assert "cuda:0" in seen  # the input went to the device
    np.testing.assert_allclose(on_gpu["grads"]["a"]["data"], 2 * np.cos([0.0, 1.0, 2.0]), rtol=1e-6)
    assert on_gpu["grads"] == on_cpu["grads"] and on_gpu["outputs"] == on_cpu["outputs"]
    assert info["devices"]["cuda"] is True and info["cuda"]["device_count"] == 1


def test_tensors_the_function_creates_go_to_the_requests_device(tmp_path, fake_cuda):
    request = {"inputs": {"a": {"data": [1.0, 2.0], "requires_grad": True}}, "device": "cuda",
               "expr": "(ones(2) * a + zeros_like(a)).sum()"}
    with make_client(tmp_path) as client:
        response = client.post("/v1/grad", json=request)
        on_cpu = client.post("/v1/grad", json={**request, "device": "cpu"})
    assert response.status_code == 200, response.text
    assert response.json()["grads"]["a"]["data"] == [1.0, 1.0] == on_cpu.json()["grads"]["a"]["data"]


def test_a_model_lives_on_the_device(tmp_path, fake_cuda):
    with make_client(tmp_path) as client:
        created = client.post("/v1/models", json=SPEC)
        assert created.status_code == 201, created.text
        model_id = created.json()["id"]
        assert created.json()["spec"]["device"] == "cuda"
        loss = client.post(f"/v1/models/{model_id}/backward", json={"input": [[1.0, 2.0]], "target": [[0.5]]})
        assert loss.status_code == 200, loss.text
        params = client.get(f"/v1/models/{model_id}/parameters").json()
    assert params["grads"]["0.weight"] is not None


def test_the_memory_limit_is_applied_at_startup(tmp_path, fake_cuda):
    with make_client(tmp_path, gpu_memory_limit_bytes=1 << 20) as client:
        info = client.get("/v1/info").json()
    assert fake_cupy.memory_pool.get_limit() == 1 << 20
    assert info["cuda"]["memory_limit_bytes"] == 1 << 20 and info["limits"]["gpu_memory_limit_bytes"] == 1 << 20


def test_no_gpu_means_the_memory_limit_is_not_applied(tmp_path, monkeypatch):
    monkeypatch.setattr(backend, "cupy", None)
    with make_client(tmp_path, gpu_memory_limit_bytes=1 << 20) as client:
        assert client.get("/healthz").status_code == 200


# ---- cupy's OutOfMemoryError ---------------------------------------------------------------------


def test_out_of_memory_beyond_the_limit_is_413(fake_cuda):
    body = errors.problem_for(errors.EngineError(fake_cupy.OutOfMemoryError(4096, 0, 1024), "matmul"))
    assert body["status"] == 413 and body["type"] == "/problems/gpu-memory-limit"
    assert body["limit"] == 1024 and body["op"] == "matmul" and "4096 bytes" in body["detail"]


def test_out_of_memory_under_the_limit_is_503(fake_cuda):
    body = errors.problem_for(errors.EngineError(fake_cupy.OutOfMemoryError(512, 900, 1024), "add"))
    assert body["status"] == 503 and body["type"] == "/problems/gpu-memory-exhausted"
    unlimited = errors.problem_for(fake_cupy.OutOfMemoryError(512, 900))  # raised outside engine_errors()
    assert unlimited["status"] == 503


def test_out_of_memory_over_http_is_a_503_with_retry_after(tmp_path, fake_cuda, monkeypatch):
    def exhausted(array, dev):
        raise fake_cupy.OutOfMemoryError(1 << 30, 1 << 30, 1 << 31)

    monkeypatch.setattr(backend, "to_device", exhausted)
    with make_client(tmp_path) as client:
        response = client.post("/v1/grad", json={**SIN, "device": "cuda"})
    body = assert_problem(response, 503)
    assert body["type"] == "/problems/gpu-memory-exhausted" and response.headers["retry-after"]


# ---- several GPUs: "cuda:N" ----------------------------------------------------------------------


def test_requests_run_on_cuda_1(tmp_path, monkeypatch):
    fake_cupy.install(monkeypatch, devices=2)
    placed = placements(monkeypatch)
    request = {**SIN, "device": "cuda:1", "expr": "(2 * sin(a) + ones(3)).sum()"}
    with make_client(tmp_path) as client:
        on_gpu = client.post("/v1/grad", json=request)
        on_cpu = client.post("/v1/grad", json={**request, "device": "cpu"}).json()
    assert on_gpu.status_code == 200, on_gpu.text
    assert placed and set(placed) <= {"cuda:1", "cpu"} and "cuda:1" in placed  # inputs went to cuda:1, not 0
    np.testing.assert_allclose(on_gpu.json()["grads"]["a"]["data"], 2 * np.cos([0.0, 1.0, 2.0]), rtol=1e-6)
    assert on_gpu.json()["grads"] == on_cpu["grads"] and on_gpu.json()["outputs"] == on_cpu["outputs"]
    assert fake_cupy.runtime.getDevice() == 0  # the worker's current device was put back


@pytest.mark.parametrize("path, body", [
    ("/v1/evaluate", {"inputs": {"a": 1.0}, "expr": "a", "device": "cuda:2"}),
    ("/v1/grad", {**SIN, "device": "cuda:7"}),
    ("/v1/models", {**SPEC, "device": "cuda:2"}),
], ids=["evaluate", "grad", "create-model"])
def test_a_cuda_ordinal_past_the_visible_devices_is_a_400_naming_the_count(tmp_path, monkeypatch, path, body):
    fake_cupy.install(monkeypatch, devices=2)
    with make_client(tmp_path) as client:
        problem = assert_problem(client.post(path, json=body), 400)
    assert problem["type"] == "/problems/device-unavailable" and problem["device_count"] == 2
    assert "sees 2 CUDA device(s)" in problem["detail"] and body["device"] in problem["detail"]


@pytest.mark.parametrize("device", ["cuda:", "cuda:x", "cuda:-1", "gpu:0", "cuda:1:2", "cuda:99999"])
def test_malformed_devices_are_a_422(tmp_path, device):
    with make_client(tmp_path) as client:
        assert_problem(client.post("/v1/evaluate", json={"inputs": {"a": 1.0}, "expr": "a", "device": device}), 422)


def test_a_model_lives_on_cuda_1(tmp_path, monkeypatch):
    fake_cupy.install(monkeypatch, devices=2)
    placed = []
    real_forward = backend.to_device
    monkeypatch.setattr(backend, "to_device", lambda array, dev: placed.append(str(dev)) or real_forward(array, dev))
    with make_client(tmp_path) as client:
        created = client.post("/v1/models", json={**SPEC, "device": "cuda:1"})
        assert created.status_code == 201, created.text
        model_id = created.json()["id"]
        assert created.json()["spec"]["device"] == "cuda:1"
        trained = client.post(f"/v1/models/{model_id}/train",
                              json={"inputs": [[1.0, 2.0], [0.5, -1.0]], "targets": [[0.5], [0.0]], "steps": 3})
        assert trained.status_code == 200, trained.text
        params = client.get(f"/v1/models/{model_id}/parameters").json()
    assert params["grads"]["0.weight"] is not None
    assert "cuda:1" in placed and "cuda:0" not in placed


def test_info_describes_each_gpu(tmp_path, monkeypatch):
    fake_cupy.install(monkeypatch, devices=2)
    with make_client(tmp_path) as client:
        client.post("/v1/models", json={**SPEC, "device": "cuda:1"})
        cuda = client.get("/v1/info").json()["cuda"]
    assert cuda["device_count"] == 2 and [g["index"] for g in cuda["gpus"]] == [0, 1]
    props = fake_cupy.runtime.getDeviceProperties(1)
    gpu = cuda["gpus"][1]
    assert gpu["name"] == props["name"].decode() and gpu["total_memory"] == props["totalGlobalMem"]
    assert gpu["capability"] == [props["major"], props["minor"]]
    assert gpu["free_memory"] <= gpu["total_memory"]


def test_info_without_a_gpu_lists_none(tmp_path, monkeypatch):
    monkeypatch.setattr(backend, "cupy", None)
    with make_client(tmp_path) as client:
        cuda = client.get("/v1/info").json()["cuda"]
    assert cuda["gpus"] == [] and "cupy is not installed" in cuda["unavailable_reason"]
