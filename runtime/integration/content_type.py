"""REST: a JSON body without a Content-Type header is read as JSON, as FastAPI did before 0.132.

FastAPI 0.132 made `strict_content_type` its default: a body is parsed as JSON only when the request
says `Content-Type: application/json` (or `application/*+json`); any other body is validated as bytes,
a 422. tritonclient.http and KServe's REST client send their JSON with no Content-Type at all, so each
of their requests became a 422 once the locks moved FastAPI past MLServer 1.7.1's cap (pyproject.toml
[tool.uv]: the starlette advisories). MLServer builds every route of its app with its own APIRoute;
`strict_content_type=False`, FastAPI's public route option for such clients, restores the older rule
on each of them: no Content-Type is JSON, a JSON type is JSON, any other type stays a 422 as it always
was (CVE-2021-32677). The fast path applies the same rule (fast_path._parsed_as_json).

FastAPI's reason for the strict default is a browser's cross-site request without a Content-Type (no
CORS preflight) against an app without authentication on a trusted network. Here such a page cannot
read an inference answer (no CORS headers unless configured) and bearer tokens still apply where set;
without an admin token the repository API is open only on a loopback address (runtime.policy.admin), and its
load and unload take no body, so strictness never covered them.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from runtime.integration.patching import PatchPoint


def _fastapi_has_strict_content_type() -> bool:
    from fastapi.routing import APIRoute

    return "strict_content_type" in inspect.signature(APIRoute.__init__).parameters


def _lenient(original: Callable[..., None]) -> Callable[..., None] | None:
    if not _fastapi_has_strict_content_type():
        return None  # a FastAPI before 0.132 already reads such a body as JSON: nothing to change

    @functools.wraps(original)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("strict_content_type", False)
        original(self, *args, **kwargs)

    return __init__


PATCHES = [
    PatchPoint(
        target="mlserver.rest.app:APIRoute.__init__",
        why="every route MLServer builds reads a JSON body sent without a Content-Type as JSON "
        "(FastAPI's strict_content_type=False), as FastAPI did before 0.132: tritonclient.http and "
        "KServe's REST client send none",
        upstream="none: MLServer 1.7.1 declares fastapi<0.116, before strict_content_type; the locks "
        "override that cap for starlette's advisories",
        if_removed="REST inference from tritonclient and KServe's REST client is a 422 wherever "
        "MLServer's path answers (fast path off, tracing on, other runtimes)",
        params=(
            "self",
            "args",
            "response_model_exclude_unset",
            "response_model_exclude_none",
            "response_class",
            "kwargs",
        ),
        apply=_lenient,
    ),
]
