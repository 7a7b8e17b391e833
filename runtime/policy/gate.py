"""The in-flight cap (`max_in_flight`) decided from a REST request's head, before its body is read.

Why: a refusal decided after the body is read and parsed costs about what an answer costs, and
under overload a refused client sends its next request at once: the refusals take the time the
answers need (docs/performance.md, overload). A refusal is decided from the request head.

A REST request for a capped model takes its slot here, from the route its head names (the edge's
runtime.edge.guard, first thing), and holds it until the edge is done with it: its response sent,
or it failed, or the client left. In flight therefore counts from admission to the response, not
only around the model call, and no request past the cap has its body read. The request's task
carries the slot (`HELD`), so admission in the DataPlane (runtime.integration.dataplane) neither
checks the cap again nor counts the request twice. gRPC, and the first request for a route, are
capped there as before (the first one teaches the gate the route's policy: `learn`).

Plain Python: knows nothing of MLServer or ASGI.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import NamedTuple

from runtime.core.errors import Overloaded
from runtime.policy.admission import HELD, Policy
from runtime.policy.inflight import IN_FLIGHT, REFUSED, Key

__all__ = ["GATE", "HELD", "Full", "Gate"]
Route = tuple[str, str | None]  # the model and version as the request's path names them (None: the default)


class Full(Exception):
    """The route's model has its `max_in_flight` requests in flight: its canned refusal (counted)."""

    def __init__(self, message: bytes) -> None:
        super().__init__()
        self.message = message


class _Capped(NamedTuple):
    policy: Policy
    refusal: Overloaded  # one per model: counted by its type, its message the same every time
    message: bytes  # the 503's JSON body, rendered once


class Gate:
    """The capped models' policies by route, learned from the requests admitted the usual way."""

    def __init__(self) -> None:
        self._routes: dict[Route, _Capped] = {}

    def learn(self, route: Route, policy: Policy) -> None:
        """`policy` is the one of the model `route` names now (a reload may change it, or the cap)."""
        known = self._routes.get(route)
        if known is not None and known.policy is policy:
            return
        cap = policy.options.max_in_flight
        if not cap:
            self._routes.pop(route, None)
            return
        refusal = Overloaded(f"model '{policy.name}' already has {cap} request(s) in flight, its limit; retry later")
        message = json.dumps({"error": str(refusal)}).encode()
        self._routes[route] = _Capped(policy, refusal, message)

    def hold(self, route: Route, credentials: Callable[[], Mapping[str, str]]) -> Key | None:
        """The slot taken for a request on `route` (its key; release it with `release`), None if the
        gate does not cap the route, or Full. A full model still checks the bearer token first
        (401 before 503, as admission orders them); the rate limit and deadline are not consulted:
        the request would not run either way."""
        capped = self._routes.get(route)
        if capped is None:
            return None
        policy = capped.policy
        key = policy.key
        if IN_FLIGHT.per_model[key] >= policy.options.max_in_flight:
            if policy.authenticator is not None:
                policy.authenticate(credentials())  # Unauthenticated, counted
            REFUSED.add(policy.name, capped.refusal)
            raise Full(capped.message)
        IN_FLIGHT.enter(key)
        return key

    @staticmethod
    def release(key: Key, ok: bool) -> None:
        """The slot `hold` took, given back once the edge is done with the request (`ok`: answered
        with a status below 400)."""
        IN_FLIGHT.leave(key, ok)


GATE = Gate()
