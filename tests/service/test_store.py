"""The model store backends (SQLite, and Redis when redis-server is installed), ETags and index parsing."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest

from service.errors import PreconditionFailedError, ServiceError
from service.model_service import check_if_match, parse_index
from service.store import ModelNotFound, ModelRecord, StoreFull, StoreUnavailable
from service.store.sqlite import SQLiteStore
from tests.loopback import free_port
from tests.redis_server import running_redis

SPEC = {"layers": [{"type": "linear", "in_features": 2, "out_features": 1}]}


@pytest.fixture(scope="module")
def redis_url():
    with running_redis() as url:
        yield url


@pytest.fixture(params=["sqlite", "redis"])
def make_store(request, tmp_path):
    """A factory: ``make_store(max_models=.., ttl_s=..)`` -> a fresh, empty store of the parametrised kind."""
    made = []

    def make(max_models=100, ttl_s=0.0):
        if request.param == "sqlite":
            store = SQLiteStore(tmp_path / f"models{len(made)}.sqlite3", max_models, ttl_s)
        else:
            from service.store.redis import RedisStore

            url = request.getfixturevalue("redis_url")
            store = RedisStore(url, max_models, ttl_s, prefix=f"test{time.monotonic_ns()}")
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


def record(model_id: str, version: int = 1, step: int = 0, at: float | None = None) -> ModelRecord:
    now = time.time() if at is None else at
    return ModelRecord(model_id, version, step, 3, SPEC, now, now)


def test_create_get_load_round_trip(make_store):
    store = make_store()
    store.create(record("a"), b"\x00state\xff")
    got, blob = store.load("a")
    assert (got.id, got.version, got.step, got.parameter_count, got.spec) == ("a", 1, 0, 3, SPEC)
    assert blob == b"\x00state\xff"
    assert store.get("a") == got
    with pytest.raises(ModelNotFound):
        store.get("missing")


def test_replace_is_compare_and_set(make_store):
    store = make_store()
    store.create(record("a"), b"v1")
    assert store.replace("a", 1, record("a", 2, step=1), b"v2")
    assert not store.replace("a", 1, record("a", 2, step=9), b"lost")  # stale expected version
    got, blob = store.load("a")
    assert (got.version, got.step, blob) == (2, 1, b"v2")
    with pytest.raises(ModelNotFound):
        store.replace("missing", 1, record("missing", 2), b"x")


def test_concurrent_compare_and_set_loses_no_update(make_store):
    store = make_store()
    store.create(record("a"), b"0")
    threads, per_thread = 6, 15

    def increment():
        for _ in range(per_thread):
            while True:
                current, blob = store.load("a")
                new = dataclasses.replace(current, version=current.version + 1)
                if store.replace("a", current.version, new, str(int(blob) + 1).encode()):
                    break

    workers = [threading.Thread(target=increment) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    got, blob = store.load("a")
    assert int(blob) == threads * per_thread
    assert got.version == 1 + threads * per_thread


def test_delete_honours_expected_version(make_store):
    store = make_store()
    store.create(record("a"), b"x")
    assert not store.delete("a", expected_version=7)
    assert store.delete("a", expected_version=1)
    with pytest.raises(ModelNotFound):
        store.get("a")
    with pytest.raises(ModelNotFound):
        store.delete("a")


def test_list_pages_in_creation_order_and_limit(make_store):
    store = make_store(max_models=5)
    for i in range(5):
        store.create(record(f"m{i}", at=1000.0 + i), b"x")
    with pytest.raises(StoreFull):
        store.create(record("m5", at=2000.0), b"x")
    page, total = store.list(offset=1, limit=2)
    assert total == 5 and [r.id for r in page] == ["m1", "m2"]
    page, _ = store.list(offset=4, limit=10)
    assert [r.id for r in page] == ["m4"]
    store.delete("m0")
    store.create(record("m5", at=2000.0), b"x")  # room again


def test_sqlite_ttl_expires_idle_models(tmp_path):
    store = SQLiteStore(tmp_path / "m.sqlite3", max_models=1, ttl_s=60.0)
    store.create(record("old", at=time.time() - 120), b"x")
    with pytest.raises(ModelNotFound):
        store.get("old")
    store.create(record("new"), b"x")  # the expired one no longer counts against max_models
    assert store.list(0, 10)[1] == 1


def test_redis_ttl_expires_idle_models(redis_url):
    from service.store.redis import RedisStore

    store = RedisStore(redis_url, max_models=1, ttl_s=1.0, prefix="ttl")
    store.create(record("a"), b"x")
    assert store.get("a").version == 1
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            store.get("a")
        except ModelNotFound:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the model did not expire")
    store.create(record("b"), b"x")  # the expired id was pruned from the count
    assert [r.id for r in store.list(0, 10)[0]] == ["b"]


def test_sqlite_survives_reopening(tmp_path):
    path = tmp_path / "m.sqlite3"
    store = SQLiteStore(path, max_models=10)
    store.create(record("a"), b"one")
    store.replace("a", 1, record("a", 2, step=5), b"two")
    store.close()
    again = SQLiteStore(path, max_models=10)
    got, blob = again.load("a")
    assert (got.version, got.step, blob) == (2, 5, b"two")
    mode = again._db().execute("PRAGMA journal_mode").fetchone()[0]
    sync = again._db().execute("PRAGMA synchronous").fetchone()[0]
    assert (mode, sync) == ("wal", 2)  # WAL, synchronous=FULL


def test_a_database_sqlite_cannot_open_is_store_unavailable_not_a_driver_error(tmp_path):
    with pytest.raises(StoreUnavailable, match="the model store is busy"):
        SQLiteStore(tmp_path, max_models=1)  # a directory: "unable to open database file"


def test_an_unreachable_redis_is_store_unavailable_not_a_driver_error():
    pytest.importorskip("redis")
    from service.store.redis import RedisStore

    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", max_models=1)  # nothing listens there
    with pytest.raises(StoreUnavailable, match="the model store is unreachable"):
        store.get("a")


# ---- the state codec ---------------------------------------------------------------


def test_if_match_and_index_parsing():
    check_if_match(None, 3)
    check_if_match('"3"', 3)
    check_if_match('"1", "3"', 3)
    check_if_match("*", 3)
    for stale in ('"2"', 'W/"3"', "3"):
        with pytest.raises(PreconditionFailedError):
            check_if_match(stale, 3)
    assert parse_index("0,0:10") == (0, slice(0, 10))
    assert parse_index("::2, -1") == (slice(None, None, 2), -1)
    with pytest.raises(ServiceError):
        parse_index("__import__('os')")


# ---- functions (/v1/functions) ----------------------------------------------------------


def test_functions_are_stored_once_read_back_and_deleted(make_store):
    from service.store import FunctionNotFound

    store = make_store()
    assert store.put_function("f1", b'{"form": "expr"}') is True
    assert store.put_function("f1", b'{"form": "other"}') is False  # an id is its content: kept as first stored
    assert store.get_function("f1") == b'{"form": "expr"}'
    store.delete_function("f1")
    with pytest.raises(FunctionNotFound):
        store.get_function("f1")
    with pytest.raises(FunctionNotFound):
        store.delete_function("f1")


def test_functions_are_bounded_by_max_functions(make_store):
    from service.store import StoreFull

    store = make_store()
    store.max_functions = 2
    store.put_function("a", b"{}")
    store.put_function("b", b"{}")
    assert store.put_function("a", b"{}") is False  # a repeat is not a new one
    with pytest.raises(StoreFull) as raised:
        store.put_function("c", b"{}")
    assert raised.value.what == "functions"
