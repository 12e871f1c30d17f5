"""``GET /v1/ops`` (generated from the derivative table) and ``GET /v1/info``."""

from __future__ import annotations

from functools import cache

from fastapi import APIRouter

import engine
from engine.ops import table
from service import schemas
from service.dependencies import AppSettings
from service.errors import READ_ERRORS

router = APIRouter(prefix="/v1", tags=["ops"], responses=READ_ERRORS)


def _jsonable(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return repr(value)


def _callable_names() -> list[str]:
    try:
        from frontends.program import available_functions
    except ImportError:
        return []
    return sorted(available_functions())


@cache
def _ops() -> dict:
    ops = [
        schemas.OpInfo(
            name=op.name,
            doc=op.doc or "",
            inputs=list(op.input_names),
            params={k: _jsonable(v) for k, v in op.param_defaults.items()},
            required_params=list(op.required_params),
            arity=op.arity,
            variadic=op.variadic,
            linear=op.linear,
            nondiff=op.nondiff,
            method=op.name in op.methods,
            functions=list(op.functions),
            methods=list(op.methods),
            inplace=list(op.inplace),
            public=op.public,
            grad_fn=op.grad_fn if isinstance(op.grad_fn, str) else None,
        )
        for op in sorted(table.values(), key=lambda op: op.name)
    ]
    return {"ops": ops, "functions": _callable_names()}


@router.get("/ops", response_model=schemas.OpsResponse)
def list_ops() -> dict:
    """Every op of the engine's derivative table: inputs, parameters, grad_fn name, the functions and
    methods that run it, and whether clients may call it."""
    return _ops()


@router.get("/info", response_model=schemas.InfoResponse)
def get_info(settings: AppSettings) -> dict:
    """Version, available devices, the service's limits and the BLAS libraries with their thread counts."""
    return {
        "name": "gradserve",
        "version": engine.__version__,
        "devices": {"cpu": True, "cuda": engine.cuda.is_available()},
        "cuda": {"device_count": engine.cuda.device_count(), "unavailable_reason": engine.cuda.unavailable_reason(),
                 "memory_limit_bytes": settings.gpu_memory_limit_bytes, "gpus": _gpus()},
        "limits": settings.public_limits(),
        "auth": settings.api_key is not None,
        "blas": {"threads_setting": settings.blas_threads, "threads": engine.get_num_threads(),
                 "libraries": engine.thread_pools.blas_info()},
    }


def _gpus() -> list[dict]:
    """What a client choosing "cuda:N" wants to know of each GPU (empty without one)."""
    gpus = []
    for index in range(engine.cuda.device_count()):
        props = engine.cuda.get_device_properties(index)
        free, total = engine.cuda.mem_get_info(index)
        gpus.append({"index": index, "name": props.name, "capability": [props.major, props.minor],
                     "multi_processor_count": props.multi_processor_count, "total_memory": total,
                     "free_memory": free, "memory_used_bytes": engine.cuda.memory_allocated(index)})
    return gpus
