"""The shared model store for several replicas: Redis, with Lua scripts for every mutation.

Layout (``prefix`` defaults to ``gradserve``)::

    <prefix>:model:<id>   hash: version, step, parameter_count, spec (JSON), state (bytes),
                          created_at, updated_at; EXPIREs after ttl_s idle when a TTL is set
    <prefix>:models       sorted set of ids scored by creation time (listing, the max_models count)
    <prefix>:functions    hash: function id -> the function's JSON (never expires; ids are content hashes)

Each mutation is one Lua script, which Redis runs atomically: create checks
the count and inserts; replace compares the version and writes (the
compare-and-set that keeps replicas from losing updates); delete removes both
entries. Ids whose hash expired are pruned from the sorted set before counting
and listing.

Durability is Redis's: run it with ``--appendonly yes --appendfsync always``
(as docker-compose.yml does) for "acknowledged means durable".
"""

from __future__ import annotations

import json
import time

import redis

from service.store.base import FunctionNotFound, ModelNotFound, ModelRecord, ModelStore, StoreFull, driver_errors

CREATE = """
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[2], 'version', ARGV[3], 'step', ARGV[4], 'parameter_count', ARGV[5], 'spec', ARGV[6],
           'created_at', ARGV[7], 'updated_at', ARGV[8], 'state', ARGV[9])
redis.call('ZADD', KEYS[1], ARGV[7], ARGV[2])
if tonumber(ARGV[10]) > 0 then redis.call('EXPIRE', KEYS[2], ARGV[10]) end
return 1
"""
REPLACE = """
local current = redis.call('HGET', KEYS[1], 'version')
if not current then return -1 end
if tonumber(current) ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'version', ARGV[2], 'step', ARGV[3], 'parameter_count', ARGV[4], 'spec', ARGV[5],
           'updated_at', ARGV[6], 'state', ARGV[7])
if tonumber(ARGV[8]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[8]) end
return 1
"""
DELETE = """
local current = redis.call('HGET', KEYS[1], 'version')
if not current then return -1 end
if ARGV[2] ~= '' and tonumber(current) ~= tonumber(ARGV[2]) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""
PUT_FUNCTION = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then return -1 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""
RECORD_FIELDS = ("version", "step", "parameter_count", "spec", "created_at", "updated_at")


class RedisStore(ModelStore):
    # Every error of the redis client (connection refused, timeouts, a server that went away).
    unavailable_errors = (redis.RedisError,)

    def unavailable_detail(self, error: Exception) -> str:
        return f"the model store is unreachable ({type(error).__name__}); retry shortly"

    @driver_errors
    def __init__(self, url: str, max_models: int, ttl_s: float = 0.0, prefix: str = "gradserve",
                 max_functions: int = 1000):
        super().__init__(max_models, ttl_s, max_functions)
        self.client = redis.Redis.from_url(url, health_check_interval=30)
        self.prefix = prefix
        self.index = f"{prefix}:models"
        self.functions = f"{prefix}:functions"
        self._put_function = self.client.register_script(PUT_FUNCTION)
        self._create = self.client.register_script(CREATE)
        self._replace = self.client.register_script(REPLACE)
        self._delete = self.client.register_script(DELETE)

    def _key(self, model_id: str) -> str:
        return f"{self.prefix}:model:{model_id}"

    def _ttl(self) -> int:
        return max(1, round(self.ttl_s)) if self.ttl_s > 0 else 0

    def _prune(self) -> None:
        """Drop ids whose hash expired (only needed with a TTL)."""
        if self.ttl_s <= 0:
            return
        ids = [i.decode() for i in self.client.zrange(self.index, 0, -1)]
        if not ids:
            return
        with self.client.pipeline(transaction=False) as pipe:
            for model_id in ids:
                pipe.exists(self._key(model_id))
            alive = pipe.execute()
        gone = [model_id for model_id, present in zip(ids, alive) if not present]
        if gone:
            self.client.zrem(self.index, *gone)

    @staticmethod
    def _record(model_id: str, values: list) -> ModelRecord:
        version, step, count, spec, created, updated = values
        return ModelRecord(model_id, int(version), int(step), int(count), json.loads(spec), float(created),
                           float(updated))

    @driver_errors
    def create(self, record: ModelRecord, state: bytes) -> None:
        self._prune()
        created = self._create(
            keys=[self.index, self._key(record.id)],
            args=[self.max_models, record.id, record.version, record.step, record.parameter_count,
                  json.dumps(record.spec), repr(record.created_at), repr(record.updated_at), state, self._ttl()],
        )
        if created == 0:
            raise StoreFull(self.max_models)

    @driver_errors
    def get(self, model_id: str) -> ModelRecord:
        values = self.client.hmget(self._key(model_id), RECORD_FIELDS)
        if values[0] is None:
            raise ModelNotFound(model_id)
        return self._record(model_id, values)

    @driver_errors
    def load(self, model_id: str) -> tuple[ModelRecord, bytes]:
        values = self.client.hmget(self._key(model_id), (*RECORD_FIELDS, "state"))  # one command: one version
        if values[0] is None:
            raise ModelNotFound(model_id)
        return self._record(model_id, values[:-1]), bytes(values[-1])

    @driver_errors
    def replace(self, model_id: str, expected_version: int, record: ModelRecord, state: bytes) -> bool:
        result = self._replace(
            keys=[self._key(model_id)],
            args=[expected_version, record.version, record.step, record.parameter_count, json.dumps(record.spec),
                  repr(record.updated_at or time.time()), state, self._ttl()],
        )
        if result == -1:
            raise ModelNotFound(model_id)
        return result == 1

    @driver_errors
    def delete(self, model_id: str, expected_version: int | None = None) -> bool:
        result = self._delete(keys=[self._key(model_id), self.index],
                              args=[model_id, "" if expected_version is None else expected_version])
        if result == -1:
            self.client.zrem(self.index, model_id)
            raise ModelNotFound(model_id)
        return result == 1

    @driver_errors
    def list(self, offset: int, limit: int) -> tuple[list[ModelRecord], int]:
        self._prune()
        total = self.client.zcard(self.index)
        ids = [i.decode() for i in self.client.zrange(self.index, offset, offset + limit - 1)]
        with self.client.pipeline(transaction=False) as pipe:
            for model_id in ids:
                pipe.hmget(self._key(model_id), RECORD_FIELDS)
            rows = pipe.execute()
        return [self._record(i, row) for i, row in zip(ids, rows) if row[0] is not None], total

    @driver_errors
    def put_function(self, function_id: str, body: bytes) -> bool:
        stored = self._put_function(keys=[self.functions], args=[function_id, body, self.max_functions])
        if stored == -1:
            raise StoreFull(self.max_functions, "functions")
        return stored == 1

    @driver_errors
    def get_function(self, function_id: str) -> bytes:
        body = self.client.hget(self.functions, function_id)
        if body is None:
            raise FunctionNotFound(function_id)
        return bytes(body)

    @driver_errors
    def delete_function(self, function_id: str) -> None:
        if self.client.hdel(self.functions, function_id) != 1:
            raise FunctionNotFound(function_id)

    def close(self) -> None:
        self.client.close()
