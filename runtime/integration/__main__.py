"""Print the integration's patch points: `python -m runtime.integration [--names]`.

The table in docs/integration.md is this output; a unit test keeps them equal,
and tests/pins reads `--names` (its process must not import MLServer).
"""

from __future__ import annotations

import argparse
import json

from runtime.integration import patch_points
from runtime.model import PipelineRuntime


def table() -> str:
    rows = [
        "| Patch point | What and why | Upstream | If removed |",
        "|---|---|---|---|",
    ]
    for p in patch_points(PipelineRuntime):
        rows.append(f"| `{p.target}` | {p.why} | {p.upstream} | {p.if_removed} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", action="store_true", help="a JSON list of the targets only")
    args = parser.parse_args()
    if args.names:
        print(json.dumps([p.target for p in patch_points(PipelineRuntime)]))
    else:
        print(table())


if __name__ == "__main__":
    main()
