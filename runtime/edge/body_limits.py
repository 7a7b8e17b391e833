"""The limits on a request body, from the environment; a bad value fails the start.

PIPELINE_MAX_REQUEST_BYTES     the body as the application sees it (inflated), default 8 MiB
PIPELINE_MAX_INFLATION_RATIO   inflated bytes per byte on the wire, default 100
PIPELINE_MAX_JSON_DEPTH        nested arrays/objects in a JSON body, default 64
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, PositiveInt

from runtime.edge.env_numbers import whole_number

ENV_MAX_REQUEST_BYTES = "PIPELINE_MAX_REQUEST_BYTES"
ENV_MAX_INFLATION_RATIO = "PIPELINE_MAX_INFLATION_RATIO"
ENV_MAX_JSON_DEPTH = "PIPELINE_MAX_JSON_DEPTH"
# Enough for max_rows (10,000) rows of 30 features as JSON numbers, with room to spare.
DEFAULT_MAX_REQUEST_BYTES = 8 * 1024 * 1024
# JSON numbers compress a few times over; a body that inflates a hundredfold is a bomb, not data.
DEFAULT_MAX_INFLATION_RATIO = 100
# A V2 request nests 5 deep ({inputs: [{data: [[...]]}]}), a tensor of rank r as lists r + 3.
DEFAULT_MAX_JSON_DEPTH = 64
# Below this many inflated bytes the ratio is not checked: a small, repetitive body is no threat.
RATIO_FLOOR_BYTES = 1024 * 1024


class BodyLimits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_bytes: PositiveInt = DEFAULT_MAX_REQUEST_BYTES
    max_inflation_ratio: PositiveInt = DEFAULT_MAX_INFLATION_RATIO
    max_json_depth: PositiveInt = DEFAULT_MAX_JSON_DEPTH

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BodyLimits:
        env = os.environ if env is None else env
        return cls(
            max_bytes=max_request_bytes(env),
            max_inflation_ratio=whole_number(env, ENV_MAX_INFLATION_RATIO, DEFAULT_MAX_INFLATION_RATIO, "times"),
            max_json_depth=whole_number(env, ENV_MAX_JSON_DEPTH, DEFAULT_MAX_JSON_DEPTH, "levels"),
        )


def max_request_bytes(env: Mapping[str, str] | None = None) -> int:
    """PIPELINE_MAX_REQUEST_BYTES, else the default (gRPC's maximum message size too)."""
    return whole_number(os.environ if env is None else env, ENV_MAX_REQUEST_BYTES, DEFAULT_MAX_REQUEST_BYTES, "bytes")
