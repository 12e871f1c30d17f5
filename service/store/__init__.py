"""The model store: ``open_store(settings)`` picks the backend from ``GRADSERVE_STORE``.

``sqlite`` (default) keeps models in ``<data_dir>/models.sqlite3``;
``sqlite:///path/file.db`` names the file; ``redis://host:port/db`` (or
``rediss://``) shares models between replicas.
"""

from __future__ import annotations

from pathlib import Path

from service.config import Settings
from service.store.base import (
    FunctionNotFound,
    ModelNotFound,
    ModelRecord,
    ModelStore,
    StoreError,
    StoreFull,
    StoreUnavailable,
)

__all__ = ["FunctionNotFound", "ModelNotFound", "ModelRecord", "ModelStore", "StoreError", "StoreFull",
           "StoreUnavailable", "open_store"]


def open_store(settings: Settings) -> ModelStore:
    url = settings.store.strip()
    if url.startswith(("redis://", "rediss://", "unix://")):
        from service.store.redis import RedisStore

        return RedisStore(url, max_models=settings.max_models, ttl_s=settings.model_ttl_s,
                          max_functions=settings.max_functions)
    if url == "sqlite" or url.startswith("sqlite://"):
        from service.store.sqlite import SQLiteStore

        # sqlite:///tmp/models.db names a file; plain "sqlite" means <data_dir>/models.sqlite3.
        named = url[len("sqlite://"):] if url.startswith("sqlite://") else ""
        file = Path(named) if named else Path(settings.data_dir) / "models.sqlite3"
        return SQLiteStore(file, max_models=settings.max_models, ttl_s=settings.model_ttl_s,
                           max_functions=settings.max_functions)
    raise ValueError(f"GRADSERVE_STORE must be 'sqlite', 'sqlite:///<file>' or 'redis://...', got {url!r}")
