"""Optional bearer-token authentication for inference.

Off unless configured. Tokens never live in model-settings.json, only where it points:

- per model, `parameters.extra.auth_token_file` (a file, one token a line: a mounted Kubernetes
  Secret) or `parameters.extra.auth_token_env` (the name of an environment variable holding
  comma-separated tokens);
- for every model of the server that sets neither, the environment variables
  `PIPELINE_AUTH_TOKEN_FILE` (a file, as above) or `PIPELINE_AUTH_TOKENS` (the tokens).

Several tokens may be valid at once, for rotation: add the new one, move the clients, remove the
old one. A token file is re-read when it changes (checked at most once a second), so a rotated
Secret takes effect without a restart.

A request must carry `Authorization: Bearer <token>` (gRPC metadata key `authorization`; the
scheme is case-insensitive, RFC 7235). The comparison hashes both sides and compares the digests
with `hmac.compare_digest` against every configured token, so its time depends neither on where
the first differing byte is, nor on the token's length, nor on which token matched. Health,
readiness and metadata endpoints never ask for a token (probes must work without one).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from runtime.core.errors import ArtifactError, Unauthenticated

ENV_TOKEN_FILE = "PIPELINE_AUTH_TOKEN_FILE"
ENV_TOKENS = "PIPELINE_AUTH_TOKENS"
HEADER = "authorization"
RECHECK_S = 1.0

logger = logging.getLogger("runtime.policy.auth")

MISSING = "missing bearer token: send the header 'Authorization: Bearer <token>'"
INVALID = "invalid bearer token"


def parse_tokens(text: str) -> tuple[bytes, ...]:
    """Tokens separated by newlines or commas; blanks and '#' comment lines are ignored."""
    tokens = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("#"):
            continue
        tokens += [t.strip() for t in line.split(",") if t.strip()]
    return tuple(_digest(t.encode()) for t in tokens)


def _digest(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()


class TokenSource(Protocol):
    description: str

    def digests(self) -> tuple[bytes, ...]: ...


class EnvTokens:
    def __init__(self, variable: str, env: Mapping[str, str] | None = None):
        self.description = f"environment variable {variable}"
        self._digests = parse_tokens((os.environ if env is None else env).get(variable, ""))

    def digests(self) -> tuple[bytes, ...]:
        return self._digests


class FileTokens:
    """A token file, re-read when its inode, size or mtime change (a Secret update swaps it)."""

    def __init__(self, path: str, recheck_s: float = RECHECK_S):
        self.path = Path(path)
        self.description = f"token file {path}"
        self._recheck_s = recheck_s
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._digests: tuple[bytes, ...] = ()
        self._checked = 0.0
        self._refresh()

    def digests(self) -> tuple[bytes, ...]:
        now = time.monotonic()
        if now - self._checked >= self._recheck_s:
            with self._lock:
                if now - self._checked >= self._recheck_s:
                    self._refresh()
        return self._digests

    def _refresh(self) -> None:
        self._checked = time.monotonic()
        try:
            st = self.path.stat()
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
            if stamp == self._stamp:
                return
            digests = parse_tokens(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            # Keep the last tokens read (a Secret update can briefly show no file); with none,
            # every request is refused: a broken configuration fails closed.
            logger.error(
                "cannot read %s: %s; keeping the %d token(s) read before", self.description, exc, len(self._digests)
            )
            return
        if self._stamp is not None:
            logger.info("%s changed: %d token(s) now valid", self.description, len(digests))
        self._stamp, self._digests = stamp, digests


class Authenticator:
    def __init__(self, source: TokenSource):
        self.source = source

    def check(self, headers: Mapping[str, str] | None) -> str:
        """The client's id (a short hash of its token, never the token), or Unauthenticated
        unless the headers carry one of the valid bearer tokens."""
        value = (headers or {}).get(HEADER)
        if not value:
            raise Unauthenticated(MISSING)
        scheme, _, token = value.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated(MISSING)
        presented = _digest(token.encode())
        matched = False
        for expected in self.source.digests():  # no early exit: same work whichever matches
            matched |= hmac.compare_digest(presented, expected)
        if not matched:
            raise Unauthenticated(INVALID)
        return "token-" + presented.hex()[:8]


def from_options(token_file: str | None, token_env: str | None) -> Authenticator | None:
    """The model's own setting, else the server-wide environment, else None (auth off)."""
    if token_file:
        return Authenticator(FileTokens(token_file))
    if token_env:
        return Authenticator(EnvTokens(token_env))
    if os.environ.get(ENV_TOKEN_FILE):
        return Authenticator(FileTokens(os.environ[ENV_TOKEN_FILE]))
    if ENV_TOKENS in os.environ:
        return Authenticator(EnvTokens(ENV_TOKENS))
    return None


def check_configured(token_file: str | None, token_env: str | None) -> None:
    """At model load: refuse to become ready with an auth setting that holds no token, rather
    than refuse every request later."""
    authenticator = from_options(token_file, token_env)
    if authenticator is not None and not authenticator.source.digests():
        raise ArtifactError(f"bearer-token auth is configured but {authenticator.source.description} holds no token")
