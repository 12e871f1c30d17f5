"""The cost of durability: one TinyModel ``step`` over HTTP (SQLite, Redis) against the step in-process.

TinyModel is the tutorial's (1000 -> 100 -> ReLU -> 10, SGD lr 0.001, about
101k float32 parameters); one backward first, so the step has grads to apply.
Rows:

- ``model.step()`` in-process: the optimizer update alone;
- the same plus packing the state and one SQLite compare-and-set (WAL,
  synchronous=FULL: one fsync), without HTTP: what the store adds;
- ``POST /v1/models/{id}/step`` on a uvicorn with the SQLite store, and with
  the Redis store (a local redis-server with ``appendfsync always``, as
  docker-compose.yml runs it); one client, sequential, keep-alive.

Every durable step writes the whole state (parameters, grads, optimizer
state: about 0.8 MB for TinyModel), so the ratio is mostly bytes to disk.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from bench.timing import Table, fmt_time, per_call_seconds, ratio
from frontends.model_spec import TINY_MODEL_SPEC

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 1.5


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((16, 1000)).astype(np.float32), rng.standard_normal((16, 10)).astype(np.float32)


def _wait_for(check, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not come up")


@contextlib.contextmanager
def served(env: dict[str, str], without: tuple[str, ...] = ()):
    """The service under uvicorn (one worker, loopback, access log off) with ``GRADSERVE_*`` from ``env``;
    the variables named in ``without`` are left out of its environment."""
    port = _free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("GRADSERVE_") and k not in without} | env
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "service.app:create_app", "--factory", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning", "--no-access-log"],
        cwd=ROOT, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(lambda: httpx.get(url + "/healthz", timeout=1).status_code == 200, "uvicorn")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextlib.contextmanager
def redis_server(directory: str):
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    import redis

    port = _free_port()
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "yes", "--appendfsync", "always", "--dir", directory],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        _wait_for(lambda: redis.Redis.from_url(url).ping(), "redis-server")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def http_step_seconds(url: str) -> float:
    x, y = _data()
    with httpx.Client(base_url=url, timeout=60) as client:
        model_id = client.post("/v1/models", json=TINY_MODEL_SPEC).json()["id"]
        response = client.post(f"/v1/models/{model_id}/backward", json={"input": x.tolist(), "target": y.tolist()})
        assert response.status_code == 200, response.text

        def step():
            response = client.post(f"/v1/models/{model_id}/step")
            assert response.status_code == 200

        return per_call_seconds(step, repeat=5, budget=BUDGET_S)


def in_process_seconds(directory: str) -> tuple[float, float, int]:
    """(step alone, step + pack + SQLite compare-and-set, packed bytes)."""
    from frontends.model_spec import ModelSpec, TrainableModel
    from service.state_codec import pack_state
    from service.store import ModelRecord
    from service.store.sqlite import SQLiteStore

    x, y = _data()
    model = TrainableModel(TINY_MODEL_SPEC)
    model.backward(x, y)
    alone = per_call_seconds(model.step, repeat=5, budget=BUDGET_S)

    store = SQLiteStore(Path(directory) / "bench.sqlite3", max_models=10)
    spec = ModelSpec.parse(TINY_MODEL_SPEC)
    record = ModelRecord("bench", 1, 0, spec.parameter_count(), spec.as_dict(), time.time(), time.time())
    blob = pack_state(model.state())
    store.create(record, blob)

    def durable_step():
        nonlocal record
        model.step()
        new = dataclasses.replace(record, version=record.version + 1, step=model.steps, updated_at=time.time())
        assert store.replace("bench", record.version, new, pack_state(model.state()))
        record = new

    durable = per_call_seconds(durable_step, repeat=5, budget=BUDGET_S)
    store.close()
    return alone, durable, len(blob)


def run() -> list[Table]:
    with tempfile.TemporaryDirectory() as directory:
        alone, durable, size = in_process_seconds(directory)
        with served({"GRADSERVE_DATA_DIR": directory}) as url:
            sqlite_http = http_step_seconds(url)
        with redis_server(directory) as redis_url:
            redis_http = None
            if redis_url is not None:
                with served({"GRADSERVE_STORE": redis_url}) as url:
                    redis_http = http_step_seconds(url)

    table = Table(f"TinyModel step: in-process vs durable over HTTP (state {size / 1e6:.2f} MB per write)",
                  ["path", "per step", "vs in-process step"])
    table.add("`model.step()` in-process", fmt_time(alone), "1.00x")
    table.add("step + pack state + SQLite write (FULL fsync), no HTTP", fmt_time(durable), ratio(durable, alone))
    table.add("`POST /v1/models/{id}/step`, SQLite store", fmt_time(sqlite_http), ratio(sqlite_http, alone))
    table.add("`POST /v1/models/{id}/step`, Redis store (appendfsync always)",
              fmt_time(redis_http) if redis_http else "n/a (no redis-server)", ratio(redis_http, alone))
    return [table]
