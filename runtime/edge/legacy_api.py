"""`POST /predict` and `POST /predict/{model}`: the plain JSON API existing callers use, served by
translating to and from the V2 request the app already serves.

    {"features": [[...], ...]}                 rows, the model's columns in its order
    {"instances": [{"age": 31, ...}, ...]}     records, one object per row, keyed by column
        ->  {"predictions": [...], "probabilities": [[...], ...], "classes": [...],
             "model": "...", "version": "...", "timestamp": "..."}

Rows become one [N, F] tensor, records one tensor per column (the model's columns, from its V2
metadata), their values as sent: the contract judges them, so a wrong value gets the same message
as over V2. The translated request goes through the same app, so it passes the same admission
(auth, rate, deadline, cap), contract, metrics and logs, and a mistake gets the same status and
message as over V2. `probabilities` (with `classes`, the label of each column) is there when the
model offers `predict_proba`. `/predict` serves the model named by PIPELINE_DEFAULT_MODEL.
MLServer's own custom handlers do not serve here: they are registered per model under a fixed path
(two models cannot both own /predict) and call the model directly, past MLServer's dataplane and
so past admission and its metrics.
Plain ASGI: it knows nothing of MLServer.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from runtime.edge.asgi import App, Message, Receive, Scope, Send, json_response, read_body, route_path

ENV_DEFAULT_MODEL = "PIPELINE_DEFAULT_MODEL"
PREFIX = "/predict"
ROWS = "features"  # the request's rows, and the name of the tensor they become
RECORDS = "instances"
CLASSES = "classes"  # the metadata parameter (runtime.integration.v2) and the answer's key
METADATA_TTL_S = 5.0  # a reloaded model may offer other outputs
FORMS = (
    f'{{"{ROWS}": [[...], ...]}} (one list of numbers per row) '
    f'or {{"{RECORDS}": [{{"column": value, ...}}, ...]}} (one object per row)'
)


@dataclass(frozen=True)
class Refusal:
    """The app's answer when it would not describe the model."""

    status: int
    headers: list[tuple[bytes, bytes]]
    error: Any


@dataclass(frozen=True)
class Described:
    """What /predict needs of a model's V2 metadata."""

    feature_names: tuple[str, ...]
    offers_proba: bool
    classes: list[Any] | None
    # Each column's datatype, for a model with string columns (which takes one tensor per column).
    column_datatypes: dict[str, str] = field(default_factory=dict)


