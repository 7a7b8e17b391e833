"""Features by entity id for one model: the request's ids parsed against the model's contract, their
rows fetched from the model's feature store (runtime.features.store) and assembled in the model's
feature order, on the event loop before the computation.

A model without a store refuses a request by entity id, with a hint to send the features themselves.
"""

from __future__ import annotations

from runtime.core.call import Call
from runtime.core.contract import Contract
from runtime.core.errors import EntityIdError, FeatureStoreUnavailable, PipelineError, UnknownEntityError
from runtime.features import entities
from runtime.features.store import FeatureStore
from runtime.observation.observer import Observer


class FeatureLookup:
    def __init__(self, model: str, store: FeatureStore | None, contract: Contract, observer: Observer):
        self.model, self.store = model, store
        self._contract, self._observer = contract, observer

    async def open(self) -> None:
        if self.store is not None:
            await self.store.open()

    async def close(self) -> None:
        if self.store is not None:
            await self.store.close()

    async def __call__(self, call: Call) -> entities.Assembled:
        """The request's features by its entity ids, or the PipelineError its client gets (observed
        as a refusal: the request never reaches its computation)."""
        store = self.store
        try:
            if store is None:
                raise EntityIdError(
                    f"input '{entities.ENTITY_INPUT}': model '{self.model}' has no feature store; "
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
