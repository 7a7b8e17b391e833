"""The runtime's own knobs, read from `parameters.extra` in model-settings.json."""

from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runtime.errors import ArtifactError

DEFAULT_MAX_ROWS = 10_000


class RuntimeOptions(BaseModel):
    # Unknown keys are refused so a misspelt option fails the load instead of being ignored.
    model_config = ConfigDict(extra="forbid")

    max_rows: int = Field(DEFAULT_MAX_ROWS, ge=1, description="Row cap per request.")

    @classmethod
    def from_extra(cls, extra: Optional[dict[str, Any]]) -> "RuntimeOptions":
        try:
            return cls.model_validate(extra or {})
        except ValidationError as exc:
            raise ArtifactError(f"invalid parameters.extra: {exc}") from None