class LegacyPredict:
    def __init__(self, app: App, default_model: str | None = None):
        self.app = app
        self.default_model = default_model if default_model is not None else configured_default()
        self._described: dict[str, tuple[float, Described]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = route_path(scope) if scope["type"] == "http" else ""
        if not is_legacy(path):
            return await self.app(scope, receive, send)
        if scope["method"] != "POST":
            return await json_response(send, 405, {"error": f"{path}: use POST"})
        model = legacy_model(path, self.default_model)
        if not model or "/" in model:
            return await json_response(
                send,
                404,
                {"error": f"{path}: no such model; POST /predict/{{model}} (or set {ENV_DEFAULT_MODEL} for /predict)"},
            )
        body = await read_body(receive)
        try:
            form, table = parse_body(body)
        except ValueError as problem:
            return await json_response(send, 400, {"error": str(problem)})
        described = await self._describe(scope, model)
        if isinstance(described, Refusal):  # no metadata (an unknown model): its refusal is the answer
            return await json_response(send, described.status, described.error, described.headers)
        try:
            if form == ROWS and not described.column_datatypes:
                inputs = row_inputs(table)
            else:
                records = _as_records(table, described.feature_names) if form == ROWS else table
                inputs = record_inputs(records, described.feature_names, described.column_datatypes)
        except ValueError as problem:
            return await json_response(send, 400, {"error": str(problem)})
        outputs = ["predict"] + (["predict_proba"] if described.offers_proba else [])
        v2 = {"inputs": inputs, "outputs": [{"name": o} for o in outputs]}
        status, headers, answer = await _call(
            self.app, scope, "POST", f"/v2/models/{model}/infer", json.dumps(v2).encode()
        )
        if status != 200:
            return await json_response(send, status, json.loads(answer or b"{}"), headers)
        return await json_response(send, 200, legacy_answer(json.loads(answer), described.classes), headers)

    async def _describe(self, scope: Scope, model: str) -> Described | Refusal:
        """What the model's V2 metadata says /predict needs (cached for a few seconds)."""
        cached = self._described.get(model)
        if cached is not None and time.monotonic() - cached[0] < METADATA_TTL_S:
            return cached[1]
        status, headers, body = await _call(self.app, scope, "GET", f"/v2/models/{model}", b"")
        if status != 200:
            return Refusal(status, headers, json.loads(body or b"{}"))
        found = model_description(json.loads(body))
        self._described[model] = (time.monotonic(), found)
        return found


def configured_default() -> str | None:
    """The model /predict serves (PIPELINE_DEFAULT_MODEL), if any."""
    return os.environ.get(ENV_DEFAULT_MODEL)


def is_legacy(path: str) -> bool:
    """Whether `path` (as routed) is /predict or /predict/{model}."""
    return path == PREFIX or path.startswith(PREFIX + "/")


def legacy_model(path: str, default_model: str | None) -> str | None:
    """The model a /predict path names: its own, else the default."""
    return path[len(PREFIX) + 1 :] or default_model


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


def parse_body(body: bytes) -> tuple[str, list[Any]]:
    """The request's form (rows or records) and its non-empty list of rows."""
    try:
        doc = json.loads(body)
    except RecursionError:  # the guard checks the depth of JSON content types only; /predict reads any
        raise ValueError("body nests too deeply") from None
    except ValueError:
        raise ValueError(f"body is not JSON; send {FORMS}") from None
    if not isinstance(doc, dict) or len(doc) != 1 or not set(doc) <= {ROWS, RECORDS}:
        keys = ", ".join(f"'{k}'" for k in doc) if isinstance(doc, dict) and doc else "none"
        raise ValueError(f"body must be exactly {FORMS}; keys sent: {keys}")
    ((form, table),) = doc.items()
    if not isinstance(table, list) or not table:
        raise ValueError(f'"{form}" must be a non-empty list of rows; send {FORMS}')
    return form, table


def row_inputs(rows: list[Any]) -> list[dict[str, Any]]:
    for row, values in enumerate(rows):
        if not isinstance(values, list):
            raise ValueError(f"input '{ROWS}': row {row}: expected a list of numbers, got {_kind(values)}")
    # The first row's width: a ragged table is the contract's to name (row and count), as over V2.
    return [{"name": ROWS, "shape": [len(rows), len(rows[0])], "datatype": "FP64", "data": rows}]


def _as_records(rows: list[Any], names: Sequence[str]) -> list[Any]:
    """Rows of a model with string columns, as records: it takes one tensor per column."""
    for row, values in enumerate(rows):
        if not isinstance(values, list):
            raise ValueError(f"input '{ROWS}': row {row}: expected a list of values, got {_kind(values)}")
        if len(values) != len(names):
            raise ValueError(f"input '{ROWS}': row {row} has {len(values)} values, expected {len(names)}")
    return [dict(zip(names, values, strict=True)) for values in rows]


def record_inputs(
    records: list[Any], names: Sequence[str], datatypes: Mapping[str, str] = MappingProxyType({})
) -> list[dict[str, Any]]:
    """One tensor per column, in the model's order, its values as sent (the contract judges them), of
    the column's datatype where the model describes one, else as the values look."""
    known = set(names)
    for row, record in enumerate(records):
        where = f"input '{RECORDS}': row {row}"
        if not isinstance(record, dict):
            raise ValueError(f"{where}: expected an object of column: value, got {_kind(record)}")
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


def _kind(value: Any) -> str:
    """What a JSON value is, in JSON's words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    kinds: dict[type, str] = {list: "a list", dict: "an object", str: "a string"}
    return kinds.get(type(value), "a number")


def legacy_answer(v2: dict[str, Any], classes: list[Any] | None) -> dict[str, Any]:
    outputs = {o["name"]: o for o in v2["outputs"]}
    answer: dict[str, Any] = {"predictions": outputs["predict"]["data"]}
    proba = outputs.get("predict_proba")
    if proba is not None:
        width = proba["shape"][1]
        answer["probabilities"] = [proba["data"][i : i + width] for i in range(0, len(proba["data"]), width)]
        answer[CLASSES] = classes
    answer.update(
        model=v2["model_name"],
        version=v2.get("model_version"),
        timestamp=datetime.now(UTC).isoformat(timespec="milliseconds"),
    )
    return answer


async def _call(
    app: App, scope: Scope, method: str, path: str, body: bytes
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

    await app(inner, receive, send)
    return status, response_headers, b"".join(chunks)
