"""The engine's modules that need each other are connected in one place, ``engine.wiring``.

The static test reads every engine module and refuses a module-level
assignment to another engine module's attribute anywhere but
``engine/wiring.py``. The others import one module first, in a fresh
interpreter, as a user or a tool might (``import engine.ops``), and check
that the engine then runs an op on Tensors, records, writes in place,
re-reads a stale view, runs backward and fills a tensor at random.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import engine

ENGINE = pathlib.Path(engine.__file__).parent


def _module_level_statements(tree):
    """The statements that run at import: the module's, and those in its if/try/for/with blocks."""
    pending = list(tree.body)
    while pending:
        statement = pending.pop()
        yield statement
        if not isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for field in ("body", "orelse", "finalbody", "handlers"):
                pending.extend(getattr(statement, field, ()))


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a name inside a module, not a submodule
        return False


def _engine_modules_named(tree) -> dict[str, str]:
    """The names a module binds to engine modules: ``{"op_module": "engine.op"}``."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("engine"):
            for alias in node.names:
                if _is_module(f"{node.module}.{alias.name}"):
                    names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            names.update({a.asname: a.name for a in node.names if a.asname and a.name.startswith("engine")})
    return names


def _foreign_assignments(path: pathlib.Path, root: pathlib.Path) -> list[str]:
    """``"<file>:<line> sets engine.<module>.<name>"`` for each import-time assignment to another
    engine module's attribute in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    modules = _engine_modules_named(tree)
    found = []
    for statement in _module_level_statements(tree):
        if isinstance(statement, ast.Assign):
            targets = statement.targets
        elif isinstance(statement, (ast.AugAssign, ast.AnnAssign)):
            targets = [statement.target]
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id in modules:
                where = f"{path.relative_to(root)}:{statement.lineno}"
                found.append(f"{where} sets {modules[target.value.id]}.{target.attr}")
    return found


def test_only_engine_wiring_sets_other_modules_globals_at_import():
    sources = sorted(p for p in ENGINE.rglob("*.py") if p.name != "wiring.py")
    assert len(sources) > 20  # the scan sees the engine
    found = [line for path in sources for line in _foreign_assignments(path, ENGINE)]
    assert found == [], "bind these in engine/wiring.py instead:\n" + "\n".join(found)


def test_the_scan_finds_an_import_time_assignment(tmp_path):
    # the check above can fail: the pattern engine.wiring replaced is found where it is planted
    planted = tmp_path / "backward.py"
    planted.write_text((ENGINE / "autograd" / "backward.py").read_text()
                       + "\nfrom engine import tensor as tensor_module\n\ntensor_module._backward = backward\n")
    last_line = len(planted.read_text().splitlines())
    assert _foreign_assignments(planted, tmp_path) == [f"backward.py:{last_line} sets engine.tensor._backward"]


EXERCISE = """
import json
import {module}
import engine
x = engine.tensor([0.5, 1.0, 2.0], dtype=engine.float64, requires_grad=True)
y = engine.ops.mul(x.sin(), 3.0)  # an Op called on Tensors, a Tensor method
z = y[1:]  # a view of y
y.add_(1.0)  # in place on y: z's recorded history is stale now
(z.sum() + y.sum()).backward()  # records z again from y
w = engine.zeros(1000).uniform_()
print(json.dumps({{"grad": x.grad.tolist(), "grad_fn": y.grad_fn.name(), "drawn": [w.min().item(), w.max().item()]}}))
"""


@pytest.mark.parametrize("module", ["engine.ops", "engine.op", "engine.tensor", "engine.creation", "engine.backend",
                                    "engine.autograd.function", "engine.autograd.inplace", "engine.autograd.backward"])
def test_importing_any_engine_module_first_gives_a_connected_engine(module):
    done = subprocess.run([sys.executable, "-c", EXERCISE.format(module=module)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    xs = np.array([0.5, 1.0, 2.0])
    # d/dx of sum(3 sin x + 1) + sum over the last two elements of it: 3 cos x, twice where z reads y
    np.testing.assert_allclose(report["grad"], 3 * np.cos(xs) * np.array([1, 2, 2]), rtol=1e-12)
    assert report["grad_fn"] == "AddBackward0"
    low, high = report["drawn"]
    assert 0.0 <= low < 0.01 and 0.99 < high < 1.0
