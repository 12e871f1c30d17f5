"""The embedded model store: one SQLite file, WAL, one transaction per mutation.

Durability: ``journal_mode=WAL`` with ``synchronous=FULL``, so every commit
fsyncs the write-ahead log before ``COMMIT`` returns, and the route answers
only after that. An acknowledged mutation therefore survives a process crash
(SIGKILL) and a power cut. (``synchronous=NORMAL`` would survive SIGKILL too,
since the WAL pages are in the OS cache, but could lose the last commits on
power loss; FULL costs one fsync per mutation: see bench/bench_models.py.)

Each thread gets its own connection (sqlite3 connections must not be shared
between threads mid-transaction); writers take the database lock with
``BEGIN IMMEDIATE``, so "count, then insert" and "compare version, then
update" are atomic across threads and processes alike.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

from service.store.base import FunctionNotFound, ModelNotFound, ModelRecord, ModelStore, StoreFull, driver_errors

SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    id TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    step INTEGER NOT NULL,
    parameter_count INTEGER NOT NULL,
    spec TEXT NOT NULL,
    state BLOB NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS models_by_creation ON models (created_at, id);
CREATE TABLE IF NOT EXISTS functions (
    id TEXT PRIMARY KEY,
    body BLOB NOT NULL,
    created_at REAL NOT NULL
);
"""
RECORD_COLUMNS = "id, version, step, parameter_count, spec, created_at, updated_at"


def _record(row) -> ModelRecord:
    model_id, version, step, count, spec, created, updated = row
    return ModelRecord(model_id, version, step, count, json.loads(spec), created, updated)


class SQLiteStore(ModelStore):
    # A locked or busy database file: another process holds it past the busy timeout.
    unavailable_errors = (sqlite3.OperationalError,)

    def unavailable_detail(self, error: Exception) -> str:
        return f"the model store is busy ({error}); retry shortly"

    @driver_errors
    def __init__(self, path: str | Path, max_models: int, ttl_s: float = 0.0, max_functions: int = 1000):
        super().__init__(max_models, ttl_s, max_functions)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        with self._transaction() as db:
            for statement in filter(str.strip, SCHEMA.split(";")):
                db.execute(statement)

    # ---- connections and transactions -------------------------------------------

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            # isolation_level=None: no implicit transactions; we BEGIN explicitly.
            db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=30000")
            self._local.db = db
            with self._connections_lock:
                self._connections.append(db)
        return db

    def _transaction(self):
        return _Transaction(self._db())

    def _expire(self, db: sqlite3.Connection) -> None:
        if self.ttl_s > 0:
            db.execute("DELETE FROM models WHERE updated_at < ?", (time.time() - self.ttl_s,))

    def _expired(self, updated_at: float) -> bool:
        return self.ttl_s > 0 and updated_at < time.time() - self.ttl_s

    # ---- the interface ------------------------------------------------------------

    @driver_errors
    def create(self, record: ModelRecord, state: bytes) -> None:
        with self._transaction() as db:
            self._expire(db)
            (count,) = db.execute("SELECT count(*) FROM models").fetchone()
            if count >= self.max_models:
                raise StoreFull(self.max_models)
            db.execute(
                f"INSERT INTO models ({RECORD_COLUMNS}, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (record.id, record.version, record.step, record.parameter_count, json.dumps(record.spec),
                 record.created_at, record.updated_at, state),
            )

    @driver_errors
    def get(self, model_id: str) -> ModelRecord:
        row = self._db().execute(f"SELECT {RECORD_COLUMNS} FROM models WHERE id = ?", (model_id,)).fetchone()
        if row is None or self._expired(row[6]):
            raise ModelNotFound(model_id)
        return _record(row)

    @driver_errors
    def load(self, model_id: str) -> tuple[ModelRecord, bytes]:
        row = self._db().execute(f"SELECT {RECORD_COLUMNS}, state FROM models WHERE id = ?", (model_id,)).fetchone()
        if row is None or self._expired(row[6]):
            raise ModelNotFound(model_id)
        return _record(row[:7]), bytes(row[7])

    @driver_errors
    def replace(self, model_id: str, expected_version: int, record: ModelRecord, state: bytes) -> bool:
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE models SET version = ?, step = ?, parameter_count = ?, spec = ?, state = ?, updated_at = ? "
                "WHERE id = ? AND version = ?",
                (record.version, record.step, record.parameter_count, json.dumps(record.spec), state,
                 record.updated_at, model_id, expected_version),
            )
            if cursor.rowcount == 1:
                return True
            if db.execute("SELECT 1 FROM models WHERE id = ?", (model_id,)).fetchone() is None:
                raise ModelNotFound(model_id)
            return False

    @driver_errors
    def delete(self, model_id: str, expected_version: int | None = None) -> bool:
        with self._transaction() as db:
            row = db.execute("SELECT version, updated_at FROM models WHERE id = ?", (model_id,)).fetchone()
            if row is None or self._expired(row[1]):
                raise ModelNotFound(model_id)
            if expected_version is not None and row[0] != expected_version:
                return False
            db.execute("DELETE FROM models WHERE id = ?", (model_id,))
            return True

    @driver_errors
    def list(self, offset: int, limit: int) -> tuple[list[ModelRecord], int]:
        with self._transaction() as db:
            self._expire(db)
            (total,) = db.execute("SELECT count(*) FROM models").fetchone()
            rows = db.execute(f"SELECT {RECORD_COLUMNS} FROM models ORDER BY created_at, id LIMIT ? OFFSET ?",
                              (limit, offset)).fetchall()
        return [_record(row) for row in rows], total

    @driver_errors
    def put_function(self, function_id: str, body: bytes) -> bool:
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM functions WHERE id = ?", (function_id,)).fetchone() is not None:
                return False
            (count,) = db.execute("SELECT count(*) FROM functions").fetchone()
            if count >= self.max_functions:
                raise StoreFull(self.max_functions, "functions")
            db.execute("INSERT INTO functions (id, body, created_at) VALUES (?, ?, ?)",
                       (function_id, body, time.time()))
            return True

    @driver_errors
    def get_function(self, function_id: str) -> bytes:
        row = self._db().execute("SELECT body FROM functions WHERE id = ?", (function_id,)).fetchone()
        if row is None:
            raise FunctionNotFound(function_id)
        return bytes(row[0])

    @driver_errors
    def delete_function(self, function_id: str) -> None:
        with self._transaction() as db:
            if db.execute("DELETE FROM functions WHERE id = ?", (function_id,)).rowcount != 1:
                raise FunctionNotFound(function_id)

    def close(self) -> None:
        with self._connections_lock:
            for db in self._connections:
                db.close()
            self._connections.clear()
        self._local = threading.local()


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any exception)."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, kind, error, traceback) -> None:
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")
