"""The in-flight cap decided from a REST request's head (runtime.policy.gate) and held by the request
guard (runtime.edge.guard) until it is done with the request: the canned 503, the connection it
keeps or closes, and a slot that is given back however the request ends."""

from __future__ import annotations

import asyncio
import json

import pytest

from runtime.core.errors import Unauthenticated
from runtime.edge.body_limits import BodyLimits
from runtime.edge.guard import INFERENCE, SLOT, RequestGuard, Route
from runtime.policy.admin import AdminPolicy
from runtime.policy.admission import HELD, Policy
from runtime.policy.gate import GATE, Full, Gate
from runtime.policy.inflight import IN_FLIGHT, REFUSED


def _policy(name: str, extra: dict) -> Policy:
    return Policy.from_extra(name, "1", extra)


def test_the_gate_caps_only_learned_capped_routes_and_follows_a_reload():
    gate = Gate()
    assert gate.hold(("g-plain", None), dict) is None  # never learned: admission counts it
    gate.learn(("g-plain", None), _policy("g-plain", {}))
    assert gate.hold(("g-plain", None), dict) is None  # no cap
    capped = _policy("g-capped", {"max_in_flight": 1})
    gate.learn(("g-capped", None), capped)
    key = gate.hold(("g-capped", None), dict)
    assert key == ("g-capped", "1") and IN_FLIGHT.per_model[key] == 1
    refused = REFUSED.total["Overloaded"]
    with pytest.raises(Full) as full:
        gate.hold(("g-capped", None), dict)
    assert json.loads(full.value.message) == {
        "error": "model 'g-capped' already has 1 request(s) in flight, its limit; retry later"
    }
    assert REFUSED.total["Overloaded"] == refused + 1 and IN_FLIGHT.per_model[key] == 1
    gate.release(key, True)
    assert IN_FLIGHT.per_model[key] == 0
    # A reload without the cap: the route is no longer capped from the head.
    gate.learn(("g-capped", None), _policy("g-capped", {}))
    assert gate.hold(("g-capped", None), dict) is None


def test_a_full_model_with_tokens_answers_401_before_503(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("good-token\n")
    gate = Gate()
    policy = _policy("g-auth", {"max_in_flight": 1, "auth_token_file": str(tokens)})
    gate.learn(("g-auth", None), policy)
    key = gate.hold(("g-auth", None), dict)  # not full: the token is the guard's to check later
    try:
        with pytest.raises(Unauthenticated):
            gate.hold(("g-auth", None), dict)
        with pytest.raises(Full):
            gate.hold(("g-auth", None), lambda: {"authorization": "Bearer good-token"})
    finally:
        gate.release(key, True)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ the guard


def _router(scope):
    return Route(INFERENCE, scope["path"].split("/")[3])


async def _authorize(name, version, headers):
    return None


class App:
    """Records what it saw, then answers, fails or waits for the client to leave."""

    def __init__(self, outcome: str = "answer") -> None:
        self.outcome = outcome
        self.held: list = []
        self.in_flight: list[int] = []

    async def __call__(self, scope, receive, send):
        self.held.append(HELD.get())
        self.in_flight.append(IN_FLIGHT.per_model[("g-guard", "1")])
        if self.outcome == "raise":
            raise RuntimeError("the app failed")
        if self.outcome == "disconnect":
            while (await receive())["type"] != "http.disconnect":
                pass
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
def capped():
    GATE.learn(("g-guard", None), _policy("g-guard", {"max_in_flight": 1}))
    yield ("g-guard", "1")
    assert IN_FLIGHT.per_model[("g-guard", "1")] == 0  # every test gives its slot back


def _drive(app, headers=(), scope_extra=None, body=b"{}"):
    guard = RequestGuard(app, BodyLimits(max_bytes=1 << 20), AdminPolicy("token", "test", None), _router, _authorize)
    sent: list = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v2/models/g-guard/infer",
        "headers": list(headers) or [(b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 1),
        **(scope_extra or {}),
    }
    asyncio.run(guard(scope, receive, send))
    return sent


@pytest.mark.parametrize("outcome", ["answer", "raise", "disconnect"])
def test_the_guard_holds_the_slot_while_the_app_runs_and_gives_it_back_however_it_ends(capped, outcome):
    app = App(outcome)
    if outcome == "raise":
        with pytest.raises(RuntimeError):
            _drive(app)
    else:
        _drive(app)
    assert app.held == [capped] and app.in_flight == [1]
    assert HELD.get() is None


def test_a_slot_taken_by_the_protocol_is_released_by_the_guard(capped):
    key = GATE.hold(("g-guard", None), dict)
    app = App()
    _drive(app, scope_extra={SLOT: key})
    assert app.in_flight == [1]  # not taken twice


@pytest.mark.parametrize(
    "length,expect,closes",
    [(2, False, False), (64 * 1024, False, False), (64 * 1024 + 1, False, True), (None, False, True), (2, True, True)],
)
def test_the_canned_503_keeps_the_connection_unless_a_large_body_is_left_unread(capped, length, expect, closes):
    key = GATE.hold(("g-guard", None), dict)  # the model is full
    try:
        app = App()
        headers = [(b"transfer-encoding", b"chunked")] if length is None else []
        if expect:  # the body waits for a 100 Continue that a refusal never sends
            headers += [(b"content-length", str(length).encode()), (b"expect", b"100-continue")]
        sent = _drive(app, headers=headers, body=b"x" * (length or 0))
    finally:
        GATE.release(key, True)  # type: ignore[arg-type]
    assert app.held == []  # the app never ran: nothing of the body read
    start, body = sent
    fields = dict(start["headers"])
    assert start["status"] == 503 and fields[b"retry-after"] == b"1"
    assert (fields.get(b"connection") == b"close") is closes
    assert b"already has 1 request(s) in flight" in body["body"]
