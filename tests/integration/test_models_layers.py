"""A tiny CNN trained over HTTP against a real uvicorn: conv2d, batch_norm, max_pool2d and linear
layers learn to tell two image classes apart, matching the in-process model step by step."""

from __future__ import annotations

import numpy as np
import pytest

from frontends.model_spec import TrainableModel
from tests.floats import assert_close_up_to_summation_order
from tests.integration.conftest import LiveServer, assert_no_server_errors

pytestmark = pytest.mark.integration

TINY_CNN = {
    "layers": [{"type": "conv2d", "in_channels": 1, "out_channels": 4, "kernel_size": 3, "padding": "same"},
               {"type": "batch_norm", "num_features": 4}, {"type": "relu"},
               {"type": "max_pool2d", "kernel_size": 2}, {"type": "flatten"},
               {"type": "linear", "in_features": 4 * 4 * 4, "out_features": 2}],
    "loss": {"type": "cross_entropy"}, "optimizer": {"type": "adam", "lr": 0.05}, "seed": 11,
}


def two_classes(rows: int):
    """Class 0: a bright vertical bar; class 1: a bright horizontal bar; plus noise."""
    rng = np.random.default_rng(4)
    x = rng.normal(0.0, 0.3, (rows, 1, 8, 8)).astype(np.float32)
    y = np.arange(rows) % 2
    x[y == 0, 0, :, 3] += 2.0
    x[y == 1, 0, 3, :] += 2.0
    return x, y


def test_tiny_cnn_learns_over_http_as_in_process(tmp_path):
    server = LiveServer({"GRADSERVE_DATA_DIR": str(tmp_path)})
    try:
        with server.client() as client:
            created = client.post("/v1/models", json=TINY_CNN)
            assert created.status_code == 201, created.text
            model = created.json()["id"]
            x, y = two_classes(16)
            trained = client.post(f"/v1/models/{model}/train",
                                  json={"inputs": x.tolist(), "targets": y.tolist(), "steps": 12, "batch_size": 8})
            assert trained.status_code == 200, trained.text
            losses = np.array(trained.json()["losses"])
            local = np.array(TrainableModel(TINY_CNN).train(x, y, steps=12, batch_size=8))
            # The first loss is one forward pass; later ones carry each step's rounding through Adam's
            # updates, so they get a tolerance for that propagation.
            assert_close_up_to_summation_order(losses[:1], local[:1])
            np.testing.assert_allclose(losses, local, rtol=1e-4)
            assert losses[-1] < 0.5 * losses[0]
            test_x, test_y = two_classes(8)
            answer = client.post(f"/v1/models/{model}/forward", json={"input": test_x.tolist()})
            assert answer.status_code == 200, answer.text
            logits = np.array(answer.json()["output"]["data"]).reshape(8, 2)
            assert (logits.argmax(axis=1) == test_y).all()
            wrong = client.post(f"/v1/models/{model}/forward", json={"input": np.zeros((1, 2, 8, 8)).tolist()})
            assert wrong.status_code == 400 and "layers[0] (conv2d)" in wrong.json()["detail"]
    finally:
        log = server.stop()
    assert_no_server_errors(log)
