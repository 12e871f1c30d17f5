"""BLAS threads: ``engine.set_num_threads`` / ``get_num_threads``, and the one-thread default of ``import engine``.

Every count is read back through threadpoolctl's own ``threadpool_info()`` (what
the BLAS libraries report), not only through the engine's getter. What ``import
engine`` does runs in a fresh interpreter, with the thread variables removed from
its environment or set there; the control is the same interpreter importing numpy
alone, so the tests hold whatever the machine's core count.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import engine
from engine.thread_pools import EXPLICIT_VARIABLES

pytestmark = pytest.mark.host_only  # process-wide CPU state: the --device reruns add nothing


def blas_threads_reported() -> list[int]:
    counts = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    if not counts:
        pytest.skip("threadpoolctl finds no BLAS library in this numpy")
    return counts


@pytest.fixture
def restore_threads():
    before = engine.get_num_threads()
    yield
    engine.set_num_threads(before)


def test_set_num_threads_round_trip(restore_threads):
    for n in (3, 1, 2):
        engine.set_num_threads(n)
        assert engine.get_num_threads() == n
        assert blas_threads_reported() == [n] * len(blas_threads_reported())


def test_numpy_integers_are_accepted(restore_threads):
    engine.set_num_threads(np.int64(2))
    assert engine.get_num_threads() == 2


@pytest.mark.parametrize("bad", [0, -1])
def test_fewer_than_one_thread_is_refused(bad, restore_threads):
    engine.set_num_threads(2)
    with pytest.raises(RuntimeError, match="set_num_threads expects a positive integer"):
        engine.set_num_threads(bad)
    assert engine.get_num_threads() == 2  # unchanged


@pytest.mark.parametrize("bad", [1.5, "2", True, None])
def test_non_integers_are_refused(bad):
    with pytest.raises(RuntimeError, match=f"set_num_threads expects an int, but got {type(bad).__name__}"):
        engine.set_num_threads(bad)


@pytest.mark.torch
@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_argument_errors_match_pytorch(bad, torch):
    with pytest.raises(RuntimeError) as theirs:
        torch.set_num_threads(bad)
    with pytest.raises(RuntimeError) as ours:
        engine.set_num_threads(bad)
    assert str(ours.value) == str(theirs.value)


def test_any_thread_sets_the_process_wide_limit(restore_threads):
    # threadpoolctl >= 3.8 lets only one thread set OpenBLAS's shared pool and ignores the others:
    # the engine's setter must work from a worker thread all the same, as the service's does.
    engine.set_num_threads(1)

    def from_a_worker():
        engine.set_num_threads(3)

    worker = threading.Thread(target=from_a_worker)
    worker.start()
    worker.join()
    assert engine.get_num_threads() == 3
    assert set(blas_threads_reported()) == {3}


def test_threadpoolctl_still_works_from_other_threads_after_the_engine_set_it(restore_threads):
    engine.set_num_threads(1)
    seen = []

    def with_a_user_limit():
        with threadpool_limits(limits=2, user_api="blas"):
            seen.append(set(blas_threads_reported()))

    worker = threading.Thread(target=with_a_user_limit)
    worker.start()
    worker.join()
    assert seen == [{2}]
    assert set(blas_threads_reported()) == {1}  # the block restored the engine's limit


# ---- import engine, in a fresh interpreter ------------------------------------------------

REPORT = """
import json, sys
from threadpoolctl import threadpool_info
import numpy
if sys.argv[1] == "engine":
    import engine
    model = engine.nn.Linear(4, 2)  # an optimizer step: the engine's axpy loads scipy.linalg's BLAS
    optimizer = engine.optim.SGD(model.parameters(), lr=0.1)
    model(engine.ones(3, 4)).sum().backward()
    optimizer.step()
print(json.dumps({"blas": [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"],
                  "engine": engine.get_num_threads() if sys.argv[1] == "engine" else None}))
"""


def fresh_interpreter(what: str, **thread_variables: str) -> dict:
    """Run REPORT importing ``what`` ("numpy" or "engine") with no thread variable but ``thread_variables``."""
    env = {k: v for k, v in os.environ.items() if k not in EXPLICIT_VARIABLES} | thread_variables
    done = subprocess.run([sys.executable, "-c", REPORT, what], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_import_engine_with_nothing_set_gives_one_blas_thread():
    numpy_alone = fresh_interpreter("numpy")["blas"]
    if not numpy_alone:
        pytest.skip("threadpoolctl finds no BLAS library in this numpy")
    with_engine = fresh_interpreter("engine")
    assert with_engine["blas"] and set(with_engine["blas"]) == {1}
    assert with_engine["engine"] == 1


@pytest.mark.parametrize("variable", EXPLICIT_VARIABLES)
def test_an_explicit_thread_variable_is_respected(variable):
    # The library decides what "2" means (OpenBLAS caps it at the core count): the engine
    # must leave exactly that, not its own default.
    numpy_alone = fresh_interpreter("numpy", **{variable: "2"})["blas"]
    if not numpy_alone:
        pytest.skip("threadpoolctl finds no BLAS library in this numpy")
    with_engine = fresh_interpreter("engine", **{variable: "2"})
    assert with_engine["blas"] and set(with_engine["blas"]) == set(numpy_alone)  # scipy's BLAS reads it too
    assert with_engine["engine"] == max(with_engine["blas"])
