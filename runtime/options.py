"""The runtime's own knobs, read from `parameters.extra` in model-settings.json."""

from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runtime.errors import ArtifactError

DEFAULT_MAX_ROWS = 10_000
# 4 training standard deviations: the training data itself goes beyond it rarely (0.02% of the
# diabetes values, 0.4% of the heavier-tailed breast-cancer ones), so in-distribution traffic
# leaves the out-of-distribution counts near zero.
DEFAULT_OOD_Z_THRESHOLD = 4.0


class RuntimeOptions(BaseModel):
    # Unknown keys are refused so a misspelt option fails the load instead of being ignored.
    model_config = ConfigDict(extra="forbid")

    max_rows: int = Field(DEFAULT_MAX_ROWS, ge=1, description="Row cap per request.")
    ood_z_threshold: Optional[float] = Field(
        DEFAULT_OOD_Z_THRESHOLD,
        gt=0,
        description="A value further than this many training standard deviations from the training "
        "mean counts as out of distribution; null checks the training range only.",
    )

    @classmethod
    def from_extra(cls, extra: Optional[dict[str, Any]]) -> "RuntimeOptions":
        try:
            return cls.model_validate(extra or {})
        except ValidationError as exc:
            raise ArtifactError(f"invalid parameters.extra: {exc}") from None
