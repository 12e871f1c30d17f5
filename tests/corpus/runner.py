"""Run corpus programs as plain scripts, with real PyTorch or with the engine as ``torch``.

``python -m tests.corpus.runner {torch|engine} PROGRAM...`` runs each program in
this one process, in order, and prints one JSON object: program file name ->
``{"stdout": what it printed, "error": the traceback or null}``. With
``engine``, a finder at the front of ``sys.meta_path`` answers every
``import torch`` and ``import torch.<sub>`` with ``engine`` and
``engine.<sub>``, so the programs run unchanged, exactly as a user would run
them after ``import engine as torch``. One process per backend keeps the
interpreter and library start-up out of each program's cost.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.util
import io
import json
import runpy
import sys
import traceback


class EngineAsTorch(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves ``torch`` and ``torch.x.y`` to ``engine`` and ``engine.x.y``."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "torch" or fullname.startswith("torch."):
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return importlib.import_module("engine" + spec.name[len("torch"):])

    def exec_module(self, module):
        """The engine module is already imported and executed."""


def run(paths: list[str]) -> dict:
    results = {}
    for path in paths:
        out = io.StringIO()
        error = None
        with contextlib.redirect_stdout(out):
            try:
                runpy.run_path(path, run_name="__main__")
            except BaseException:  # a program's failure is a result, reported not raised
                error = traceback.format_exc()
        results[path.rsplit("/", 1)[-1]] = {"stdout": out.getvalue(), "error": error}
    return results


def main(argv: list[str]) -> None:
    backend, *paths = argv
    if backend == "engine":
        sys.meta_path.insert(0, EngineAsTorch())
    elif backend != "torch":
        raise SystemExit(f"unknown backend {backend!r}: torch or engine")
    results = run(paths)
    sys.stdout.write(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1:])
