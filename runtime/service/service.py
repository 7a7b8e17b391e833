"""One model version served, with no server framework: loaded from its directory with its options,
answering a Call with an Answer, unloaded.

    Call -> features by entity id, when it names entities     (runtime.service.lookup)
         -> breaker, budget, fallback to another loaded model  (runtime.policy.resilience)
         -> the computation, inline or on the compute thread   (runtime.service.compute):
            contract -> out-of-distribution check -> predictor -> encoded outputs, observed
         -> Answer; a sample of the predictions to the shadow  (runtime.service.shadow)

The MLServer adapter (runtime.model) and the fast paths (runtime.integration.direct) call the same
object. The other models a fallback or a shadow names are found in the registry of loaded models
(runtime.service.loaded) and asked through their public methods.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from runtime.core.artifacts import LoadedPipeline, load_pipeline
from runtime.core.call import Answer, Call
from runtime.core.contract import Contract, flag_parameter
from runtime.core.errors import ArtifactError, InternalPredictionError, ModelUnavailable, PipelineError
from runtime.core.ood import FLAGS_PARAMETER, OodDetector, OodReport, wants_flags
from runtime.core.options import RuntimeOptions
from runtime.core.predictor import (
    ATOL,
    CHECK_ATOL,
    CHECK_RTOL,
    COMPILED_PIPELINE,
    RTOL,
    shared_predictor,
)
from runtime.core.response import (
    TensorDescription,
    encode_outputs,
    input_descriptions,
    output_descriptions,
    output_specs,
)
from runtime.features import entities
from runtime.features.store import FeatureStore
from runtime.observation.observer import Observer, Tracing
from runtime.policy import auth
from runtime.policy.resilience import Fallback, Resilience
from runtime.service.compute import compute
from runtime.service.loaded import Loaded
from runtime.service.lookup import FeatureLookup
from runtime.service.shadow import Predict, Shadow, ShadowMismatch, schema_mismatch

logger = logging.getLogger("runtime")
# The process's loaded models: every service loads into it unless it is given its own (tests).
LOADED: Loaded[ModelService] = Loaded()


class Work(NamedTuple):
    """One request on its way to the computation."""

    call: Call
    looked_up: entities.Assembled | None  # features by entity id (runtime.service.lookup)


class ModelService:
    """Serves one verified scikit-learn pipeline version with a strict input contract."""

    def __init__(
        self,
        name: str,
        pipeline: LoadedPipeline,
        options: RuntimeOptions,
        version: str | None = None,
        tracing: Tracing | None = None,
        loaded: Loaded[ModelService] = LOADED,
    ):
        """The model built from its verified pipeline; `load` also opens its feature store and
        registers it among the loaded models."""
        manifest = pipeline.manifest
        self.name, self.options = name, options
        # The unversioned stable alias still reports the version it actually serves.
        self.version = version or manifest.version
        self.classes = manifest.classes  # the order of predict_proba's columns (None for a regressor)
        self._loaded = loaded
        # A budget can only be kept if the computation runs beside the event loop.
        self._offload = options.offload or options.fallback_budget_ms is not None
        self._resilience = Resilience(name, options)
        self._specs = output_specs(manifest)
        self.contract = Contract.for_manifest(manifest, options.max_rows)
        self._predictor = shared_predictor(pipeline)
        self.prediction_path = prediction_path(self._predictor.kind, manifest.check is not None)
        self._ood = OodDetector.from_pipeline(pipeline, options.ood_z_threshold)
        self._observer = Observer(name, self.version, manifest, tracing)
        self.inputs: list[TensorDescription] = input_descriptions(manifest)
        self.outputs: list[TensorDescription] = output_descriptions(self._specs)
        self._shadow: Shadow | None = None
        if options.shadow_model:
            self._shadow = Shadow(
                name,
                options.shadow_model,
                manifest.kind == "classifier",
                options.shadow_sample_rate,
                options.shadow_queue,
                options.shadow_window,
                self._shadow_predictions,
            )
        store = None
        if options.feature_store is not None:
            try:
                store = FeatureStore(name, options.feature_store, manifest.feature_names)
            except Exception:  # no model to unload: its shadow's thread ends here
                self._close_shadow()
                raise
        self._lookup = FeatureLookup(name, store, self.contract, self._observer)

    @classmethod
    async def load(
        cls,
        name: str,
        model_dir: Path,
        options: RuntimeOptions,
        version: str | None = None,
        tracing: Tracing | None = None,
        loaded: Loaded[ModelService] = LOADED,
    ) -> ModelService:
        """The model version in `model_dir`, verified, ready to answer and registered in `loaded`
        (a PipelineError if it cannot serve)."""
        started = time.perf_counter()
        auth.check_configured(options.auth_token_file, options.auth_token_env)
        pipeline = load_pipeline(model_dir, options.load_policy())
        if options.fallback_budget_ms and not options.fallback_model:
            raise ArtifactError("fallback_budget_ms needs a fallback_model")
        service = cls(name, pipeline, options, version, tracing, loaded)
        try:
            await service._lookup.open()
        except Exception:
            await service.unload()
            raise
        loaded.add(service)
        service._mark_loaded(pipeline, model_dir, time.perf_counter() - started)
        return service

    def _mark_loaded(self, pipeline: LoadedPipeline, model_dir: Path, load_seconds: float) -> None:
        manifest = pipeline.manifest
        # A regressor's predictions are counted in buckets: pinned, else the deciles of its own
        # predictions on its reference rows (fixed per version, so a canary needs pinned edges to be
        # compared bucket for bucket), computed with its predictor's check.
        pinned = self.options.prediction_buckets
        edges = np.asarray(sorted(pinned), dtype=np.float64) if pinned is not None else self._predictor.deciles
        self._observer.metrics.bind_predictions(edges if manifest.kind == "regressor" else None, manifest.classes)
        _freeze_loaded()
        self._observer.metrics.loaded(manifest, self._predictor.kind, load_seconds)
        logger.info("loaded %s version %s from %s (%s path)", self.name, self.version, model_dir, self._predictor.kind)

    async def unload(self) -> None:
        await self._lookup.close()
        self._close_shadow()
        self._loaded.remove(self)

    def _close_shadow(self) -> None:
        if self._shadow is not None:
            self._shadow.close()

    async def answer(self, call: Call) -> Answer:
        """The request answered, or the PipelineError its client gets."""
        looked_up = await self._lookup(call) if entities.is_entity_request(call.inputs) else None
        work = Work(call, looked_up)
        if not self._resilience.active:
            return await self._compute(work)
        fallback = self._fallback(work) if self._resilience.fallback_model else None
        return await self._resilience.run(lambda: self._compute(work), fallback)

    async def stand_in(self, work: Work, primary: Contract, reason: str) -> Answer:
        """Another model's request (`primary` its contract), answered here as its fallback. Features
        the primary looked up by entity id serve as they are when this model takes the same
        features; otherwise this model's own store looks them up, in its own feature order. Either
        way this model's own contract checks them: a gap the primary may take but this model may not
        is the caller's 400 naming the column (checked per request: a fallback may load later)."""
        if work.looked_up is not None and primary.feature_names != self.contract.feature_names:
            if self._lookup.store is None:
                raise ModelUnavailable(
                    f"model '{self.name}' cannot stand in for a request by entity id: it takes other "
                    "features than the model that failed and has no feature store of its own"
                )
            work = work._replace(looked_up=await self._lookup(work.call))
        answered = await self._compute(work)
        return answered.served_by(f"{self.name}:{self.version}", reason)

    def predictions(self, features: np.ndarray) -> np.ndarray:
        """This model's predictions for checked features (as another model's shadow)."""
        return self._predictor.predict(features, ("predict",))["predict"]

    async def _compute(self, work: Work) -> Answer:
        # Refused (504) instead of computed if the deadline passed while it waited.
        return await compute(self._predict, work, work.call.headers, self._offload)

    def _fallback(self, work: Work) -> Fallback[Answer]:
        async def answer(reason: str) -> Answer:
            other = self._loaded.get(self._resilience.fallback_model or "")
            if other is None or other is self:
                raise ModelUnavailable(
                    f"model '{self.name}' failed ({reason}) and its fallback "
                    f"'{self._resilience.fallback_model}' is not loaded"
                )
            return await other.stand_in(work, self.contract, reason)

        return answer

    def _predict(self, work: Work) -> Answer:
        call, looked_up = work.call, work.looked_up
        try:
            with self._observer.observe(call.id, call.parent) as obs:
                with obs.span("validate"):
                    with_flags = wants_flags(call.ood_flags)
                    inputs = looked_up.inputs if looked_up else call.inputs
                    parsed = obs.timed("decode", self.contract.parse, call.id, inputs, call.outputs)
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
        unloaded shadow is skipped and a reloaded one is its new version; one whose contract might
        refuse this model's features is refused (ShadowMismatch), never handed them
        (runtime.service.shadow)."""
        other = self._loaded.get(name)
        if other is None:
            return None
        mismatch = schema_mismatch(self.contract, other.contract)
        if mismatch is not None:
            raise ShadowMismatch(mismatch)
        return other.predictions

    def _encode(self, results: dict[str, np.ndarray], ood: OodReport, sources: str | None) -> Answer:
        """The answer: the one place its parameters and the runtime's own response headers are set
        (none today; the transports write whatever `Answer.headers` holds)."""
        parameters = {FLAGS_PARAMETER: ood.flags, entities.SOURCES_PARAMETER: sources}
        present = {k: v for k, v in parameters.items() if v is not None}
        return Answer(self.name, self.version, encode_outputs(results, self._specs), present)


def _freeze_loaded() -> None:
    """Everything loaded so far (the server, scikit-learn, the model) lives as long as the process:
    out of the collector's sight, a full collection no longer walks it, and no longer pauses the event
    loop under load (docs/performance.md, "Feature lookups"). A frozen object is never collected, so
    the load's own cyclic garbage (skops' audit tree, ~6 KiB a model) goes first: a young collection,
    ~0.1 ms, where a full one would walk the whole unfrozen heap (~190 ms at the first load)."""
    gc.collect(1)
    gc.freeze()


def prediction_path(kind: str, recorded: bool) -> str:
    """How the answers are computed and what they were checked against at load, for the model's
    metadata as one JSON string: a compiled pipeline bit for bit against the scikit-learn pipeline it
    compiles; another compiled path against scikit-learn on reference rows; the pipeline form against
    the original pipeline's recorded answers; scikit-learn's own estimator otherwise, which has nothing
    to be compared with."""
    check: dict[str, object]
    if kind == COMPILED_PIPELINE:
        check = {"verified": "bit-identical", "against": "scikit-learn pipeline"}
    elif kind != "sklearn":
        check = {"verified": "allclose", "against": "scikit-learn", "rtol": RTOL, "atol": ATOL}
    elif recorded:
        check = {"verified": "allclose", "against": "original pipeline", "rtol": CHECK_RTOL, "atol": CHECK_ATOL}
    else:
        check = {"verified": "none", "against": None}
    return json.dumps({"path": kind, **check})
