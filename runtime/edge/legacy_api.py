"""`POST /predict` and `POST /predict/{model}`: the plain JSON API existing callers use, served by
translating to and from the V2 request the app already serves.

    {"features": [[...], ...]}  ->  {"predictions": [...], "probabilities": [[...], ...],
                                     "model": "...", "version": "...", "timestamp": "..."}

The translated request goes through the same app, so it passes the same admission (auth, rate,
deadline, cap), contract, metrics and logs, and a mistake gets the same status and message as over
V2. `probabilities` is there when the model offers `predict_proba`. `/predict` serves the model
named by PIPELINE_DEFAULT_MODEL. MLServer's own custom handlers do not serve here: they are
registered per model under a fixed path (two models cannot both own /predict) and call the model
directly, past MLServer's dataplane and so past admission and its metrics.
Plain ASGI: it knows nothing of MLServer.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from typing import Any

from runtime.edge.asgi import App, Message, Receive, Scope, Send, json_response, read_body, route_path

ENV_DEFAULT_MODEL = "PIPELINE_DEFAULT_MODEL"
PREFIX = "/predict"
INPUT = "features"
METADATA_TTL_S = 5.0  # a reloaded model may offer other outputs


class LegacyPredict:
    def __init__(self, app: App, default_model: str | None = None):
        self.app = app
        self.default_model = default_model if default_model is not None else configured_default()
        self._offers_proba: dict[str, tuple[float, bool]] = {}

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
            rows = _rows(body)
        except ValueError as problem:
            return await json_response(send, 400, {"error": str(problem)})
        outputs = ["predict"] + (["predict_proba"] if await self._offers(scope, model) else [])
        v2 = {
            "inputs": [{"name": INPUT, "shape": [len(rows), _width(rows)], "datatype": "FP64", "data": rows}],
            "outputs": [{"name": o} for o in outputs],
        }
        status, headers, answer = await _call(
            self.app, scope, "POST", f"/v2/models/{model}/infer", json.dumps(v2).encode()
        )
        if status != 200:
            return await json_response(send, status, json.loads(answer or b"{}"), headers)
        return await json_response(send, 200, _legacyjson_response(json.loads(answer)), headers)

    async def _offers(self, scope: Scope, model: str) -> bool:
        """Whether the model offers predict_proba (its V2 metadata, cached for a few seconds)."""
        cached = self._offers_proba.get(model)
        if cached is not None and time.monotonic() - cached[0] < METADATA_TTL_S:
            return cached[1]
        status, _, body = await _call(self.app, scope, "GET", f"/v2/models/{model}", b"")
        offers = status == 200 and any(o.get("name") == "predict_proba" for o in json.loads(body).get("outputs") or [])
        if status == 200:
            self._offers_proba[model] = (time.monotonic(), offers)
        return offers


def configured_default() -> str | None:
    """The model /predict serves (PIPELINE_DEFAULT_MODEL), if any."""
    return os.environ.get(ENV_DEFAULT_MODEL)


def is_legacy(path: str) -> bool:
    """Whether `path` (as routed) is /predict or /predict/{model}."""
    return path == PREFIX or path.startswith(PREFIX + "/")


def legacy_model(path: str, default_model: str | None) -> str | None:
    """The model a /predict path names: its own, else the default."""
    return path[len(PREFIX) + 1 :] or default_model


def _rows(body: bytes) -> list[Any]:
    try:
        doc = json.loads(body)
    except RecursionError:  # the guard checks the depth of JSON content types only; /predict reads any
        raise ValueError("body nests too deeply") from None
    except ValueError:
        raise ValueError('body is not JSON; send {"features": [[...], ...]}') from None
    if not isinstance(doc, dict) or set(doc) != {"features"}:
        raise ValueError('body must be exactly {"features": [[...], ...]} (one list of numbers per row)')
    rows = doc["features"]
    if not isinstance(rows, list) or not rows or not all(isinstance(r, list) for r in rows):
        raise ValueError('"features" must be a non-empty list of rows, each a list of numbers')
    return rows


def _width(rows: list[Any]) -> int:
    # The first row's: a ragged table is the contract's to name (row and count), as over V2.
    return len(rows[0])


def _legacyjson_response(v2: dict[str, Any]) -> dict[str, Any]:
    outputs = {o["name"]: o for o in v2["outputs"]}
    answer: dict[str, Any] = {"predictions": outputs["predict"]["data"]}
    proba = outputs.get("predict_proba")
    if proba is not None:
        width = proba["shape"][1]
        answer["probabilities"] = [proba["data"][i : i + width] for i in range(0, len(proba["data"]), width)]
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
