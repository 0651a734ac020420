"""`make bench`: every benchmark, one after the other (see bench/README.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
# script -> whether it takes `--duration N` (seconds per measured run), passed on from ours.
SCRIPTS = {
    "ext_authz_bench.py": True,
    "auth_bench.py": True,
    "login_burst_bench.py": True,
    "usage_bench.py": True,
    "webhook_bench.py": False,
    "revocation_faults_bench.py": True,
    "rolling_restart_bench.py": False,
    "json_api_bench.py": True,
    "console_bench.py": False,
    "password_reset_timing.py": False,
    "instances_bench.py": False,
}


def main() -> int:
    for script, takes_duration in SCRIPTS.items():
        print(f"\n== {script}", flush=True)
        extra = sys.argv[1:] if takes_duration else []
        code = subprocess.run([sys.executable, str(BENCH / script), *extra], check=False).returncode
        if code:
            return code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
