"""The layers point one way: ``service -> frontends -> engine -> backend``.

Read from the source with ``ast`` (nothing is imported), so an import inside a
function or behind ``importlib.import_module("...")`` counts as much as one at
the top of a module: ``engine`` never imports ``frontends``, the service or a web
framework; ``frontends`` never imports the service or a web framework; and in
both, ``engine/backend.py`` is the only module that imports numpy or cupy.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WEB = {"fastapi", "starlette", "pydantic", "pydantic_settings", "uvicorn", "httpx"}
ARRAYS = {"numpy", "cupy", "cupyx"}


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """Every module ``path`` imports, relative imports resolved, dynamic ones with a constant name included."""
    package = module_name(path, root).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                found.add(node.args[0].value)
    return found


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def top_level(modules: set[str]) -> set[str]:
    return {module.split(".")[0] for module in modules}


@pytest.mark.parametrize("package, forbidden", [
    ("engine", {"frontends", "service"} | WEB),
    ("frontends", {"service"} | WEB),
])
def test_imports_point_one_way(package, forbidden):
    assert sources(package), f"no sources under {package}/"
    wrong = {str(path.relative_to(ROOT)): sorted(top_level(imported_modules(path)) & forbidden)
             for path in sources(package)}
    assert not {path: names for path, names in wrong.items() if names}


@pytest.mark.parametrize("package", ["engine", "frontends"])
def test_only_the_backend_imports_numpy_or_cupy(package):
    wrong = {str(path.relative_to(ROOT)): sorted(top_level(imported_modules(path)) & ARRAYS)
             for path in sources(package) if path != ROOT / "engine" / "backend.py"}
    assert not {path: names for path, names in wrong.items() if names}


def test_the_import_reader_sees_every_kind_of_import(tmp_path):
    """The reader itself: plain, from, relative (resolved against the package) and importlib imports."""
    module = tmp_path / "engine" / "autograd" / "thing.py"
    module.parent.mkdir(parents=True)
    module.write_text("import numpy as np\nfrom .. import service_like\nfrom ...frontends import program\n"
                      "def late():\n    import fastapi\n    importlib.import_module('service.app')\n")
    found = imported_modules(module, tmp_path)
    assert {"numpy", "engine.service_like", "frontends.program", "fastapi", "service.app"} <= found
