"""The long fuzz run: tests/test_fuzz.py with 100,000+ requests.

    python bench/fuzz_long.py [--requests N] [--keep-going] [pytest args...]

CI sends about 12,000 requests (a minute or two); this sends `--requests`
(default 100,000) through the same phases, shares and invariants: Batch,
Logs and EventBridge requests generated from botocore's models, raw
malformed HTTP, a short phase with the engine on. The run is as
reproducible as CI's (hypothesis derandomized); a different `--requests`
draws a different sequence.

`--keep-going` records every broken invariant and reports them all, one
example of each kind, at the end of each phase, instead of stopping at the
first: the way to hunt for bugs. Each phase prints its request count and
rate; the exit status is pytest's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100_000, help="total requests to send")
    parser.add_argument(
        "--keep-going", action="store_true", help="report every failure, not just the first"
    )
    args, pytest_args = parser.parse_known_args()
    env = dict(os.environ, SHOAL_FUZZ_EXAMPLES=str(args.requests))
    if args.keep_going:
        env["SHOAL_FUZZ_KEEP_GOING"] = "1"
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-s",
        "-p",
        "no:cacheprovider",
        str(ROOT / "tests" / "test_fuzz.py"),
        *pytest_args,
    ]
    start = time.monotonic()
    status = subprocess.call(command, cwd=ROOT, env=env)
    print(f"fuzz_long: {args.requests} requests asked, {time.monotonic() - start:.0f} s in all")
    return status


if __name__ == "__main__":
    sys.exit(main())
