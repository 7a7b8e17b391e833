"""Another JSON API served through the V2 app in the same process: `POST /predict` (legacy_api) and
KServe's V1 (v1_api) each translate their request to a V2 one, and the V2 answer back, through this.

- `V2Bridge` calls the app behind the API in V2 on the request's behalf (its headers: auth, timeouts,
  the peer), so the translated request passes the same admission (auth, rate, deadline, cap),
  contract, metrics and logs as one sent over V2, and a mistake gets the same status and message. It
  reads a model's columns from its V2 metadata (cached for a few seconds).
- `table_inputs`: a table of rows (lists, the model's columns in its order) or records (objects keyed
  by column) as V2 input tensors. Rows of a model whose columns are all numeric become one [N, F]
  tensor; anything else one tensor per column, in the model's order, of the datatype its metadata
  gives (BYTES for a string column). Values go as sent: the contract judges them, so a wrong value
  gets the same message as over V2.
Plain ASGI: it knows nothing of MLServer.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from runtime.edge.asgi import App, Message, RawHeaders, Scope, Send, json_response

RECORDS = "instances"  # where records come from, in both APIs
CLASSES = "classes"  # the metadata parameter with the class labels (runtime.integration.v2)
METADATA_TTL_S = 5.0  # a reloaded model may offer other columns and outputs


@dataclass(frozen=True)
class Refusal:
    """The app's answer when it did not serve the call: passed on to the client as it is."""

    status: int
    headers: RawHeaders
    error: Any

    @classmethod
    def of(cls, status: int, headers: RawHeaders, body: bytes) -> Refusal:
        return cls(status, headers, json.loads(body or b"{}"))

    async def send(self, send: Send) -> None:
        await json_response(send, self.status, self.error, self.headers)


@dataclass(frozen=True)
class Described:
    """What a translation needs of a model's V2 metadata."""

    feature_names: tuple[str, ...]
    offers_proba: bool
    classes: list[Any] | None
    # Each column's datatype, for a model with string columns (which takes one tensor per column).
    column_datatypes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Answered:
    """The app's V2 inference answer: its headers (the request id it set) and its document."""

    headers: RawHeaders
    doc: dict[str, Any]

    @property
    def outputs(self) -> dict[str, dict[str, Any]]:
        return {o["name"]: o for o in self.doc["outputs"]}


class V2Bridge:
    def __init__(self, app: App):
        self.app = app
        self._described: dict[str, tuple[float, Described]] = {}

    async def describe(self, scope: Scope, model: str) -> Described | Refusal:
        """What the model's V2 metadata says a translation needs (cached for a few seconds)."""
        cached = self._described.get(model)
        if cached is not None and time.monotonic() - cached[0] < METADATA_TTL_S:
            return cached[1]
        status, headers, body = await self.call(scope, "GET", f"/v2/models/{model}")
        if status != 200:
            return Refusal.of(status, headers, body)
        found = model_description(json.loads(body))
        self._described[model] = (time.monotonic(), found)
        return found

    async def infer(
        self, scope: Scope, model: str, inputs: list[dict[str, Any]], outputs: list[str]
    ) -> Answered | Refusal:
        v2 = {"inputs": inputs, "outputs": [{"name": o} for o in outputs]}
        status, headers, body = await self.call(scope, "POST", f"/v2/models/{model}/infer", json.dumps(v2).encode())
        if status != 200:
            return Refusal.of(status, headers, body)
        return Answered(headers, json.loads(body))

    async def call(
        self, scope: Scope, method: str, path: str, body: bytes = b""
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """The app's answer to a request like `scope` (its headers: auth, timeouts, the peer) on
        another method and path."""
        # Not accept-encoding: the answer is read here, and MLServer would gzip it.
        dropped = (b"content-length", b"content-type", b"accept-encoding")
        headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() not in dropped]
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        inner = {
            **scope,
            "method": method,
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": headers,
        }
        sent = False
        status, response_headers, chunks = 500, [], []

        async def receive() -> Message:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: Message) -> None:
            nonlocal status, response_headers
            if message["type"] == "http.response.start":
                status, response_headers = message["status"], list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(inner, receive, send)
        return status, response_headers, b"".join(chunks)


def model_description(metadata: dict[str, Any]) -> Described:
    """The model's columns, whether it offers predict_proba and its class labels, from its V2
    metadata (runtime.core.response describes the input, runtime.integration.v2 adds the classes)."""
    inputs = metadata.get("inputs") or []
    parameters = [i.get("parameters") or {} for i in inputs]
    names = next((p["feature_names"] for p in parameters if "feature_names" in p), "")
    classes = (metadata.get("parameters") or {}).get(CLASSES)
    # A model with string columns describes one tensor per column, with its datatype.
    columns = {} if names else {i.get("name", ""): i.get("datatype", "FP64") for i in inputs}
    return Described(
        feature_names=tuple(names.split(",")) if names else tuple(columns),
        column_datatypes=columns,
        offers_proba=any(o.get("name") == "predict_proba" for o in metadata.get("outputs") or []),
        classes=json.loads(classes) if classes is not None else None,
    )


