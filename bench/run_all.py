"""`make bench`: every benchmark, one after the other (see bench/README.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
SCRIPTS = ["ext_authz_bench.py", "auth_bench.py"]


def main() -> int:
    for script in SCRIPTS:
        print(f"\n== {script}", flush=True)
        code = subprocess.run([sys.executable, str(BENCH / script), *sys.argv[1:]], check=False).returncode
        if code:
            return code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
