"""``python -m bench [name ...]``: run the benchmark modules and write bench/results/latest.md.

Each ``bench/bench_<name>.py`` defines ``run() -> list[Table]``. Pass names to
run only some (``python -m bench core functional``).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import platform
import sys
import time
from pathlib import Path

from bench.timing import blas_table


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    names = sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    chosen = argv or names
    unknown = [n for n in chosen if n not in names]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; available: {names}", file=sys.stderr)
        return 2
    sections = [f"# gradserve benchmarks\n\n{time.strftime('%Y-%m-%d %H:%M')} · Python {platform.python_version()}"
                f" · {platform.machine()} · {os.cpu_count()} cores\n"]
    # Nothing pins BLAS threads here: each engine workload runs with the engine's setting (what
    # `import engine` gives) and with numpy's default pool, side by side.
    blas = blas_table().markdown()
    print(blas, flush=True)
    sections.append(blas)
    for name in chosen:
        module = importlib.import_module(f"bench.bench_{name}")
        for table in module.run():
            text = table.markdown()
            print(text, flush=True)
            sections.append(text)
    results = here / "results"
    results.mkdir(exist_ok=True)
    (results / "latest.md").write_text("\n".join(sections))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
