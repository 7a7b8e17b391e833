"""The MLServer adapter: MLServer's model life cycle and types around the framework-free service.

    load     model URI + settings -> runtime.service.service.ModelService.load
    predict  InferenceRequest -> Call -> ModelService.answer -> Answer -> InferenceResponse
    unload   -> ModelService.unload

The service does the serving (fallback, shadow, feature lookup, the registry of loaded models);
this class converts MLServer's types and errors, publishes the metadata, and marks the model for
the fast paths (runtime.integration.direct), which call the same service. Admission (auth,
deadlines, the in-flight cap) happens before MLServer calls predict, and the graceful drain on
SIGTERM around MLServer's stop: both live in runtime.integration, installed here once per process.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from mlserver import MLModel
from mlserver.types import InferenceRequest, InferenceResponse, MetadataModelResponse
from mlserver.utils import get_model_uri

from runtime import integration
from runtime.core.errors import PipelineError
from runtime.core.options import RuntimeOptions
from runtime.integration import batching, tracing, v2
from runtime.service.service import ModelService


class PipelineRuntime(MLModel):
    """Serves one verified scikit-learn pipeline version with a strict input contract."""

    # What a subclass serves instead (a test double's variant of the service).
    service_type: ClassVar[type[ModelService]] = ModelService
    service: ModelService  # once loaded; the fast paths (runtime.integration.direct) call it too
    fast_path = False  # runtime.integration.fast_path serves it (options.fast_path, once loaded)

    async def load(self) -> bool:
        self._tracing = tracing.runtime_tracing()
        try:
            model_dir = Path(await get_model_uri(self.settings))
            options = RuntimeOptions.from_extra(self.settings.parameters.extra)
            service = await self.service_type.load(self.name, model_dir, options, self.version, self._tracing)
        except PipelineError as error:
            raise v2.as_mlserver_error(error) from None
        self.inputs = [v2.metadata(d) for d in service.inputs]
        self.outputs = [v2.metadata(d) for d in service.outputs]
        batching.isolate(self, service.contract)
        self.service = service
        self.fast_path = options.fast_path
        return True

    async def unload(self) -> bool:
        service = getattr(self, "service", None)  # MLServer also unloads a model whose load failed
        if service is not None:
            await service.unload()
        return True

    async def metadata(self) -> MetadataModelResponse:
        """MLServer's metadata plus, for a classifier, its class labels (`parameters.classes`), and
        how its answers are computed and checked (`parameters.prediction_path`)."""
        described = v2.with_classes(await super().metadata(), self.service.classes)
        return v2.with_prediction_path(described, self.service.prediction_path)

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        try:
            parent = tracing.parent_context(payload) if self._tracing else None
            return v2.response(await self.service.answer(v2.call(payload, parent)))
        except PipelineError as error:
            raise v2.as_mlserver_error(error) from None


integration.install(PipelineRuntime)
