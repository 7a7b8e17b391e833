"""The registry: every step type the runtime supports, found by its scikit-learn class.

`TRANSFORMERS` holds the steps that may come before the estimator, `ESTIMATORS` the models. A
step's entry is its exact class's (`of`); a subclass may override what an entry relies on, so it is
served only through `family` (the nearest registered class it derives from), where the packager
refuses it by name and the out-of-distribution check still reads its statistics.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Generic, TypeVar

from runtime.core.steps import ensemble, linear_model, neighbors, preprocessing, svm, tree
from runtime.core.steps.kinds import Estimator, StepKind, Transformer

K = TypeVar("K", bound=StepKind)


class UnsupportedStepError(ValueError):
    """A step no entry covers; the message names it and lists what is supported."""


class Registry(Generic[K]):
    def __init__(self, kinds: Sequence[K], refusal: str) -> None:
        self._kinds = {kind.cls: kind for kind in kinds}
        if len(self._kinds) != len(kinds):
            raise ValueError(f"a step type is registered twice: {[kind.name for kind in kinds]}")
        self._refusal = refusal  # a format string with {name}, {type} and {supported}

    def __iter__(self) -> Iterator[K]:
        return iter(self._kinds.values())

    @property
    def classes(self) -> tuple[type, ...]:
        return tuple(self._kinds)

    def of(self, step: Any) -> K | None:
        """The entry of the step's own class."""
        return self._kinds.get(type(step))

    def family(self, step: Any) -> K | None:
        """The entry of the step's class or of the nearest registered class it derives from."""
        return next((self._kinds[cls] for cls in type(step).__mro__ if cls in self._kinds), None)

    def require(self, name: str, step: Any) -> K:
        """The step's family entry, or UnsupportedStepError naming the step `name` of the pipeline."""
        kind = self.family(step)
        if kind is None:
            supported = ", ".join(entry.name for entry in self)
            raise UnsupportedStepError(self._refusal.format(name=name, type=type(step).__name__, supported=supported))
        return kind


TRANSFORMERS: Registry[Transformer] = Registry(
    preprocessing.KINDS, "unsupported step '{name}' ({type}); supported scalers: {supported}"
)
ESTIMATORS: Registry[Estimator] = Registry(
    (*linear_model.KINDS, *tree.KINDS, *ensemble.KINDS, *neighbors.KINDS, *svm.KINDS),
    "unsupported estimator '{name}' ({type}); supported: {supported}",
)
