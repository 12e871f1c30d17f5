"""Settings: every knob of the service, from ``GRADSERVE_*`` environment variables.

One ``Settings`` object is built per app (``create_app(settings)``); routes
receive it through the ``app_settings`` dependency (``service.dependencies``),
so tests can pass their own or override it with ``app.dependency_overrides``.
``public_limits()`` is what ``GET /v1/info`` reports: everything but secrets.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GRADSERVE_", env_file=None)

    host: str = "127.0.0.1"
    port: int = 8000

    # Authentication: when set, every route but health and docs needs X-API-Key.
    api_key: SecretStr | None = None

    # Request limits (enforced before any computation).
    max_body_bytes: int = Field(64 * 1024 * 1024, ge=1, description="request body size, chunked bodies included")
    max_tensor_elements: int = Field(10_000_000, ge=1, description="elements in one tensor")
    max_request_elements: int = Field(20_000_000, ge=1, description="elements over all tensors of a request")
    max_graph_nodes: int = Field(10_000, ge=1, description="nodes in a JSON graph, and recorded ops of a program")
    max_program_steps: int = Field(100_000, ge=1, description="statements and loop iterations a program may run")
    max_program_elements: int = Field(50_000_000, ge=1, description="elements a program may allocate in one tensor")
    deadline_s: float = Field(10.0, gt=0, description="wall-clock deadline of one compute request")
    # orjson refuses documents nested deeper than 255 levels; each graph level costs three.
    max_graph_depth: int = Field(64, ge=1, le=80, description="nesting depth of the autograd graph in /v1/grad")

    # Memory. Results and responses are refused (413) before they are computed or encoded when
    # they would hold more numbers than max_response_elements (the default lets a model of
    # max_parameters_per_model numbers export its whole state); batched Jacobian and Hessian
    # passes are sized to hold at most max_live_elements at once. `gradserve serve` sets the
    # process's address-space limit (RLIMIT_AS) to memory_limit_bytes, so that running out
    # of memory is a MemoryError (503) rather than the kernel's OOM killer.
    max_response_elements: int = Field(50_000_000, ge=1, description="numbers in one response, over all its tensors")
    max_live_elements: int = Field(100_000_000, ge=1, description="elements one request may hold at once in the "
                                   "tensors it makes (batched Jacobian and Hessian passes are sized to fit)")
    max_profile_events: int = Field(200_000, ge=1, description="events one profile may record (more: 413)")
    memory_limit_bytes: int | None = Field(None, ge=1, description="address-space limit `gradserve serve` sets on "
                                           "its process (RLIMIT_AS); unset: none")

    # Overload: at most this many compute requests run at once; more wait up to
    # queue_timeout_s for a slot, then get 503.
    max_concurrency: int = Field(4, ge=1)
    queue_timeout_s: float = Field(2.0, ge=0)

    # Plans: every function a request runs is built (validated, and compiled) once per
    # (function, transform, input signature) and kept in an LRU of this many plans; 0: none kept.
    plan_cache_size: int = Field(256, ge=0, description="plans (built client functions) kept in the LRU cache")
    # A plan holds its function about ten times over in Python objects (a graph's constants as
    # lists of floats), so the cache is also bounded by the functions' canonical text: 32 MiB of
    # it is a few hundred MB held; a single larger function is run but not kept.
    plan_cache_bytes: int = Field(32 * 1024 * 1024, ge=0, description="bytes of function text (canonical "
                                  "expr, program or graph JSON) the plan cache holds over all its plans")

    # The model store (used by the /v1/models and /v1/functions resources).
    store: str = Field("sqlite", description="'sqlite' (a file under data_dir), 'sqlite:///<file>' or 'redis://...'")
    data_dir: str = "./data"
    max_models: int = Field(100, ge=1, description="models kept in the store (more: 507)")
    max_functions: int = Field(1000, ge=1, description="functions registered in the store (more: 507)")
    max_parameters_per_model: int = Field(10_000_000, ge=1, description="numbers one model may hold (more: 413)")
    model_ttl_s: float = Field(0.0, ge=0, description="drop models not mutated for this long; 0 keeps them")
    model_retries: int = Field(20, ge=1, description="compare-and-set attempts of one mutation against other replicas")

    # Threads one BLAS operation (a matrix product) may use, applied at startup in every worker
    # process. One: the service runs max_concurrency requests at once, and the products autodiff
    # runs are small, where waking a pool of BLAS threads costs more than the arithmetic (the
    # tutorial's TinyModel trains ~30x slower on numpy's default pool). Large products (2048² and
    # up) run ~1.4x faster on two threads of two cores; raise it for a few large requests at a time.
    blas_threads: int = Field(1, ge=1, description="threads per BLAS operation (engine.set_num_threads)")

    # The GPU (device "cuda"), when one is present: a cap on cupy's memory pool, applied at
    # startup. A request that needs more than the cap gets 413; one that finds it full, 503.
    gpu_memory_limit_bytes: int | None = Field(None, ge=1, description="cupy memory pool limit; unset: no cap")

    # FastAPI's own OpenTelemetry hooks (traces, metrics and logs through whatever OTel providers
    # the process configures). Off by default: /metrics is Prometheus, and the hooks' check for
    # configured providers costs every request ~20 µs even when none is.
    opentelemetry: bool = False

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_means_none(cls, value):
        # GRADSERVE_API_KEY="" must not turn auth into "an empty header matches".
        return None if value is None or (isinstance(value, str) and not value.strip()) else value

    def public_limits(self) -> dict:
        """Every limit a client may need to know; never the API key."""
        return self.model_dump(exclude={"api_key", "host", "port", "data_dir", "store"})


@lru_cache
def get_settings() -> Settings:
    return Settings()
