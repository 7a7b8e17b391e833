"""How the integration package changes MLServer: named patch points, checked before any is applied.

Each `PatchPoint` names one attribute of MLServer, uvicorn or grpc that the runtime replaces,
wraps or extends, the shape it expects there (a callable with these parameters, or a dict), and
why. `install_all()` resolves and checks every point first and applies them only if all pass, so
an MLServer release that moved or reshaped a target fails the start with one line naming the
point and the version found, never a silent no-op or a half-patched server.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

SUPPORTED_MLSERVER = "1.7.1"


class IntegrationError(RuntimeError):
    """A patch target is missing or has another shape than the runtime was built against."""


@dataclass(frozen=True)
class PatchPoint:
    target: str  # "module.path:Attr.attr"
    why: str
    upstream: str  # the upstream issue or PR, or why none applies
    if_removed: str  # what breaks without it
    params: tuple[str, ...] | None = None  # expected parameters of a callable target
    kind: type = field(default=type(None))  # a non-callable target's type (e.g. dict)
    apply: Callable[[Any], Any] = field(default=lambda original: original, repr=False)

    @property
    def owner_and_name(self) -> tuple[Any, str]:
        module_name, _, path = self.target.partition(":")
        owner: Any = importlib.import_module(module_name)
        *parents, name = path.split(".")
        for parent in parents:
            owner = getattr(owner, parent)
        return owner, name

    def check(self) -> Any:
        """The current value at the target, or IntegrationError naming what differs."""
        try:
            owner, name = self.owner_and_name
            value = inspect.getattr_static(owner, name)
        except (ImportError, AttributeError) as exc:
            raise self._error(f"not found ({exc})") from None
        if self.params is not None:
            function = value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
            if not callable(function):
                raise self._error(f"expected a callable, found {type(value).__name__}")
            found = tuple(inspect.signature(inspect.unwrap(function)).parameters)
            if found != self.params:
                raise self._error(f"expected parameters {self.params}, found {found}")
        elif not isinstance(value, self.kind):
            raise self._error(f"expected a {self.kind.__name__}, found {type(value).__name__}")
        return value

    def _error(self, problem: str) -> IntegrationError:
        return IntegrationError(
            f"pipeline-runtime cannot install its MLServer patch {self.target}: {problem}; "
            f"MLServer {mlserver_version()} is installed, the runtime supports {SUPPORTED_MLSERVER}"
        )


def mlserver_version() -> str:
    try:
        return metadata.version("mlserver")
    except metadata.PackageNotFoundError:
        return "(not installed)"


def install_all(points: list[PatchPoint]) -> None:
    """Check every point, then apply each: `apply(original)` returns the new value, or None when
    it changed the target in place (e.g. added dict entries)."""
    originals = [point.check() for point in points]
    for point, original in zip(points, originals):
        replacement = point.apply(original)
        if replacement is not None:
            owner, name = point.owner_and_name
            setattr(owner, name, replacement)
