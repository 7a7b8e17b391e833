"""Who may call the model repository API (index, load, unload) over REST and gRPC.

    PIPELINE_ADMIN_TOKEN_FILE / PIPELINE_ADMIN_TOKENS   admin bearer tokens (a file, one a line;
                                                        or comma-separated), distinct from the
                                                        inference tokens
    PIPELINE_ADMIN_API=off                              the repository API refuses every call

With an admin token the API needs it (401 otherwise). Without one it stays open only on a loopback
address and only when inference needs no token server-wide: `make serve` on 127.0.0.1 keeps it
open (and says so at start); a pod listening on 0.0.0.0, or a server whose inference needs a
token, refuses repository calls (403) until an admin token is set, so nobody unloads a model
that inference guards.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

from runtime.core.errors import AdminDisabled, AdminUnauthenticated, Unauthenticated
from runtime.policy import auth

ENV_ADMIN_TOKEN_FILE = "PIPELINE_ADMIN_TOKEN_FILE"
ENV_ADMIN_TOKENS = "PIPELINE_ADMIN_TOKENS"
ENV_ADMIN_API = "PIPELINE_ADMIN_API"
REPOSITORY_PATH = "/v2/repository"

logger = logging.getLogger("runtime.policy.admin")


@dataclass(frozen=True)
class AdminPolicy:
    mode: str  # "token", "open" or "off"
    reason: str
    authenticator: auth.Authenticator | None = None

    @classmethod
    def from_env(cls, host: str, env: Mapping[str, str] | None = None) -> AdminPolicy:
        env = os.environ if env is None else env
        if env.get(ENV_ADMIN_API, "").strip().lower() == "off":
            return cls("off", f"{ENV_ADMIN_API}=off")
        if env.get(ENV_ADMIN_TOKEN_FILE):
            return cls("token", "admin token file", auth.Authenticator(auth.FileTokens(env[ENV_ADMIN_TOKEN_FILE])))
        if env.get(ENV_ADMIN_TOKENS):
            return cls("token", "admin tokens", auth.Authenticator(auth.EnvTokens(ENV_ADMIN_TOKENS, env)))
        if env.get(auth.ENV_TOKEN_FILE) or auth.ENV_TOKENS in env:
            return cls("off", f"inference needs a token but no admin token is set ({ENV_ADMIN_TOKENS})")
        if not _loopback(host):
            return cls("off", f"listening on {host} without an admin token ({ENV_ADMIN_TOKENS})")
        # The one warning of a default start: the user's to act on, so it says how.
        return cls(
            "open",
            f"listening on loopback {host} without an admin token: anyone on this machine may load and "
            f"unload models; set {ENV_ADMIN_TOKENS} (or {ENV_ADMIN_API}=off) to close it",
        )

    def announce(self) -> None:
        level = logging.WARNING if self.mode == "open" else logging.INFO
        logger.log(level, "model repository API (load/unload/index): %s (%s)", self.mode, self.reason)

    def check(self, headers: Mapping[str, str]) -> None:
        """Raise AdminDisabled / AdminUnauthenticated unless this call may go through."""
        if self.mode == "off":
            raise AdminDisabled(f"the model repository API is disabled: {self.reason}")
        if self.authenticator is None:
            return
        try:
            self.authenticator.check(headers)
        except Unauthenticated as refused:
            raise AdminUnauthenticated(f"repository API: {refused}; it needs the admin token") from None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
