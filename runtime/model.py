"""The MLServer adapter: wires artifacts -> contract -> predictor -> response, nothing more.

Each request runs inside an observation (runtime.observation.observer) that times the stages, counts the
outcome, logs the request and opens the tracing spans. Admission (auth, deadlines, the in-flight
cap) happens before MLServer calls predict, and the graceful drain on SIGTERM around MLServer's
stop: both live in runtime.integration, installed here once per process.
"""

from __future__ import annotations

import gc
import logging
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
from mlserver import MLModel
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri

from runtime import integration
from runtime.core.artifacts import LoadedPipeline, load_pipeline
from runtime.core.call import Answer, Call
from runtime.core.contract import Contract, flag_parameter
from runtime.core.errors import (
    ArtifactError,
    EntityIdError,
    FeatureStoreUnavailable,
    InternalPredictionError,
    ModelUnavailable,
    PipelineError,
    UnknownEntityError,
)
from runtime.core.ood import FLAGS_PARAMETER, OodDetector, OodReport, wants_flags
from runtime.core.options import RuntimeOptions
from runtime.core.predictor import Predictor, compile_predictor, reference_rows
from runtime.core.response import (
    encode_outputs,
    input_description,
    output_descriptions,
    output_specs,
)
from runtime.features import entities
from runtime.features.store import FeatureStore
from runtime.integration import batching, tracing, v2
from runtime.observation.observer import Observer
from runtime.policy import auth
from runtime.policy.resilience import Resilience
from runtime.service.compute import compute
from runtime.service.shadow import Predict, Shadow

logger = logging.getLogger("runtime")
# The loaded runtimes of this process by model name: a model's fallback is looked up here.
_LOADED: dict[str, PipelineRuntime] = {}


class Work(NamedTuple):
    """One request on its way to the computation."""

    call: Call
    looked_up: entities.Assembled | None  # features by entity id (runtime.features.store)


