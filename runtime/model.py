"""The MLServer adapter: wires artifacts -> contract -> predictor -> response, nothing more.

Each request runs inside an observation (runtime.metrics) that times the stages, counts the
outcome, logs the request and opens the tracing spans (stages are the `stage` metric label):

    predict span
    |- validate span: the ood_flags parameter, then stages decode (contract.parse: V2 tensors to
    |                 a checked float64 matrix) and validate (the out-of-distribution check)
    |- transform span: stage predict (the scaler + model pipeline)
    `- encode span: stage encode (the V2 response, with OOD flags if asked)

Admission (auth, deadlines, the in-flight cap) happens before MLServer calls predict, in
runtime.admission; the graceful drain on SIGTERM is runtime.lifecycle. Both install once in the
process hosting the servers when this module is first imported.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
from mlserver import MLModel
from mlserver.errors import MLServerError
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri

from runtime import admission, auth, batching, grpc_compat, lifecycle, tracing
from runtime.artifacts import load_pipeline
from runtime.contract import Contract
from runtime.drift import OodDetector, OodReport, attach_flags, wants_flags
from runtime.errors import InternalPredictionError
from runtime.metrics import Observer
from runtime.options import RuntimeOptions
from runtime.predictor import compile_predictor
from runtime.response import encode_response, input_metadata, output_metadata, output_specs

logger = logging.getLogger("runtime")

grpc_compat.install()
admission.install()
lifecycle.install()


class PipelineRuntime(MLModel):
    """Serves one verified scaler+model pipeline version with a strict input contract."""

    async def load(self) -> bool:
        started = time.perf_counter()
        model_dir = Path(await get_model_uri(self._settings))
        options = RuntimeOptions.from_extra(self._settings.parameters.extra)
        auth.check_configured(options.auth_token_file, options.auth_token_env)
        pipeline = load_pipeline(model_dir, options.load_policy())
        self._offload = options.offload
        manifest = pipeline.manifest
        self._specs = output_specs(manifest)
        self._contract = Contract.for_manifest(manifest, options.max_rows)
        self._predictor = compile_predictor(pipeline)
        self._ood = OodDetector.from_pipeline(pipeline, options.ood_z_threshold)
        # The unversioned stable alias still reports the version it actually serves.
        self._served_version = self.version or manifest.version
        self._observer = Observer(self.name, self._served_version, manifest)
        self.inputs = input_metadata(manifest)
        self.outputs = output_metadata(self._specs)
        batching.isolate(self, self._contract)
        load_seconds = time.perf_counter() - started
        self._observer.metrics.loaded(manifest, self._predictor.kind, load_seconds)
        logger.info(
            "loaded %s version %s from %s (%s path)",
            self.name, self._served_version, model_dir, self._predictor.kind,
        )  # fmt: skip
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        # Refused (504) instead of computed if the request's deadline passed while it waited.
        return await admission.compute(self._predict, payload, self._offload)

    def _predict(self, payload: InferenceRequest) -> InferenceResponse:
        try:
            with self._observer.observe(payload) as obs:
                with obs.span("validate"):
                    with_flags = wants_flags(payload)
                    parsed = obs.timed("decode", self._contract.parse, payload)
                    obs.rows = len(parsed.features)
                    ood = obs.timed("validate", self._ood.check, parsed.features, with_flags)
                    obs.ood = ood
                with obs.span("transform"):
                    predict = self._predictor.predict
                    results = obs.timed("predict", predict, parsed.features, parsed.outputs)
                with obs.span("encode"):
                    return obs.timed("encode", self._encode, results, ood)
        except MLServerError:
            raise
        except Exception:
            # The observation logged it with its traceback; the client gets a short message only.
            raise InternalPredictionError("internal error while predicting; see server logs") from None

    def _encode(self, results: dict[str, np.ndarray], ood: OodReport) -> InferenceResponse:
        response = encode_response(self.name, self._served_version, results, self._specs)
        return attach_flags(response, ood)


tracing.install(PipelineRuntime)
batching.install(PipelineRuntime)
