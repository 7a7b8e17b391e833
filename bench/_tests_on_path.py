"""Let the bench commands that reuse the fuzz suite (fuzz, soak) import it by path.

tests/ is not a package: its suites are pytest rootdirs of their own, so `tests/fuzz` (strategies,
judge, soak) and `tests/integration` (the server class) go on sys.path here, once.
"""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
for _path in (REPO / "tests" / "fuzz", REPO / "tests" / "integration"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))