class PipelineRuntime(MLModel):
    """Serves one verified scaler+model pipeline version with a strict input contract."""

    # Set by a load that got that far: MLServer also unloads a model whose load failed.
    _store: FeatureStore | None = None
    _shadow: Shadow | None = None
    fast_path = False  # runtime.integration.fast_path serves it (options.fast_path, once loaded)

    async def load(self) -> bool:
        started = time.perf_counter()
        try:
            model_dir = Path(await get_model_uri(self.settings))
            options = RuntimeOptions.from_extra(self.settings.parameters.extra)
            auth.check_configured(options.auth_token_file, options.auth_token_env)
            pipeline = load_pipeline(model_dir, options.load_policy())
        except PipelineError as error:
            raise v2.as_mlserver_error(error) from None
        if options.fallback_budget_ms and not options.fallback_model:
            raise v2.as_mlserver_error(ArtifactError("fallback_budget_ms needs a fallback_model"))
        # A budget can only be kept if the computation runs beside the event loop.
        self._offload = options.offload or options.fallback_budget_ms is not None
        self._resilience = Resilience(self.name, options)
        self._shadow: Shadow | None = None
        if options.shadow_model:
            self._shadow = Shadow(
                self.name,
                options.shadow_model,
                pipeline.manifest.kind == "classifier",
                options.shadow_sample_rate,
                options.shadow_queue,
                options.shadow_window,
                self._shadow_predictions,
            )
        manifest = pipeline.manifest
        self._specs = output_specs(manifest)
        self._contract = Contract.for_manifest(manifest, options.max_rows)
        self._predictor = compile_predictor(pipeline)
        self._ood = OodDetector.from_pipeline(pipeline, options.ood_z_threshold)
        # The unversioned stable alias still reports the version it actually serves.
        self._served_version = self.version or manifest.version
        self._observer = Observer(self.name, self._served_version, manifest, tracing.runtime_tracing())
        self.inputs = [v2.metadata(input_description(manifest))]
        self.outputs = [v2.metadata(d) for d in output_descriptions(self._specs)]
        batching.isolate(self, self._contract)
        if options.feature_store is not None:
            try:
                self._store = FeatureStore(self.name, options.feature_store, manifest.feature_names)
            except PipelineError as error:
                raise v2.as_mlserver_error(error) from None
            await self._store.open()
        _LOADED[self.name] = self
        self.fast_path = options.fast_path
        self._observer.metrics.bind_predictions(
            _prediction_edges(self._predictor, pipeline, options.prediction_buckets)
            if manifest.kind == "regressor"
            else None,
            manifest.classes,
        )
        # Everything loaded so far (MLServer, scikit-learn, the model) lives as long as the
        # process: out of the collector's sight, a full collection no longer walks it, and no longer
        # pauses the event loop under load (docs/performance.md, "Feature lookups").
        gc.freeze()
        load_seconds = time.perf_counter() - started
        self._observer.metrics.loaded(manifest, self._predictor.kind, load_seconds)
        logger.info(
            "loaded %s version %s from %s (%s path)",
            self.name,
            self._served_version,
            model_dir,
            self._predictor.kind,
        )
        return True

    async def unload(self) -> bool:
        if self._store is not None:
            await self._store.close()
        if self._shadow is not None:
            self._shadow.close()
        if _LOADED.get(self.name) is self:  # a reload loads the new instance before unloading this one
            del _LOADED[self.name]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        try:
            parent = tracing.parent_context(payload) if self._observer.tracing else None
            return v2.response(await self.answer(v2.call(payload, parent)))
        except PipelineError as error:
            raise v2.as_mlserver_error(error) from None

    async def answer(self, call: Call) -> Answer:
        """The request answered, or the PipelineError its client gets; MLServer's predict and the
        fast path (runtime.integration.fast_path) both come here."""
        looked_up = await self._look_up(call) if entities.is_entity_request(call.inputs) else None
        work = Work(call, looked_up)
        if not self._resilience.active:
            return await self._compute(work)
        fallback = self._fallback(work) if self._resilience.fallback_model else None
        return await self._resilience.run(lambda: self._compute(work), fallback)

    async def _compute(self, work: Work) -> Answer:
        # Refused (504) instead of computed if the deadline passed while it waited.
        return await compute(self._predict, work, work.call.headers, self._offload)

    def _fallback(self, work: Work):  # type: ignore[no-untyped-def]
        async def answer(reason: str) -> Answer:
            other = _LOADED.get(self._resilience.fallback_model or "")
            if other is None or other is self:
                raise ModelUnavailable(
                    f"model '{self.name}' failed ({reason}) and its fallback "
                    f"'{self._resilience.fallback_model}' is not loaded"
                )
            answered = await other._compute(await other._taken_over(work, self._contract))
            return answered.served_by(f"{other.name}:{other._served_version}", reason)

        return answer

    async def _taken_over(self, work: Work, primary: Contract) -> Work:
        """Another model's request, answered here as its fallback. Features the primary looked up by
        entity id serve as they are when this model takes the same features; otherwise this
        model's own store looks them up, in its own feature order."""
        if work.looked_up is None or primary.feature_names == self._contract.feature_names:
            return work
        if self._store is None:
            raise ModelUnavailable(
                f"model '{self.name}' cannot stand in for a request by entity id: it takes other "
                "features than the model that failed and has no feature store of its own"
            )
        return work._replace(looked_up=await self._look_up(work.call))

    async def _look_up(self, call: Call) -> entities.Assembled:
        """Features by entity id, on the event loop before the computation."""
        store = self._store
        try:
            if store is None:
                raise EntityIdError(
                    f"input '{entities.ENTITY_INPUT}': model '{self.name}' has no feature store; "
                    "send the features themselves"
                )
            options = store.options
            request = entities.parse(call.inputs, self._contract, options.max_ids, options.max_id_bytes)
            with self._observer.span("feature_lookup", call.parent, lambda: len(request.ids)):
                try:
                    fetched = await store.fetch(request.ids)
                    rows, cached = fetched.rows, fetched.cached
                except FeatureStoreUnavailable:
                    if options.on_unavailable != "defaults":
                        raise
                    rows, cached = None, frozenset()
                try:
                    return entities.assemble(request, rows, cached, self._contract, options.defaults)
                except UnknownEntityError:
                    store.count_unknown()
                    raise
        except PipelineError as error:
            self._observer.refused(call.id, error)
            raise

    def _predict(self, work: Work) -> Answer:
        call, looked_up = work.call, work.looked_up
        try:
            with self._observer.observe(call.id, call.parent) as obs:
                with obs.span("validate"):
                    with_flags = wants_flags(call.ood_flags)
                    inputs = [looked_up.features] if looked_up else call.inputs
                    parsed = obs.timed("decode", self._contract.parse, call.id, inputs, call.outputs)
                    obs.rows = len(parsed.features)
                    ood = obs.timed("validate", self._ood.check, parsed.features, with_flags)
                    obs.ood = ood
                    sources = None
                    if looked_up and flag_parameter(entities.SOURCES_PARAMETER, call.feature_sources):
                        sources = looked_up.sources_parameter()
                with obs.span("transform"):
                    predict = self._predictor.predict
                    results = obs.timed("predict", predict, parsed.features, parsed.outputs)
                    if "predict" in results:
                        self._observer.metrics.record_predictions(results["predict"])
                with obs.span("encode"):
                    answer = obs.timed("encode", self._encode, results, ood, sources)
            if self._shadow is not None and "predict" in results:
                self._shadow.offer(parsed.features, results["predict"])
            return answer
        except PipelineError:
            raise
        except Exception:
            # The observation logged it with its traceback; the client gets a short message only.
            raise InternalPredictionError("internal error while predicting; see server logs") from None

    def _shadow_predictions(self, name: str) -> Predict | None:
        """Model `name` as loaded now, as this model's shadow: looked up for every batch, so an
        unloaded shadow is skipped and a reloaded one is its new version (runtime.service.shadow)."""
        other = _LOADED.get(name)
        if other is None or other._contract.n_features != self._contract.n_features:
            return None
        return other._predictions

    def _predictions(self, features: np.ndarray) -> np.ndarray:
        return self._predictor.predict(features, ("predict",))["predict"]

    def _encode(self, results: dict[str, np.ndarray], ood: OodReport, sources: str | None) -> Answer:
        parameters = {FLAGS_PARAMETER: ood.flags, entities.SOURCES_PARAMETER: sources}
        present = {k: v for k, v in parameters.items() if v is not None}
        return Answer(self.name, self._served_version, encode_outputs(results, self._specs), present)


def _prediction_edges(predictor: Predictor, pipeline: LoadedPipeline, pinned: list[float] | None) -> np.ndarray:
    """The bucket edges a regressor's predictions are counted by: pinned, else the deciles of its
    own predictions on its reference rows (fixed per version, so a canary needs pinned edges to be
    compared bucket for bucket)."""
    if pinned is not None:
        return np.asarray(sorted(pinned), dtype=np.float64)
    values = predictor.predict(reference_rows(pipeline, seed=0), ("predict",))["predict"]
    return np.unique(np.quantile(values, np.linspace(0.1, 0.9, 9)).round(6))


integration.install(PipelineRuntime)
