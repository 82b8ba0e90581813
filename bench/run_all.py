"""Run every CPU benchmark under bench/ in turn (`make bench`); each prints its own table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def main() -> int:
    here = Path(__file__).resolve().parent
    # gpu_*.py need a GPU: their gpu_*.sh runs them on a machine that has one.
    # real_model.py needs optional packages (make install-real) and about 20 minutes.
    scripts = sorted(
        p
        for p in here.glob("*.py")
        if p.name not in (Path(__file__).name, "real_model.py") and not p.name.startswith("gpu_")
    )
    failed = 0
    for script in scripts:
        print(f"== {script.name}", flush=True)
        failed += subprocess.run([sys.executable, str(script)], check=False).returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
