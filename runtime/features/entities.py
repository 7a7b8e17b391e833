"""Requests by entity id: the `entity_id` input, the rows the feature store returned for it, and
any features sent beside it, assembled into the one matrix the input contract then checks.

The rule for mixed requests: a feature input sent beside `entity_id` (a 1-D tensor [N] named after
a feature) replaces that feature's looked-up values in every row; the other features come from
the store. An id the store does not know is the caller's mistake (400 naming the id and its row)
unless the model configures default features, which it then gets, its row flagged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.core.contract import Contract, Tensor, decode_tensor
from runtime.core.errors import EntityIdError, FeatureNameError, ShapeError, UnknownEntityError

ENTITY_INPUT = "entity_id"
SOURCES_PARAMETER = "feature_sources"  # request: ask for them; response: where each row came from
STORE, CACHE, DEFAULTS = "store", "cache", "defaults"


@dataclass(frozen=True)
class EntityRequest:
    ids: tuple[str, ...]
    given: dict[str, Tensor]  # feature name -> the caller's column, replacing the looked-up one


@dataclass(frozen=True)
class Assembled:
    features: Tensor  # FP64 [N, F] in the model's feature order, for the contract
    sources: tuple[str, ...]  # per row: store, cache or defaults
    given: tuple[str, ...]  # the features the caller sent

    def sources_parameter(self) -> str:
        """One JSON string (MLServer drops list parameters over gRPC), like the OOD flags."""
        return json.dumps({"rows": list(self.sources), "from_request": list(self.given)})


def is_entity_request(inputs: Sequence[Tensor]) -> bool:
    return any(i.name == ENTITY_INPUT for i in inputs)


def parse(inputs: Sequence[Tensor], contract: Contract, max_ids: int, max_id_bytes: int) -> EntityRequest:
    """The ids and the features given beside them, or a 400 naming what is wrong."""
    ids_input = next(i for i in inputs if i.name == ENTITY_INPUT)
    ids = _ids(ids_input, max_ids, max_id_bytes)
    given: dict[str, Tensor] = {}
    for inp in inputs:
        if inp is ids_input:
            continue
        if inp.name == ENTITY_INPUT:
            raise EntityIdError(f"input '{ENTITY_INPUT}' given more than once")
        if inp.name not in contract.feature_names:
            raise FeatureNameError(
                f"input '{inp.name}': beside '{ENTITY_INPUT}' only 1-D feature inputs may be sent, "
                f"named as the model's features: {', '.join(contract.feature_names)}"
            )
        if inp.name in given:
            raise FeatureNameError(f"input '{inp.name}': feature given more than once")
        if list(inp.shape) != [len(ids)]:
            raise ShapeError(
                f"input '{inp.name}': shape {list(inp.shape)}, but '{ENTITY_INPUT}' has {len(ids)} "
                f"rows: a feature sent beside it must have shape [{len(ids)}]"
            )
        given[inp.name] = inp
    return EntityRequest(ids, given)


def _ids(inp: Tensor, max_ids: int, max_id_bytes: int) -> tuple[str, ...]:
    where = f"input '{ENTITY_INPUT}'"
    if inp.datatype != "BYTES":
        raise EntityIdError(f"{where}: datatype {inp.datatype}; entity ids are sent as BYTES (strings)")
    if len(inp.shape) != 1:
        raise EntityIdError(f"{where}: shape {list(inp.shape)}; entity ids are one 1-D tensor [N]")
    values = list(inp.data) if isinstance(inp.data, (list, tuple, np.ndarray)) else None
    if values is None or len(values) != inp.shape[0]:
        found = "no list" if values is None else f"{len(values)} values"
        raise EntityIdError(f"{where}: shape {list(inp.shape)} but {found}")
    if not values:
        raise EntityIdError(f"{where}: no ids (empty batch)")
    if len(values) > max_ids:
        raise EntityIdError(f"{where}: {len(values)} ids exceed this model's limit of {max_ids} per request")
    return tuple(_id(where, row, value, max_id_bytes) for row, value in enumerate(values))


def _id(where: str, row: int, value: Any, max_bytes: int) -> str:
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise EntityIdError(f"{where}: row {row}: the id is not UTF-8") from None
    if not isinstance(value, str):
        raise EntityIdError(f"{where}: row {row}: expected a string id, got {type(value).__name__}")
    if not value:
        raise EntityIdError(f"{where}: row {row}: empty id")
    if len(value.encode("utf-8")) > max_bytes:
        raise EntityIdError(f"{where}: row {row}: id longer than {max_bytes} bytes")
    if not value.isprintable():
        raise EntityIdError(f"{where}: row {row}: the id has control characters")
    return value


def assemble(
    request: EntityRequest,
    rows: Mapping[str, tuple[float | None, ...]] | None,
    cached: frozenset[str],
    contract: Contract,
    defaults: Mapping[str, float] | None,
) -> Assembled:
    """The feature matrix: given columns, else the looked-up values, else the defaults. A NULL is a
    missing value where the schema allows one, else the entity's want of that feature.

    `rows` None: the store is unavailable and the model answers with its defaults."""
    names = contract.feature_names
    matrix = np.empty((len(request.ids), len(names)), dtype=np.float64)
    fallback = tuple(defaults[n] for n in names) if defaults is not None else None
    gaps = contract.may_be_missing or (False,) * len(names)
    # A NULL where the schema lets the column be missing is a gap the pipeline fills itself (NaN).
    needed = [c for c, n in enumerate(names) if n not in request.given and not gaps[c]]
    sources = []
    for r, entity in enumerate(request.ids):
        row = rows.get(entity) if rows is not None else None
        if row is None:
            if fallback is None:
                raise UnknownEntityError(f"input '{ENTITY_INPUT}': row {r}: unknown entity id {entity!r}")
            matrix[r] = fallback
            sources.append(DEFAULTS)
            continue
        if any(row[c] is None for c in needed):
            if fallback is None:
                missing = next(names[c] for c in needed if row[c] is None)
                raise UnknownEntityError(
                    f"input '{ENTITY_INPUT}': row {r}: entity {entity!r} has no value for feature "
                    f"'{missing}' in the feature store"
                )
            row = tuple(fallback[c] if v is None else v for c, v in enumerate(row))
            sources.append(DEFAULTS)
        else:
            sources.append(CACHE if entity in cached else STORE)
        matrix[r] = [np.nan if v is None else v for v in row]  # NULLs: given columns or gaps
    for name, inp in request.given.items():
        col = names.index(name)
        matrix[:, col] = decode_tensor(inp, (len(request.ids),), (name,), gaps[col : col + 1])
    features = Tensor(ENTITY_INPUT, matrix.shape, "FP64", matrix)
    return Assembled(features, tuple(sources), tuple(request.given))
