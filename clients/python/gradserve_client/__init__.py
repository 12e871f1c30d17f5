"""gradserve-client: a Python client for gradserve, numpy arrays in and out.

``Client`` and ``AsyncClient`` have one method per endpoint; ``client.function(...)``
is a registered remote function (with ``as_torch`` / ``as_engine`` adapters) and
``client.create_model(spec)`` a remote model. Problems raise ``ProblemError``s.
"""

from gradserve_client.client import AsyncClient, Client, RemoteFunction, RemoteModel, Result
from gradserve_client.errors import (
    BadRequestError,
    ConflictError,
    DeadlineExceededError,
    NotFoundError,
    PayloadTooLargeError,
    PreconditionFailedError,
    ProblemError,
    ServerError,
    UnauthorizedError,
    UnavailableError,
    ValidationError,
)
from gradserve_client.wire import WireError

__all__ = [
    "AsyncClient", "BadRequestError", "Client", "ConflictError", "DeadlineExceededError", "NotFoundError",
    "PayloadTooLargeError", "PreconditionFailedError", "ProblemError", "RemoteFunction", "RemoteModel", "Result",
    "ServerError", "UnauthorizedError", "UnavailableError", "ValidationError", "WireError",
]
