"""Requests by entity id: the `entity_id` input, the rows the feature store returned for it, and
any features sent beside it, assembled into the inputs the input contract then checks: one matrix
for a model of numeric columns, one tensor per column (BYTES for strings) for a model with string
columns, a store's NULL becoming a gap (null or NaN) and its TEXT a string.

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
from runtime.core.errors import DatatypeError, EntityIdError, FeatureNameError, ShapeError, UnknownEntityError
from runtime.features.source import Row, Value

ENTITY_INPUT = "entity_id"
SOURCES_PARAMETER = "feature_sources"  # request: ask for them; response: where each row came from
STORE, CACHE, DEFAULTS = "store", "cache", "defaults"


@dataclass(frozen=True)
class EntityRequest:
    ids: tuple[str, ...]
    given: dict[str, Tensor]  # feature name -> the caller's column, replacing the looked-up one


@dataclass(frozen=True)
class Assembled:
    # What the contract then checks: one FP64 [N, F] matrix in the model's feature order, or for a
    # model with string columns one tensor [N] per column (runtime.core.contract).
    inputs: tuple[Tensor, ...]
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
    rows: Mapping[str, Row] | None,
    cached: frozenset[str],
    contract: Contract,
    defaults: Mapping[str, Value] | None,
) -> Assembled:
    """The features in the form the contract takes for this model: given columns, else the looked-up
    values, else the defaults. A NULL is a missing value where the schema allows one, else the
    entity's want of that feature; a value of the wrong kind for its column (TEXT in a numeric one, a
    number in a string one) is the entity's 400 naming the feature.

    `rows` None: the store is unavailable and the model answers with its defaults."""
    names = contract.feature_names
    fallback = tuple(defaults[n] for n in names) if defaults is not None else None
    gaps = contract.may_be_missing or (False,) * len(names)
    strings = contract.string_columns or (False,) * len(names)
    # A NULL where the schema lets the column be missing is a gap the pipeline fills itself.
    looked_up = [c for c, n in enumerate(names) if n not in request.given]
    needed = [c for c in looked_up if not gaps[c]]
    table: list[Row] = []
    sources = []
    for r, entity in enumerate(request.ids):
        row = rows.get(entity) if rows is not None else None
        if row is None:
            if fallback is None:
                raise UnknownEntityError(f"input '{ENTITY_INPUT}': row {r}: unknown entity id {entity!r}")
            row = fallback
            sources.append(DEFAULTS)
        elif any(row[c] is None for c in needed):
            if fallback is None:
                missing = next(names[c] for c in needed if row[c] is None)
                raise UnknownEntityError(
                    f"input '{ENTITY_INPUT}': row {r}: entity {entity!r} has no value for feature "
                    f"'{missing}' in the feature store"
                )
            row = tuple(fallback[c] if v is None and not gaps[c] else v for c, v in enumerate(row))
            sources.append(DEFAULTS)
        else:
            sources.append(CACHE if entity in cached else STORE)
        _check_kinds(r, entity, row, looked_up, names, strings)
        table.append(row)
    inputs = _columns(request, table, contract) if contract.string_columns else _matrix(request, table, contract)
    return Assembled(inputs, tuple(sources), tuple(request.given))


def _check_kinds(
    r: int, entity: str, row: Row, columns: Sequence[int], names: Sequence[str], strings: Sequence[bool]
) -> None:
    """Text only in string columns, numbers only in numeric ones (a store's column of the wrong type)."""
    for c in columns:
        value = row[c]
        if value is not None and isinstance(value, str) != strings[c]:
            found, kind = ("the text", "numeric") if isinstance(value, str) else ("the number", "string")
            raise DatatypeError(
                f"input '{ENTITY_INPUT}': row {r}: entity {entity!r} has {found} {value!r:.40} for feature "
                f"'{names[c]}', a {kind} column"
            )


def _matrix(request: EntityRequest, table: Sequence[Row], contract: Contract) -> tuple[Tensor, ...]:
    """A model of numeric columns: one FP64 [N, F] matrix, NaN for a gap, the given columns decoded in."""
    names, gaps = contract.feature_names, contract.may_be_missing or (False,) * contract.n_features
    # Past the kind check a looked-up value is a number or NULL; a given column's is replaced below.
    matrix = np.array(
        [[np.nan if v is None or isinstance(v, str) else v for v in row] for row in table], dtype=np.float64
    )
    for name, inp in request.given.items():
        col = names.index(name)
        matrix[:, col] = decode_tensor(inp, (len(request.ids),), (name,), gaps[col : col + 1])
    return (Tensor(ENTITY_INPUT, matrix.shape, "FP64", matrix),)


def _columns(request: EntityRequest, table: Sequence[Row], contract: Contract) -> tuple[Tensor, ...]:
    """A model with string columns: one tensor [N] per column, as a caller would send it (BYTES of str
    or None for a string column, FP64 with NaN for a numeric one); a given column as the caller sent it."""
    inputs = []
    for c, (name, string) in enumerate(zip(contract.feature_names, contract.string_columns, strict=True)):
        given = request.given.get(name)
        if given is not None:
            inputs.append(given)
        elif string:
            inputs.append(Tensor(name, (len(table),), "BYTES", [row[c] for row in table]))
        else:
            values = np.array([np.nan if row[c] is None else row[c] for row in table], dtype=np.float64)
            inputs.append(Tensor(name, values.shape, "FP64", values))
    return tuple(inputs)
