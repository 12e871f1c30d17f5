"""BLAS threads as users run the service: ``make run`` with nothing set, against the pins.

``POST /v1/models/{id}/train`` of 100 TinyModel steps (batch 16, 1000 -> 100 ->
ReLU -> 10, SGD) on a uvicorn started:

- as ``make run`` starts it, with no thread variable in its environment (the
  service applies ``GRADSERVE_BLAS_THREADS``, default 1, at startup);
- with ``OPENBLAS_NUM_THREADS=1`` in its environment (the hand-set pin the default
  must match: target at most 1.2x of it);
- with ``GRADSERVE_BLAS_THREADS`` at numpy's own default pool (one thread per core),
  which is what every worker ran with before the engine limited it.

For each: one ``/train`` at a time, ``max_concurrency`` (4) of them at once, and a
matmul-heavy request (``/v1/evaluate`` of eight 1024² float32 products), the kind
that gains from more threads. The same 100 steps in-process and a 2048² product
in-process at both settings give the scale.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import tempfile
import time

import httpx
import numpy as np

try:  # what a performance-minded client would use; the stdlib works too, slower
    import pybase64 as base64
except ImportError:
    import base64

import engine
from bench.bench_models import served
from bench.timing import Table, blas_threads, fmt_time, numpy_default_threads, per_call_seconds, ratio
from engine import thread_pools
from frontends.model_spec import TINY_MODEL_SPEC, TrainableModel

STEPS = 100
ROUNDS = 5
CONCURRENT_ROUNDS = 2
# numpy's default pool can take seconds for the 100 steps on a busy machine: a deadline
# out of the way, the same for every server.
DEADLINE_S = "120"
CONCURRENT = 4  # GRADSERVE_MAX_CONCURRENCY's default
MATMUL_SIZE, MATMUL_CHAIN = 1024, 8


def _data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((16, 1000)).astype(np.float32), rng.standard_normal((16, 10)).astype(np.float32)


def _train_body() -> dict:
    x, y = _data()
    return {"inputs": x.tolist(), "targets": y.tolist(), "steps": STEPS}


def _train_once(client: httpx.Client, model_id: str, body: dict) -> float:
    start = time.perf_counter()
    response = client.post(f"/v1/models/{model_id}/train", json=body)
    elapsed = time.perf_counter() - start
    assert response.status_code == 200, response.text
    return elapsed


def _new_model(client: httpx.Client) -> str:
    response = client.post("/v1/models", json=TINY_MODEL_SPEC)
    assert response.status_code == 201, response.text
    return response.json()["id"]


class ServedSetup:
    """One server of the comparison and a client session on it: a model to train, a matmul body."""

    def __init__(self, url: str):
        self.url = url
        self.client = httpx.Client(base_url=url, timeout=300)
        self.clients = [httpx.Client(base_url=url, timeout=300) for _ in range(CONCURRENT)]
        self.train_body = _train_body()
        self.model = _new_model(self.client)
        self.models = [_new_model(client) for client in self.clients]
        self.pool = concurrent.futures.ThreadPoolExecutor(CONCURRENT)
        x = np.random.default_rng(0).standard_normal((MATMUL_SIZE, MATMUL_SIZE)) / np.sqrt(MATMUL_SIZE)
        self.matmul_body = {
            "inputs": {"x": {"b64": base64.b64encode(x.astype("<f4").tobytes()).decode(), "shape": list(x.shape),
                             "dtype": "float32"}},
            "expr": "(" + " @ ".join(["x"] * (MATMUL_CHAIN + 1)) + ").sum()"}

    def threads(self) -> int:
        return self.client.get("/v1/info").json()["blas"]["threads"]

    def train(self) -> float:
        """One ``/train`` of STEPS steps."""
        return _train_once(self.client, self.model, self.train_body)

    def train_concurrently(self) -> float:
        """CONCURRENT ``/train`` calls sent at once, one model each: the wall time of all."""
        start = time.perf_counter()
        list(self.pool.map(lambda pair: _train_once(*pair, self.train_body), zip(self.clients, self.models)))
        return time.perf_counter() - start

    def matmul_request(self) -> float:
        """``/v1/evaluate`` of a chain of MATMUL_CHAIN 1024² float32 products."""
        start = time.perf_counter()
        response = self.client.post("/v1/evaluate", json=self.matmul_body)
        elapsed = time.perf_counter() - start
        assert response.status_code == 200, response.text
        return elapsed

    def close(self) -> None:
        self.pool.shutdown()
        for client in (self.client, *self.clients):
            client.close()


def _best_interleaved(setups: list[ServedSetup], measure, rounds: int) -> list[float]:
    """Best of ``rounds`` per server, the servers taking turns (after one warm-up each), so that
    a shared machine's drifting load falls on all of them alike."""
    for setup in setups:
        measure(setup)
    best = [float("inf")] * len(setups)
    for _ in range(rounds):
        for i, setup in enumerate(setups):
            best[i] = min(best[i], measure(setup))
    return best


