"""``/v1/functions`` over a socket: a function registered on one replica is served by another (one redis-server)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tests.integration.conftest import LiveServer
from tests.redis_server import running_redis

pytestmark = pytest.mark.integration

PROGRAM = {"program": "y = x * 2\nwhile y.norm() < 1000:\n    y = y * 2\nreturn y.sum()"}


def test_register_on_one_replica_call_on_the_other():
    with running_redis() as url:
        replicas = [LiveServer({"GRADSERVE_STORE": url}), LiveServer({"GRADSERVE_STORE": url})]
        try:
            a, b = (replica.client() for replica in replicas)
            created = a.post("/v1/functions", json=PROGRAM)
            assert created.status_code == 201, created.text
            function_id = created.json()["id"]
            # Every replica computes the same id: registering on the other stores nothing new.
            again = b.post("/v1/functions", json=PROGRAM)
            assert again.status_code == 200 and again.json()["id"] == function_id
            assert b.get(f"/v1/functions/{function_id}").json()["inputs"] == ["x"]

            for client, x in ((b, [0.5, -1.0, 2.0]), (a, [0.001, 0.002]), (b, [3.0, 4.0])):
                response = client.post(f"/v1/functions/{function_id}/grad",
                                       json={"inputs": {"x": {"data": x, "requires_grad": True}}})
                assert response.status_code == 200, response.text
                # y = x * 2**k where k makes |y| >= 1000 first: d sum(y) / dx = 2**k.
                k = 1
                while np.linalg.norm(np.asarray(x, np.float32) * 2 ** k) < 1000:
                    k += 1
                np.testing.assert_allclose(response.json()["grads"]["x"]["data"], [2.0 ** k] * len(x))

            # Deleted on one replica: gone from the other (its cache of read functions lasts at most 1 s).
            assert a.delete(f"/v1/functions/{function_id}").status_code == 204
            time.sleep(1.1)
            assert b.get(f"/v1/functions/{function_id}").status_code == 404
            assert b.post(f"/v1/functions/{function_id}/grad", json={"inputs": {"x": [1.0]}}).status_code == 404
            a.close()
            b.close()
        finally:
            for replica in replicas:
                replica.stop_clean()


def test_functions_over_http_with_sqlite(http):
    created = http.post("/v1/functions", json={"expr": "(x * x).sum()"})
    assert created.status_code in (200, 201)
    location = created.headers["location"]
    batch = http.post(f"{location}/grad", json={"inputs": {"x": [[1.0, 2.0], [3.0, 4.0]]}, "wrt": ["x"],
                                                 "batch": ["x"]})
    assert batch.status_code == 200, batch.text
    assert batch.json()["grads"]["x"] == {"shape": [2, 2], "dtype": "float32", "data": [2.0, 4.0, 6.0, 8.0]}
    assert 'plan;desc=' in batch.headers["server-timing"]
