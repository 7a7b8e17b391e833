"""Bearer tokens (runtime.policy.auth): parsing, constant-time checks, rotation, configuration."""

from __future__ import annotations

import hmac
import logging

import pytest

from runtime.core.errors import ArtifactError, Unauthenticated
from runtime.policy import auth


def test_tokens_parse_from_lines_and_commas():
    assert len(auth.parse_tokens("a, b\n\n# comment\n c \n")) == 3
    assert auth.parse_tokens("") == () and auth.parse_tokens(" , \n") == ()


class _Tokens:
    description = "test tokens"

    def __init__(self, *tokens: str) -> None:
        self._digests = auth.parse_tokens("\n".join(tokens))

    def digests(self):
        return self._digests


@pytest.mark.parametrize("value", ["Bearer one", "bearer two", "BEARER   one  ", "Bearer two "])
def test_a_valid_bearer_token_passes(value):
    auth.Authenticator(_Tokens("one", "two")).check({"authorization": value})


@pytest.mark.parametrize(
    "headers,message",
    [
        (None, "missing"),
        ({}, "missing"),
        ({"authorization": ""}, "missing"),
        ({"authorization": "Bearer"}, "missing"),
        ({"authorization": "Basic one"}, "missing"),
        ({"authorization": "one"}, "missing"),
        ({"authorization": "Bearer three"}, "invalid"),
        ({"authorization": "Bearer one two"}, "invalid"),
        ({"Authorization": "Bearer one"}, "missing"),
    ],
)
def test_anything_else_is_401_without_echoing_the_token(headers, message):
    with pytest.raises(Unauthenticated, match=message) as error:
        auth.Authenticator(_Tokens("one", "two")).check(headers)
    assert error.value.status == 401
    assert "three" not in str(error.value) and "one" not in str(error.value)


def test_every_token_is_compared_in_constant_time_with_no_early_exit(monkeypatch):
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    checker = auth.Authenticator(_Tokens("first", "second-and-longer", "third"))
    checker.check({"authorization": "Bearer first"})  # matches the first: the others still compared
    with pytest.raises(Unauthenticated):
        checker.check({"authorization": "Bearer " + "x" * 500})
    # Digests of equal length whatever the token lengths: no length leak either.
    assert calls == [(32, 32)] * 6


def test_a_token_file_is_re_read_when_it_changes_and_fails_closed(tmp_path, caplog):
    path = tmp_path / "tokens"
    path.write_text("one\n")
    tokens = auth.FileTokens(str(path), recheck_s=0.0)
    checker = auth.Authenticator(tokens)
    checker.check({"authorization": "Bearer one"})
    path.write_text("two\n")
    checker.check({"authorization": "Bearer two"})
    with pytest.raises(Unauthenticated):
        checker.check({"authorization": "Bearer one"})
    path.unlink()  # a Secret being swapped: keep the last tokens, say so
    with caplog.at_level(logging.ERROR, logger="runtime.policy.auth"):
        checker.check({"authorization": "Bearer two"})
    assert "cannot read token file" in caplog.text
    missing = auth.Authenticator(auth.FileTokens(str(tmp_path / "never-there")))
    with pytest.raises(Unauthenticated):
        missing.check({"authorization": "Bearer two"})


def _source(token_file: str | None, token_env: str | None) -> str:
    """Where the authenticator these options make reads its tokens (auth must be on)."""
    authenticator = auth.from_options(token_file, token_env)
    assert authenticator is not None
    return authenticator.source.description


def test_the_models_setting_wins_over_the_server_wide_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(auth.ENV_TOKEN_FILE, raising=False)
    monkeypatch.delenv(auth.ENV_TOKENS, raising=False)
    assert auth.from_options(None, None) is None  # off by default
    monkeypatch.setenv(auth.ENV_TOKENS, "server")
    monkeypatch.setenv("MY_TOKENS", "mine")
    assert _source(None, None) == f"environment variable {auth.ENV_TOKENS}"
    assert _source(None, "MY_TOKENS") == "environment variable MY_TOKENS"
    (tmp_path / "t").write_text("filed")
    assert _source(str(tmp_path / "t"), "MY_TOKENS").startswith("token file")
    monkeypatch.setenv(auth.ENV_TOKEN_FILE, str(tmp_path / "t"))
    assert _source(None, None).startswith("token file")


def test_an_auth_setting_without_tokens_fails_the_load(tmp_path, monkeypatch):
    monkeypatch.delenv(auth.ENV_TOKEN_FILE, raising=False)
    monkeypatch.setenv(auth.ENV_TOKENS, " , ")
    with pytest.raises(ArtifactError, match=f"environment variable {auth.ENV_TOKENS} holds no token"):
        auth.check_configured(None, None)
    monkeypatch.delenv(auth.ENV_TOKENS)
    auth.check_configured(None, None)  # auth off: nothing to check
    with pytest.raises(ArtifactError, match="holds no token"):
        auth.check_configured(str(tmp_path / "missing"), None)
