"""Problems (RFC 9457 ``application/problem+json``) as exceptions, one class per kind of problem."""

from __future__ import annotations

import json


class ProblemError(Exception):
    """A request the server answered with a problem: ``status``, ``type``, ``title``, ``detail``,
    and the problem's other fields in ``extra`` (``node``, ``line``, ``column``, ``limit`` ...)."""

    def __init__(self, problem: dict):
        self.problem = problem
        self.status = problem.get("status")
        self.type = problem.get("type", "about:blank")
        self.title = problem.get("title", "")
        self.detail = problem.get("detail", "")
        self.extra = {k: v for k, v in problem.items() if k not in ("status", "type", "title", "detail")}
        super().__init__(f"{self.status} {self.title}: {self.detail}" if self.detail else f"{self.status} {self.title}")

    def __getattr__(self, name):
        try:
            return self.__dict__["extra"][name]
        except KeyError:
            raise AttributeError(name) from None


class BadRequestError(ProblemError):
    """400: the function or its inputs are wrong (a shape mismatch, an unknown name, a program error)."""


class UnauthorizedError(ProblemError):
    """401: a missing or wrong API key."""


class NotFoundError(ProblemError):
    """404: no such model or function."""


class ConflictError(ProblemError):
    """409: the resource changed under the request."""


class PreconditionFailedError(ConflictError):
    """412: ``If-Match`` named a version that is no longer current."""


class PayloadTooLargeError(ProblemError):
    """413: the request or its result is past a limit."""


class ValidationError(ProblemError):
    """422: the body does not follow the schema."""


class DeadlineExceededError(ProblemError):
    """408: the computation ran past its deadline."""


class UnavailableError(ProblemError):
    """503: the server is overloaded or short of memory; worth retrying later."""


class ServerError(ProblemError):
    """500 and other 5xx: a bug on the server."""


_BY_STATUS = {400: BadRequestError, 401: UnauthorizedError, 404: NotFoundError, 408: DeadlineExceededError,
              409: ConflictError, 412: PreconditionFailedError, 413: PayloadTooLargeError, 422: ValidationError,
              503: UnavailableError}


def problem_error(status: int, content: bytes) -> ProblemError:
    """The exception for an error response; a body that is not a problem becomes its detail."""
    try:
        problem = json.loads(content)
        if not isinstance(problem, dict):
            raise ValueError
    except ValueError:
        problem = {"title": "error", "detail": content[:500].decode(errors="replace")}
    problem.setdefault("status", status)
    kind = _BY_STATUS.get(status) or (ServerError if status >= 500 else ProblemError)
    return kind(problem)
