"""The registry: every step type the runtime supports, found by its scikit-learn class.

`TRANSFORMERS` holds the steps that may come before the estimator, `ESTIMATORS` the models. A
step's entry is its exact class's (`of`); a subclass may override what an entry relies on, so it is
served only through `family` (the nearest registered class it derives from), where the packager
refuses it by name and the out-of-distribution check still reads its statistics. A step no entry
covers is no refusal: the packager stores its pipeline whole, served by scikit-learn.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Generic, TypeVar

from runtime.core.steps import ensemble, linear_model, neighbors, preprocessing, svm, tree
from runtime.core.steps.kinds import Estimator, StepKind, Transformer

K = TypeVar("K", bound=StepKind)


class Registry(Generic[K]):
    def __init__(self, kinds: Sequence[K]) -> None:
        self._kinds = {kind.cls: kind for kind in kinds}
        if len(self._kinds) != len(kinds):
            raise ValueError(f"a step type is registered twice: {[kind.name for kind in kinds]}")

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


TRANSFORMERS: Registry[Transformer] = Registry(preprocessing.KINDS)
ESTIMATORS: Registry[Estimator] = Registry(
    (*linear_model.KINDS, *tree.KINDS, *ensemble.KINDS, *neighbors.KINDS, *svm.KINDS)
)
