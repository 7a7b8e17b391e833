"""pipeline-runtime: a strict, fast MLServer runtime for scikit-learn pipelines.

`PipelineRuntime` is imported lazily: `pipeline_tools.train` and `pipeline_tools.rollout.cli` must stay importable
without MLServer, whose protobuf registrations clash with the kserve/tritonclient gRPC clients.
"""

from typing import Any

__all__ = ["PipelineRuntime"]


def __getattr__(name: str) -> Any:
    if name == "PipelineRuntime":
        from runtime.model import PipelineRuntime

        return PipelineRuntime
    raise AttributeError(f"module 'runtime' has no attribute {name!r}")
