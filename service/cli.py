"""``gradserve serve``: run the service under uvicorn, within the configured memory limit."""

from __future__ import annotations

import argparse
import sys


def apply_memory_limit(limit_bytes: int | None) -> str | None:
    """Cap this process's address space (RLIMIT_AS) at ``limit_bytes``; inherited by uvicorn's workers.

    Under the cap an allocation that does not fit raises MemoryError, which the service answers
    with 503 (or 413), instead of the kernel killing the process when memory runs out. Returns
    why the limit could not be applied (no RLIMIT_AS on this platform, or a hard limit below
    it), or None when it was.
    """
    if limit_bytes is None:
        return None
    try:
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY and limit_bytes > hard:
            return f"GRADSERVE_MEMORY_LIMIT_BYTES={limit_bytes} is above the hard limit {hard}"
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, hard))
    except (ImportError, AttributeError, ValueError, OSError) as error:
        return f"this platform cannot limit the address space ({error or type(error).__name__})"
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="gradserve", description="Gradients over HTTP.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the HTTP API with uvicorn")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)

    import uvicorn

    from service.config import get_settings

    settings = get_settings()
    problem = apply_memory_limit(settings.memory_limit_bytes)
    if problem is not None:
        print(f"gradserve: memory limit not applied: {problem}", file=sys.stderr)
    uvicorn.run(
        "service.app:create_app",
        factory=True,
        host=args.host or settings.host,
        port=args.port or settings.port,
        workers=args.workers,
    )


if __name__ == "__main__":
    main()
