"""KServe's V1 protocol for the same models, as KServe's model server speaks it (its sklearn server
speaks V1 by default, and so do its users' clients: `kserve.InferenceRESTClient` with protocol "v1"):

    GET  /v1/models                   {"models": ["diabetes", ...]}    the ready models
    GET  /v1/models/{model}           {"name": "diabetes", "ready": true}, 503 while not ready
    POST /v1/models/{model}:predict   {"instances": [...]} -> {"predictions": [...]}
                                      (or {"inputs": [...]}, which KServe's servers read alike)

An instance is a row (a list, the model's columns in its order) or a record (an object keyed by
column; the only form that names the columns, so the one to use for a model with string columns);
all instances of a request take the same form. They become V2 inputs, and the V2 answer comes back,
through runtime.edge.v2_bridge (shared with /predict), so V1 passes the same admission (a model's
bearer token, rate, deadline, cap), contract, metrics and logs as V2, with the same messages, in
the runtime's `{"error": ...}` (as KServe's server answers too). `predictions` is the model's
`predict` output, one value per instance, as KServe's sklearn server answers.

The request guard decides from the head which of these a path is (`v1_route`, the same parse as
here), so an unknown path or model and a missing token are refused before the body is read. The
list names what the repository index names, so it sits behind the repository API's lock; a model's
status is as open as V2's `/v2/models/{model}/ready`. Plain ASGI: it knows nothing of MLServer.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from runtime.edge.asgi import App, Receive, Scope, Send, json_response, read_body, route_path
from runtime.edge.guard import INFERENCE, OTHER, REPOSITORY, Route
from runtime.edge.v2_bridge import RECORDS, Refusal, V2Bridge, as_rows, kind, parse_body, table_inputs

PREFIX = "/v1/models"
VERB = ":predict"
INPUTS = "inputs"  # KServe's servers take the instances under this key too
FORMS = {
    RECORDS: f'{{"{RECORDS}": [[...], ...]}} (one list of the model\'s column values per row) '
    f'or {{"{RECORDS}": [{{"column": value, ...}}, ...]}} (one object per row)',
    INPUTS: f'{{"{INPUTS}": ...}} (the same)',
}
_READY = 200
_NOT_FOUND = 404


class Endpoint(NamedTuple):
    method: str
    kind: str  # the guard's kind of route (runtime.edge.guard): who may call it


LIST = Endpoint("GET", REPOSITORY)
STATUS = Endpoint("GET", OTHER)
PREDICT = Endpoint("POST", INFERENCE)


class V1Target(NamedTuple):
    endpoint: Endpoint
    model: str | None


def v1_target(path: str) -> V1Target | None:
    """The V1 endpoint and model a path (as routed) names; None when it is not a V1 path. A model's
    name is one path segment; `:predict` at its end asks for predictions, as in KServe's routes."""
    if path == PREFIX:
        return V1Target(LIST, None)
    if not path.startswith(PREFIX + "/"):
        return None
    name = path[len(PREFIX) + 1 :]
    if not name or "/" in name:
        return None
    if name.endswith(VERB) and len(name) > len(VERB):
        return V1Target(PREDICT, name[: -len(VERB)])
    return V1Target(STATUS, name)


def v1_route(path: str) -> Route | None:
    """The guard's route for a V1 path, whatever the method (a wrong one is a 405 here); None when
    `path` is not one."""
    found = v1_target(path)
    return None if found is None else Route(found.endpoint.kind, found.model)


class V1Api:
    def __init__(self, app: App):
        self.app = app
        self.v2 = V2Bridge(app)
        self._serve = {LIST: self._list, STATUS: self._status, PREDICT: self._predict}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = route_path(scope) if scope["type"] == "http" else ""
        found = v1_target(path)
        if found is None:
            return await self.app(scope, receive, send)
        endpoint, model = found
        if scope["method"] != endpoint.method:
            allow = [(b"allow", endpoint.method.encode())]
            return await json_response(send, 405, {"error": f"{path}: use {endpoint.method}"}, allow)
        await self._serve[endpoint](scope, receive, send, model or "")

    async def _list(self, scope: Scope, receive: Receive, send: Send, _: str) -> None:
        status, headers, body = await self.v2.call(scope, "POST", "/v2/repository/index", b'{"ready": true}')
        if status != _READY:
            return await Refusal.of(status, headers, body).send(send)
        names = dict.fromkeys(entry["name"] for entry in json.loads(body))  # a name per version: once each
        await json_response(send, 200, {"models": list(names)})

    async def _status(self, scope: Scope, receive: Receive, send: Send, model: str) -> None:
        status, headers, body = await self.v2.call(scope, "GET", f"/v2/models/{model}/ready")
        if status == _READY:
            return await json_response(send, 200, {"name": model, "ready": True}, headers)
        if status == _NOT_FOUND:  # the runtime's own words for an unknown model
            return await Refusal.of(status, headers, body).send(send)
        # Loaded but not ready (V2 answers a bare 400): KServe's server answers 503.
        await json_response(send, 503, {"error": f"model '{model}' is not ready"}, headers)

    async def _predict(self, scope: Scope, receive: Receive, send: Send, model: str) -> None:
        try:
            form, instances = parse_body(await read_body(receive), FORMS)
            by_rows = instances_are_rows(instances, form)
        except ValueError as problem:
            return await json_response(send, 400, {"error": str(problem)})
        described = await self.v2.describe(scope, model)
        if isinstance(described, Refusal):
            return await described.send(send)
        try:
            inputs = table_inputs(instances, by_rows, form, described)
        except ValueError as problem:
            return await json_response(send, 400, {"error": str(problem)})
        answered = await self.v2.infer(scope, model, inputs, ["predict"])
        if isinstance(answered, Refusal):
            return await answered.send(send)
        predictions: list[Any] = as_rows(answered.outputs["predict"])
        await json_response(send, 200, {"predictions": predictions}, answered.headers)


def instances_are_rows(instances: list[Any], source: str) -> bool:
    """Whether the instances (sent under `source`) are rows, else records, as the first says; the
    translation names any later one of the other form."""
    first = instances[0]
    if isinstance(first, list | dict):
        return isinstance(first, list)
    raise ValueError(
        f"input '{source}': row 0: expected a list of the model's column values or an object of "
        f"column: value, got {kind(first)}"
    )
