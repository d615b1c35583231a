"""``python -m loadtest.bench``: the benchmark sweep (loadtest/bench/run.py)."""

import sys

from loadtest.bench.run import main

if __name__ == "__main__":
    sys.exit(main())
