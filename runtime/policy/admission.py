"""Admission: what a request must pass before it reaches the model, in the server process.

    bearer token (401) -> the client's rate (429) -> deadline: the header's, else the model's
    default, capped by gRPC's -> passed (504) -> the model's in-flight cap reached (503)

A refused request costs no computation and no worker round trip. The integration package calls
`admit()` once per request, after MLServer found the model (404 as before) and before MLServer
hands the request to the model, its batcher or a parallel worker (runtime.integration.dataplane).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from runtime.core.errors import DeadlineExceeded, Overloaded, RateLimited, Unauthenticated
from runtime.core.options import AdmissionOptions
from runtime.observation import metrics
from runtime.policy import auth
from runtime.policy.deadlines import check_deadline, settle_deadline
from runtime.policy.inflight import IN_FLIGHT, REFUSED, Key
from runtime.policy.ratelimit import RateLimiter

logger = logging.getLogger("runtime.policy.admission")

REFUSALS = (Overloaded, DeadlineExceeded, RateLimited)
# The transports stamp the peer address here (a client's own value is overwritten).
PEER_HEADER = "x-pipeline-peer"
# The model whose in-flight slot the current request already holds: set by the REST edge for the
# request's own task (runtime.policy.gate), which decided the cap from the head and counts the
# request until its response is sent. Admission then neither checks the cap nor counts it again.
HELD: ContextVar[Key | None] = ContextVar("pipeline_inflight_slot", default=None)


@dataclass(frozen=True)
class Policy:
    """One loaded model version's admission settings."""

    name: str
    version: str | None
    options: AdmissionOptions
    authenticator: auth.Authenticator | None
    limiter: RateLimiter | None = None

    @classmethod
    def from_extra(cls, name: str, version: str | None, extra: dict[str, Any] | None) -> Policy:
        try:
            options = AdmissionOptions.model_validate(extra or {})
        except ValidationError:
            # Not ours to judge (another runtime's model, or one whose load refused these options).
            options = AdmissionOptions()
        authenticator = auth.from_options(options.auth_token_file, options.auth_token_env)
        if options.max_in_flight or options.request_timeout_ms or authenticator or options.rate_limit_per_s:
            logger.info(
                "admission for model %s version %s: max_in_flight=%s request_timeout_ms=%s auth=%s rate_limit=%s",
                name,
                version,
                options.max_in_flight or "off",
                options.request_timeout_ms or "off",
                authenticator.source.description if authenticator else "off",
                f"{options.rate_limit_per_s:g}/s burst {options.burst}" if options.rate_limit_per_s else "off",
            )
        limiter = None
        if options.rate_limit_per_s is not None:
            limiter = RateLimiter(options.rate_limit_per_s, options.burst)
        return cls(name, version, options, authenticator, limiter)

    @property
    def key(self) -> Key:
        return (self.name, self.version)

    def authenticate(self, headers: Mapping[str, str]) -> str | None:
        """The client's token id, None when the model needs no token, or Unauthenticated (counted).
        REST asks from the request head (runtime.edge.guard), before the body is read."""
        if self.authenticator is None:
            return None
        try:
            return self.authenticator.check(headers)
        except Unauthenticated as error:
            REFUSED.add(self.name, error)
            raise

    def admit(self, headers: dict[str, str]) -> None:
        """Refuse the request (and count the refusal), or return with its deadline settled."""
        client = self.authenticate(headers) or headers.get(PEER_HEADER, "unknown peer")
        headers.pop(auth.HEADER, None)  # consumed: not sent on to workers or logs
        try:
            if self.limiter is not None:
                self._limit(client)
            settle_deadline(headers, self.options.request_timeout_ms)
            check_deadline(headers, "the request was admitted")
            cap = self.options.max_in_flight
            if cap and not self.holds_slot() and IN_FLIGHT.per_model[self.key] >= cap:
                raise Overloaded(f"model '{self.name}' already has {cap} request(s) in flight, its limit; retry later")
        except REFUSALS as error:
            REFUSED.add(self.name, error)
            raise

    def holds_slot(self) -> bool:
        """Whether the current request is counted in flight for this model already (by the edge)."""
        return HELD.get() == self.key

    def _limit(self, client: str) -> None:
        wait = self.limiter.take(client)  # type: ignore[union-attr]
        if wait is not None:
            # Token ids are as many as the configured tokens; addresses are not: one label.
            metrics.count_rate_limited(self.name, client if client.startswith("token-") else "by-address")
            raise RateLimited(
                f"client {client} is over its rate for model '{self.name}' "
                f"({self.options.rate_limit_per_s:g}/s, burst {self.options.burst}); "
                f"retry after {wait:.2f} s"
            )
