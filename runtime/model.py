"""The MLServer adapter: wires artifacts -> contract -> predictor -> response, nothing more."""

from __future__ import annotations

import logging
from pathlib import Path

from mlserver import MLModel
from mlserver.errors import MLServerError
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri

from runtime import grpc_compat
from runtime.artifacts import load_pipeline
from runtime.contract import Contract
from runtime.errors import InternalPredictionError
from runtime.options import RuntimeOptions
from runtime.predictor import compile_predictor
from runtime.response import encode_response, input_metadata, output_metadata, output_specs

logger = logging.getLogger("runtime")

grpc_compat.install()


class PipelineRuntime(MLModel):
    """Serves one verified scaler+model pipeline version with a strict input contract."""

    async def load(self) -> bool:
        model_dir = Path(await get_model_uri(self._settings))
        options = RuntimeOptions.from_extra(self._settings.parameters.extra)
        pipeline = load_pipeline(model_dir)
        manifest = pipeline.manifest
        self._specs = output_specs(manifest)
        self._contract = Contract(tuple(manifest.feature_names), tuple(self._specs), options.max_rows)
        self._predictor = compile_predictor(pipeline)
        # The unversioned stable alias still reports the version it actually serves.
        self._served_version = self.version or manifest.version
        self.inputs = input_metadata(manifest)
        self.outputs = output_metadata(self._specs)
        logger.info(
            "loaded %s version %s from %s (%s path)",
            self.name, self._served_version, model_dir, self._predictor.kind,
        )  # fmt: skip
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        parsed = self._contract.parse(payload)
        try:
            results = self._predictor.predict(parsed.features, parsed.outputs)
            return encode_response(self.name, self._served_version, results, self._specs)
        except MLServerError:
            raise
        except Exception:
            # Logged here with its traceback; the client gets a short message only.
            logger.exception("prediction failed for model %s", self.name)
            raise InternalPredictionError("internal error while predicting; see server logs") from None
