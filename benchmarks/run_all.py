"""Run every benchmark in `benchmarks/` and say where the results are (`make bench`).

A benchmark is a module in this folder (other than this one) that defines a top-level
`main(argv)` function; a new scenario is picked up by adding such a module. Each runs
in its own interpreter, one after the other (the machine's cores are shared, so
running them side by side would skew both), as `python benchmarks/<name>.py [--quick]`,
and writes its JSON under `benchmarks/results/` (git-ignored).

    .venv/bin/python benchmarks/run_all.py            # every benchmark, full size
    .venv/bin/python benchmarks/run_all.py --quick    # every benchmark, short run
    .venv/bin/python benchmarks/run_all.py --only event_store
    .venv/bin/python benchmarks/run_all.py --only instances   # issue 5: needs PostgreSQL on 127.0.0.1:5432

`instances` (several `polku serve` over PostgreSQL, beside SQLite) creates a database of its
own on the local PostgreSQL server for the run and drops it at the end.
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run every benchmark in benchmarks/.")
    parser.add_argument("--quick", action="store_true", help="pass --quick to each benchmark")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these benchmarks (module names)")
    args = parser.parse_args(argv)

    found = discover()
    if args.only:
        unknown = sorted(set(args.only) - {path.stem for path in found})
        if unknown:
            parser.error(f"no benchmark named {', '.join(unknown)}; found: {', '.join(p.stem for p in found)}")
        found = [path for path in found if path.stem in args.only]
    if not found:
        print("No benchmarks found in benchmarks/ (a module with a top-level main(argv)).")
        return 1

    started = time.time()
    failures = []
    for path in found:
        command = [sys.executable, str(path), *(["--quick"] if args.quick else [])]
        print(f"\n##### {path.stem}: {' '.join(command)}", flush=True)
        if subprocess.run(command, check=False).returncode != 0:
            failures.append(path.stem)

    written = sorted(p for p in RESULTS.glob("**/*") if p.is_file() and p.stat().st_mtime >= started)
    print(f"\nBenchmarks run: {', '.join(p.stem for p in found)}")
    print(f"Results are in {RESULTS}:")
    for path in written:
        print(f"  {path.relative_to(HERE.parent)}")
    if failures:
        print(f"Failed: {', '.join(failures)}")
        return 1
    return 0


def discover() -> list[Path]:
    """Modules of this folder with a top-level `def main(argv...)`, in name order."""
    benchmarks = []
    for path in sorted(HERE.glob("*.py")):
        if path.name in ("run_all.py", "__init__.py") or path.name.startswith("_"):
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        if any(isinstance(node, ast.FunctionDef) and node.name == "main" and node.args.args for node in tree.body):
            benchmarks.append(path)
    return benchmarks


if __name__ == "__main__":
    sys.exit(main())
