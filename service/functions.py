"""The engine-facing side of ``/v1/functions``: client functions kept in the store by content hash.

A function is registered in canonical form (``service.plans.function_source``): its id
is the sha256 of that form, so registering it twice, on any replica, gives the same id
and stores nothing new. Registration validates it as a compute request would (the same
errors, the same 4xx), with the free names it reads as its inputs; the store keeps
``{"form", "inputs", <form>: <function>}`` as JSON.

A call (``POST /v1/functions/{id}/grad`` ...) needs the function, not the store: a
registry keeps the functions it has read for ``CACHE_SECONDS`` (their content cannot
change; only a DELETE on another replica can make one stale, and that replica's DELETE
is seen here within ``CACHE_SECONDS``), so a hot function costs no store read. That
cache is bounded in functions (``CACHE_SIZE``) and in their canonical texts' bytes
(``CACHE_BYTES``), and entries older than ``CACHE_SECONDS`` (which ``cached`` would not
answer from) are dropped as new ones come: an entry holds its function as Python
objects, ~10x its text, and 1024 graphs with 1e6-number constants were ~45 GB. The store's methods are synchronous;
the routes call them in a worker thread.
"""

from __future__ import annotations

import ast
import collections
import threading
import time

import orjson

from frontends.budget import Budget
from service.model_service import ModelService
from service.plans import FunctionSource, build_function, function_source

CACHE_SECONDS = 1.0
CACHE_SIZE = 1024
CACHE_BYTES = 8 * 1024 * 1024
MAX_INPUTS = 64


def free_names(function: FunctionSource) -> list[str]:
    """The names a function reads but never defines (its inputs), in order of first use.

    A program's or expression's builtins, constants and assigned names are not inputs; a
    graph's inputs are the operands no earlier node produces. A name that could not be an
    input (``_private``) is left for validation to report as undefined.
    """
    if function.form == "graph":
        defined, names = set(), []
        for node in function.graph["nodes"]:
            for operand in node["inputs"]:
                if isinstance(operand, str) and operand not in defined and operand not in names:
                    names.append(operand)
            outputs = node["output"] if isinstance(node["output"], list) else [node["output"]]
            defined.update(outputs)
        return names[:MAX_INPUTS]
    from frontends.program import CONSTANTS, FORBIDDEN_BUILTINS, FUNCTIONS, GRAD_MODES

    try:
        tree = ast.parse(function.text, mode="eval" if function.form == "expr" else "exec")
    except SyntaxError:
        return []  # validation reports it, with its line
    known = set(CONSTANTS) | set(FUNCTIONS) | set(GRAD_MODES) | set(FORBIDDEN_BUILTINS)
    nodes = sorted((node for node in ast.walk(tree) if isinstance(node, ast.Name)),
                   key=lambda node: (node.lineno, node.col_offset))
    assigned = {node.id for node in nodes if not isinstance(node.ctx, ast.Load)}
    assigned |= {node.arg for node in ast.walk(tree) if isinstance(node, ast.arg)}
    names = []
    for node in nodes:
        name = node.id
        if (isinstance(node.ctx, ast.Load) and name not in known and name not in assigned and name not in names
                and not name.startswith("_")):
            names.append(name)
    return names[:MAX_INPUTS]


def describe(function: FunctionSource, inputs: list[str]) -> dict:
    """The JSON ``GET /v1/functions/{id}`` (and the POST) answers with."""
    return {"id": function.id, "location": f"/v1/functions/{function.id}", "form": function.form,
            "inputs": inputs, **function.as_body()}


class FunctionRegistry:
    """Registered functions: stored through the model service's store, read through a short cache."""

    def __init__(self, models: ModelService):
        self.models = models
        self._cache: collections.OrderedDict[str, tuple[float, FunctionSource, list[str]]] = collections.OrderedDict()
        self._cache_bytes = 0  # the canonical texts' lengths of the functions in _cache
        self._lock = threading.Lock()

    @property
    def cache_bytes(self) -> int:
        """The canonical texts' bytes of the functions the cache holds (at most ``CACHE_BYTES``)."""
        return self._cache_bytes

    def register(self, function: FunctionSource, budget: Budget) -> tuple[dict, bool]:
        """Validate and store ``function``; its description and whether it was new. In a worker thread."""
        inputs = free_names(function)
        build_function(function, tuple(inputs), budget)  # raises what an inline request would
        body = orjson.dumps({"form": function.form, "inputs": inputs, **function.as_body()})
        created = self.models.store.put_function(function.id, body)
        self._remember(function, inputs)
        return describe(function, inputs), created

    def cached(self, function_id: str) -> tuple[FunctionSource, list[str]] | None:
        """The function if read within ``CACHE_SECONDS`` (no store access: safe on the event loop)."""
        with self._lock:
            entry = self._cache.get(function_id)
        if entry is None or time.monotonic() - entry[0] > CACHE_SECONDS:
            return None
        return entry[1], entry[2]

    def load(self, function_id: str) -> tuple[FunctionSource, list[str]]:
        """The stored function and its inputs; ``FunctionNotFound`` when absent. In a worker thread."""
        stored = orjson.loads(self.models.store.get_function(function_id))
        function = function_source(stored["form"], stored[stored["form"]])
        self._remember(function, stored["inputs"])
        return function, stored["inputs"]

    def delete(self, function_id: str) -> None:
        """Remove a stored function (``FunctionNotFound`` when absent). In a worker thread."""
        with self._lock:
            self._forget(function_id)
        self.models.store.delete_function(function_id)

    def _remember(self, function: FunctionSource, inputs: list[str]) -> None:
        if len(function.text) > CACHE_BYTES:
            return  # read from the store each time rather than crowd out every other function
        with self._lock:
            self._forget(function.id)
            self._cache[function.id] = (time.monotonic(), function, inputs)
            self._cache_bytes += len(function.text)
            stale = time.monotonic() - CACHE_SECONDS
            while len(self._cache) > 1 and (  # never the entry just remembered, the last one
                    len(self._cache) > CACHE_SIZE or self._cache_bytes > CACHE_BYTES
                    or next(iter(self._cache.values()))[0] < stale):  # oldest first: the order of remembering
                self._forget(next(iter(self._cache)))

    def _forget(self, function_id: str) -> None:
        """Drop ``function_id`` from the cache (under ``_lock``)."""
        entry = self._cache.pop(function_id, None)
        if entry is not None:
            self._cache_bytes -= len(entry[1].text)
