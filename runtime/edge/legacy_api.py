"""`POST /predict` and `POST /predict/{model}`: the plain JSON API existing callers use, served by
translating to and from the V2 request the app already serves.

    {"features": [[...], ...]}                 rows, the model's columns in its order
    {"instances": [{"age": 31, ...}, ...]}     records, one object per row, keyed by column
        ->  {"predictions": [...], "probabilities": [[...], ...], "classes": [...],
             "model": "...", "version": "...", "timestamp": "..."}

Rows and records become V2 inputs and the V2 answer comes back through runtime.edge.v2_bridge (shared
with KServe's V1, runtime.edge.v1_api), so /predict passes the same admission, contract, metrics and
logs as V2, with the same messages. `probabilities` (with `classes`, the label of each column) is
there when the model offers `predict_proba`. `/predict` serves the model named by PIPELINE_DEFAULT_MODEL.
MLServer's own custom handlers do not serve here: they are registered per model under a fixed path
(two models cannot both own /predict) and call the model directly, past MLServer's dataplane and
so past admission and its metrics.
Plain ASGI: it knows nothing of MLServer.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

from runtime.edge.asgi import App, Receive, Scope, Send, json_response, read_body, route_path
from runtime.edge.v2_bridge import CLASSES, RECORDS, Answered, Refusal, V2Bridge, as_rows, parse_body, table_inputs

ENV_DEFAULT_MODEL = "PIPELINE_DEFAULT_MODEL"
PREFIX = "/predict"
ROWS = "features"  # the request's rows, and the name of the tensor they become
FORMS = {
    ROWS: f'{{"{ROWS}": [[...], ...]}} (one list of numbers per row)',
    RECORDS: f'{{"{RECORDS}": [{{"column": value, ...}}, ...]}} (one object per row)',
}


class LegacyPredict:
    def __init__(self, app: App, default_model: str | None = None):
        self.app = app
        self.default_model = default_model if default_model is not None else configured_default()
        self.v2 = V2Bridge(app)

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
            form, table = parse_body(body, FORMS)
        except ValueError as problem:
            return await json_response(send, 400, {"error": str(problem)})
        described = await self.v2.describe(scope, model)
        if isinstance(described, Refusal):  # no metadata (an unknown model): its refusal is the answer
            return await described.send(send)
        try:
            inputs = table_inputs(table, form == ROWS, form, described)
        except ValueError as problem:
            return await json_response(send, 400, {"error": str(problem)})
        outputs = ["predict"] + (["predict_proba"] if described.offers_proba else [])
        answered = await self.v2.infer(scope, model, inputs, outputs)
        if isinstance(answered, Refusal):
            return await answered.send(send)
        return await json_response(send, 200, legacy_answer(answered, described.classes), answered.headers)


def configured_default() -> str | None:
    """The model /predict serves (PIPELINE_DEFAULT_MODEL), if any."""
    return os.environ.get(ENV_DEFAULT_MODEL)


def is_legacy(path: str) -> bool:
    """Whether `path` (as routed) is /predict or /predict/{model}."""
    return path == PREFIX or path.startswith(PREFIX + "/")


def legacy_model(path: str, default_model: str | None) -> str | None:
    """The model a /predict path names: its own, else the default."""
    return path[len(PREFIX) + 1 :] or default_model


def legacy_answer(answered: Answered, classes: list[Any] | None) -> dict[str, Any]:
    outputs = answered.outputs
    answer: dict[str, Any] = {"predictions": outputs["predict"]["data"]}
    proba = outputs.get("predict_proba")
    if proba is not None:
        answer["probabilities"] = as_rows(proba)
        answer[CLASSES] = classes
    answer.update(
        model=answered.doc["model_name"],
        version=answered.doc.get("model_version"),
        timestamp=datetime.now(UTC).isoformat(timespec="milliseconds"),
    )
    return answer
