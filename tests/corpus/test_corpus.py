"""PyTorch programs written as people write them, run unchanged on the engine.

Each file in ``programs/`` is a plain script that imports ``torch`` and prints
values; its first lines name the public PyTorch page it follows. It runs once
with real PyTorch and once with the engine answering ``import torch``
(``runner.py``), and everything it printed must agree (``compare.py``). A
program that cannot yet run unchanged says so in a line
``# corpus-xfail: <why>``: it is then a strict xfail, so it fails the suite the
day it starts to pass and the marker must go.

Programs must print only what does not depend on the random number stream
(PyTorch's and the engine's generators differ): set weights from ``linspace``
or literals, not from the default init, when their values reach the output.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

from tests.corpus.compare import differences

HERE = pathlib.Path(__file__).parent
PROGRAMS = sorted((HERE / "programs").glob("*.py"))
ROOT = HERE.parent.parent


def _xfail_reason(path: pathlib.Path) -> str | None:
    for line in path.read_text().splitlines():
        if line.startswith("# corpus-xfail:"):
            return line.split(":", 1)[1].strip()
    return None


def _run_all(backend: str) -> dict:
    completed = subprocess.run(
        [sys.executable, "-m", "tests.corpus.runner", backend, *map(str, PROGRAMS)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )
    if completed.returncode != 0:
        raise AssertionError(f"the {backend} runner failed:\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout)


@pytest.fixture(scope="module")
def printed():
    pytest.importorskip("torch")
    return {"torch": _run_all("torch"), "engine": _run_all("engine")}


def test_programs_name_their_page():
    for path in PROGRAMS:
        head = "\n".join(path.read_text().splitlines()[:5])
        assert "https://" in head, f"{path.name} must name the page it follows in its first lines"


@pytest.mark.parametrize(
    "program",
    [
        pytest.param(p.name, marks=pytest.mark.xfail(reason=reason, strict=True)) if (reason := _xfail_reason(p))
        else p.name
        for p in PROGRAMS
    ],
)
def test_program_runs_unchanged(printed, program):
    reference, ours = printed["torch"][program], printed["engine"][program]
    assert reference["error"] is None, f"the program fails under PyTorch itself:\n{reference['error']}"
    assert ours["error"] is None, f"fails on the engine:\n{ours['error']}\nprinted before:\n{ours['stdout'][-2000:]}"
    found = differences(reference["stdout"], ours["stdout"])
    assert not found, "\n".join(found)