def in_process_train_seconds() -> float:
    x, y = _data()
    model = TrainableModel(TINY_MODEL_SPEC)
    return per_call_seconds(lambda: model.train(x, y, STEPS), repeat=ROUNDS)


def in_process_matmul_seconds(thread_counts: list[int]) -> list[float]:
    """One 2048² float32 product per BLAS thread count; best of ROUNDS, the counts taking turns."""
    rng = np.random.default_rng(0)
    a, b = (engine.tensor(rng.standard_normal((2048, 2048)).astype(np.float32)) for _ in range(2))
    best = [float("inf")] * len(thread_counts)
    for _ in range(ROUNDS):
        for i, threads in enumerate(thread_counts):
            with blas_threads(threads):
                best[i] = min(best[i], per_call_seconds(lambda: a @ b, number=1, repeat=3))
    return best


def run() -> list[Table]:
    numpy_default = numpy_default_threads()
    clean = thread_pools.EXPLICIT_VARIABLES
    configurations = [
        ("`make run`, nothing set (GRADSERVE_BLAS_THREADS default)", {}, clean),
        ("`OPENBLAS_NUM_THREADS=1` in the environment", {"OPENBLAS_NUM_THREADS": "1"}, clean),
        (f"`GRADSERVE_BLAS_THREADS={numpy_default}` (numpy's default pool)",
         {"GRADSERVE_BLAS_THREADS": str(numpy_default)}, clean),
    ]
    with tempfile.TemporaryDirectory() as directory, contextlib.ExitStack() as stack:
        setups = []
        for _, env, without in configurations:
            url = stack.enter_context(served({"GRADSERVE_DATA_DIR": directory, "GRADSERVE_DEADLINE_S": DEADLINE_S,
                                              **env}, without=without))
            setups.append(ServedSetup(url))
            stack.callback(setups[-1].close)
        threads = [setup.threads() for setup in setups]
        alone = _best_interleaved(setups, ServedSetup.train, ROUNDS)
        together = _best_interleaved(setups, ServedSetup.train_concurrently, CONCURRENT_ROUNDS)
        matmul = _best_interleaved(setups, ServedSetup.matmul_request, ROUNDS)
    rows = list(zip((label for label, _, _ in configurations), threads, alone, together, matmul))
    pinned = rows[1][2]
    table = Table(f"BLAS threads in the service: `POST /v1/models/{{id}}/train`, {STEPS} TinyModel steps "
                  f"(target: nothing set <= 1.2x OPENBLAS_NUM_THREADS=1)",
                  ["server", "BLAS threads (/v1/info)", f"/train {STEPS} steps", "vs OPENBLAS_NUM_THREADS=1",
                   f"{CONCURRENT} /train at once (wall)", f"/v1/evaluate, {MATMUL_CHAIN} {MATMUL_SIZE}² products"])
    for label, blas, one_train, trains_at_once, matmul_chain in rows:
        table.add(label, blas, fmt_time(one_train), ratio(one_train, pinned), fmt_time(trains_at_once),
                  fmt_time(matmul_chain))
    table.add(f"in-process `TrainableModel.train` ({STEPS} steps, `import engine`)", engine.get_num_threads(),
              fmt_time(in_process_train_seconds()), "", "", "")

    one, many = in_process_matmul_seconds([1, numpy_default])
    trade_off = Table("The trade-off: one 2048² float32 matrix product in-process",
                      ["BLAS threads", "time", "vs 1 thread"])
    trade_off.add(1, fmt_time(one), "1.00x")
    trade_off.add(f"{numpy_default} (numpy's default)", fmt_time(many), ratio(many, one))
    return [table, trade_off]
