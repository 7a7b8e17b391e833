"""Server-side test doubles of the rehearsal: the real runtime with a bad canary's predictor.

- ErroringRuntime: every REHEARSAL_ERROR_EVERY-th prediction fails with an internal error (a 500;
  every 5th: 20 % of the requests), deterministically, so the share is exact.
- ShiftedRuntime: every `predict` value moved by REHEARSAL_SHIFT (a constant): a canary whose
  answers are all valid, fast and wrong.

The contract, the out-of-distribution check and the metrics run as in the real runtime, so what
the rehearsal's Prometheus sees is what a broken version would export. Imported only by the
`mlserver start .` subprocesses the rehearsal starts (the project root on their PYTHONPATH).
"""

import itertools
import os
import threading
from collections.abc import Callable
from typing import Any, cast

import numpy as np

from runtime.core.predictor import Predictor
from runtime.model import PipelineRuntime
from runtime.service.service import ModelService

Outputs = dict[str, np.ndarray]
# A replacement `predict`: the real predictor, the features, the output names.
Predict = Callable[[Predictor, np.ndarray, tuple[str, ...]], Outputs]


class _Wrapped:
    """The compiled predictor, with `predict` replaced; everything else delegated."""

    def __init__(self, inner: Predictor, predict: Predict) -> None:
        self._inner, self._predict = inner, predict
        self.kind = inner.kind

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def predict(self, features: np.ndarray, names: tuple[str, ...]) -> Outputs:
        return self._predict(self._inner, features, names)


def _wrapping(make_predict: Callable[[], Predict]) -> type[ModelService]:
    """The service, its compiled predictor's `predict` replaced once it loaded (its load-time
    predictions, the regressor's bucket edges, made by the real one)."""

    class WrappedService(ModelService):
        @classmethod
        async def load(cls, *args: Any, **kwargs: Any) -> ModelService:
            service = await super().load(*args, **kwargs)
            service._predictor = cast(Predictor, _Wrapped(service._predictor, make_predict()))
            return service

    return WrappedService


def _erroring() -> Predict:
    every = int(os.environ["REHEARSAL_ERROR_EVERY"])
    counter, lock = itertools.count(1), threading.Lock()

    def predict(inner: Predictor, features: np.ndarray, names: tuple[str, ...]) -> Outputs:
        with lock:
            n = next(counter)
        if n % every == 0:
            raise ZeroDivisionError(f"injected fault (every {every}th prediction)")
        return inner.predict(features, names)

    return predict


def _shifted() -> Predict:
    shift = float(os.environ["REHEARSAL_SHIFT"])

    def predict(inner: Predictor, features: np.ndarray, names: tuple[str, ...]) -> Outputs:
        outputs = dict(inner.predict(features, names))
        if "predict" in outputs:
            outputs["predict"] = outputs["predict"] + shift
        return outputs

    return predict


class ErroringRuntime(PipelineRuntime):
    service_type = _wrapping(_erroring)


class ShiftedRuntime(PipelineRuntime):
    service_type = _wrapping(_shifted)
