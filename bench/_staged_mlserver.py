"""`mlserver start DIR` with the gRPC fast path cut short after one of its stages.

    BENCH_STAGE=decoded PYTHONPATH=<repo> python -m bench._staged_mlserver start DIR

Used by `python -m bench.ladder` to measure what each stage of a gRPC ModelInfer costs inside the
running server. The stages, each including the ones before:
- canned: the first answer, made in full, is returned for every later request: MLServer's gRPC
  server, its interceptors, the fast path's model lookup and the response's serialisation;
- decoded: the request read into the runtime's Call (decoding, metadata as headers, peer,
  deadline, id) before the canned response is returned;
- responded: also the response built from the first answer, with its trailing metadata;
- full (BENCH_STAGE unset): the fast path as it is.
For a measurement only: every request gets the first request's answer.
"""

from __future__ import annotations

import os
import sys
from typing import Any

STAGES = ("canned", "decoded", "responded")


def _staged(stage: str) -> None:
    from runtime.integration import fast_path_grpc as fast

    full = fast._infer
    first: dict[str, Any] = {}

    async def staged(direct: Any, model: Any, request: Any, context: Any) -> Any:
        if not first:
            call = fast._prepared(request, context)
            first["answer"] = await direct.infer(model, request.model_name, request.model_version, call)
            first["response"] = await full(direct, model, request, context)
            return first["response"]
        if stage == "canned":
            return first["response"]
        call = fast._prepared(request, context)
        if stage == "decoded":
            return first["response"]
        return fast._answered(direct, model, first["answer"], call.id, request, context)

    fast._infer = staged


def main() -> None:
    stage = os.environ.get("BENCH_STAGE", "")
    if stage:
        if stage not in STAGES:
            raise SystemExit(f"BENCH_STAGE={stage!r}: one of {', '.join(STAGES)}, or unset for the full path")
        sys.path.insert(0, os.getcwd())  # the model folder, where `mlserver start .` finds the runtime
        _staged(stage)
    from mlserver.cli.main import main as mlserver_main

    sys.argv = ["mlserver", *sys.argv[1:]]
    mlserver_main()


if __name__ == "__main__":
    main()
