"""Run every benchmark in bench/ one after another (`make bench`).

Each benchmark prints its own numbers and ratios against a baseline measured in the same run.
"""

from __future__ import annotations

import runpy
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    scripts = sorted(p for p in HERE.glob("*.py") if p.name not in {"run_all.py", "__init__.py"})
    only = set(sys.argv[1:])
    failed = []
    for script in scripts:
        if only and script.stem not in only:
            continue
        print(f"\n=== bench/{script.name} ===", flush=True)
        start = time.perf_counter()
        try:
            module = runpy.run_path(str(script))
            module["main"]()
        except Exception as err:  # noqa: BLE001 - one broken benchmark must not hide the others
            print(f"FAILED: {type(err).__name__}: {err}", flush=True)
            failed.append(script.name)
        print(f"--- {script.name}: {time.perf_counter() - start:.1f} s", flush=True)
    if failed:
        print(f"\nfailed benchmarks: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