def parse_body(body: bytes, forms: Mapping[str, str]) -> tuple[str, list[Any]]:
    """The request's form (its one key, of `forms`: key -> the body it names, as a refusal shows it)
    and its non-empty list of rows."""
    hint = " or ".join(forms.values())
    try:
        doc = json.loads(body)
    except RecursionError:  # the guard checks the depth of JSON content types only; these APIs read any
        raise ValueError("body nests too deeply") from None
    except ValueError:
        raise ValueError(f"body is not JSON; send {hint}") from None
    if not isinstance(doc, dict) or len(doc) != 1 or not set(doc) <= set(forms):
        keys = ", ".join(f"'{k}'" for k in doc) if isinstance(doc, dict) and doc else "none"
        raise ValueError(f"body must be exactly {hint}; keys sent: {keys}")
    ((form, table),) = doc.items()
    if not isinstance(table, list) or not table:
        raise ValueError(f'"{form}" must be a non-empty list of rows; send {hint}')
    return form, table


def table_inputs(table: list[Any], by_rows: bool, source: str, described: Described) -> list[dict[str, Any]]:
    """The V2 inputs of a table of rows (`by_rows`) or records, named `source` in a refusal."""
    if by_rows and not described.column_datatypes:
        return row_inputs(table, source)
    records = rows_as_records(table, described.feature_names, source) if by_rows else table
    return record_inputs(records, described.feature_names, source, described.column_datatypes)


def row_inputs(rows: list[Any], source: str) -> list[dict[str, Any]]:
    """Rows as one [N, F] tensor named `source`."""
    for row, values in enumerate(rows):
        if not isinstance(values, list):
            raise ValueError(f"input '{source}': row {row}: expected a list of numbers, got {kind(values)}")
    # The first row's width: a ragged table is the contract's to name (row and count), as over V2.
    return [{"name": source, "shape": [len(rows), len(rows[0])], "datatype": "FP64", "data": rows}]


def rows_as_records(rows: list[Any], names: Sequence[str], source: str) -> list[Any]:
    """Rows of a model with string columns, as records: it takes one tensor per column."""
    for row, values in enumerate(rows):
        if not isinstance(values, list):
            raise ValueError(f"input '{source}': row {row}: expected a list of values, got {kind(values)}")
        if len(values) != len(names):
            raise ValueError(f"input '{source}': row {row} has {len(values)} values, expected {len(names)}")
    return [dict(zip(names, values, strict=True)) for values in rows]


def record_inputs(
    records: list[Any], names: Sequence[str], source: str, datatypes: Mapping[str, str] = MappingProxyType({})
) -> list[dict[str, Any]]:
    """One tensor per column, in the model's order, its values as sent (the contract judges them), of
    the column's datatype where the model describes one, else as the values look."""
    known = set(names)
    for row, record in enumerate(records):
        where = f"input '{source}': row {row}"
        if not isinstance(record, dict):
            raise ValueError(f"{where}: expected an object of column: value, got {kind(record)}")
        unknown = [k for k in record if k not in known]
        if unknown:
            raise ValueError(f"{where}: unknown column '{unknown[0]}'; this model's columns: {', '.join(names)}")
        missing = [n for n in names if n not in record]
        if missing:
            raise ValueError(f"{where}: missing column '{missing[0]}' (a missing value is sent as null)")
    columns = {n: [r[n] for r in records] for n in names}
    return [
        {"name": n, "shape": [len(records)], "datatype": datatypes.get(n) or _datatype(v), "data": v}
        for n, v in columns.items()
    ]


def _datatype(values: list[Any]) -> str:
    # A column of strings is BYTES (a string column, else the contract's refusal of one); any other
    # column is numbers, where the contract names the first value that is not one.
    sent = [v for v in values if v is not None]
    return "BYTES" if sent and all(isinstance(v, str) for v in sent) else "FP64"


def kind(value: Any) -> str:
    """What a JSON value is, in JSON's words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    kinds: dict[type, str] = {list: "a list", dict: "an object", str: "a string"}
    return kinds.get(type(value), "a number")


def as_rows(output: Mapping[str, Any]) -> list[Any]:
    """A V2 output's flat data nested as its shape says: a list per row where it has columns."""
    data: list[Any] = output["data"]
    shape = output.get("shape") or [len(data)]
    if len(shape) < 2:
        return data
    width = math.prod(shape[1:])
    return [data[i * width : (i + 1) * width] for i in range(shape[0])]
