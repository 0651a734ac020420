"""Run `buf breaking` on protos/ against main (skipped while main has no protos)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUF = ROOT / "node_modules" / ".bin" / "buf"


def main() -> int:
    has_main_protos = (
        subprocess.run(
            ["git", "cat-file", "-e", "main:protos/buf.yaml"], cwd=ROOT, capture_output=True, check=False
        ).returncode
        == 0
    )
    if not has_main_protos:
        print("buf breaking: main has no protos yet; nothing to compare")
        return 0
    result = subprocess.run(
        [str(BUF), "breaking", "protos", "--against", ".git#branch=main,subdir=protos"], cwd=ROOT, check=False
    )
    if result.returncode == 0:
        print("buf breaking: no breaking changes against main")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
