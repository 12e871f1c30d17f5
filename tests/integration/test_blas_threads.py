"""``GRADSERVE_BLAS_THREADS``: a real uvicorn applies it at startup and ``GET /v1/info`` reports it.

The threads each BLAS library runs with come from threadpoolctl inside the server
process, so they say what the server's BLAS does, not what its settings say.
"""

from __future__ import annotations

import numpy as np
import pytest

from frontends.model_spec import TINY_MODEL_SPEC
from tests.integration.conftest import LiveServer


def blas_of(client) -> dict:
    blas = client.get("/v1/info").json()["blas"]
    if not blas["libraries"]:
        pytest.skip("threadpoolctl finds no BLAS library in the server's numpy")
    return blas


def train_a_few_steps(client) -> None:
    # The steps run in the compute worker threads, and the first one loads the optimizers' BLAS.
    model_id = client.post("/v1/models", json=TINY_MODEL_SPEC).json()["id"]
    rng = np.random.default_rng(0)
    body = {"inputs": rng.standard_normal((4, 1000)).tolist(), "targets": rng.standard_normal((4, 10)).tolist(),
            "steps": 3}
    response = client.post(f"/v1/models/{model_id}/train", json=body)
    assert response.status_code == 200, response.text


def test_the_default_is_one_blas_thread(http):
    blas = blas_of(http)
    assert blas["threads_setting"] == 1 and blas["threads"] == 1
    assert {lib["threads"] for lib in blas["libraries"]} == {1}
    assert all(lib["library"] and lib["version"] for lib in blas["libraries"])


@pytest.fixture(scope="module")
def three_threads(tmp_path_factory):
    # OPENBLAS_NUM_THREADS in the server's environment too: the service's own setting wins.
    live = LiveServer({"GRADSERVE_BLAS_THREADS": "3", "OPENBLAS_NUM_THREADS": "2",
                       "GRADSERVE_DATA_DIR": str(tmp_path_factory.mktemp("blas-data"))})
    yield live
    live.stop_clean()


def test_the_setting_is_applied_at_startup_and_reported(three_threads):
    with three_threads.client() as client:
        blas = blas_of(client)
        assert blas["threads_setting"] == 3 and blas["threads"] == 3
        assert {lib["threads"] for lib in blas["libraries"]} == {3}
        assert client.get("/v1/info").json()["limits"]["blas_threads"] == 3
        train_a_few_steps(client)
        assert {lib["threads"] for lib in blas_of(client)["libraries"]} == {3}
