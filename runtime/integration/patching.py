"""How the integration package touches MLServer and the libraries under it: named patch points,
checked before any is applied.

Each `PatchPoint` names one attribute of MLServer, uvicorn, grpc, Starlette or prometheus_client
that the runtime replaces, wraps, extends or only reads, the shape it expects there (a callable
with these parameters, a value of this type, or an instance attribute that this method of the
class sets), and why. `install_all()` resolves and checks every point first and applies them only
if all pass, so a release that moved or reshaped a target fails the start with one line naming the
point and the versions found, never a silent no-op, a half-patched server or a request that fails
later. The code that reads a private attribute reads it through its point (`read`), so the name it
reads is the one checked.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from importlib import metadata
from typing import Any

SUPPORTED_MLSERVER = "1.7.1"

_MISSING = object()


class IntegrationError(RuntimeError):
    """A patch target is missing or has another shape than the runtime was built against."""


def _read_only(_original: Any) -> None:
    return None


@dataclass(frozen=True)
class PatchPoint:
    target: str  # "module.path:Attr.attr"
    why: str
    upstream: str  # the upstream issue or PR, or why none applies
    if_removed: str  # what breaks without it
    params: tuple[str, ...] | None = None  # expected parameters of a callable target
    kind: type = object  # the type of a non-callable target, or of what `read` finds
    # An attribute each instance gets: the method of the target's class whose code sets it on self.
    set_by: str | None = None
    # The new value from the original, or None when it changed nothing or changed it in place.
    apply: Callable[[Any], Any] = field(default=_read_only, repr=False)

    @property
    def owner_and_name(self) -> tuple[Any, str]:
        module_name, _, path = self.target.partition(":")
        owner: Any = importlib.import_module(module_name)
        *parents, name = path.split(".")
        for parent in parents:
            owner = getattr(owner, parent)
        return owner, name

    @cached_property
    def name(self) -> str:
        return self.target.partition(":")[2].rpartition(".")[2]

    def check(self) -> Any:
        """The current value at the target (for an instance attribute, the method that sets it),
        or IntegrationError naming what differs."""
        try:
            owner, name = self.owner_and_name
            value = _static(owner, self.set_by or name)
        except (ImportError, AttributeError) as exc:
            raise self.error(f"not found ({exc})") from None
        if self.set_by is not None:
            if name not in self._set_on_self(value):
                raise self.error(f"not found ({owner.__name__}.{self.set_by} no longer sets it)")
        elif self.params is not None:
            function = value.__func__ if isinstance(value, (staticmethod, classmethod)) else value
            if not callable(function):
                raise self.error(f"expected a callable, found {type(value).__name__}")
            found = tuple(inspect.signature(inspect.unwrap(function)).parameters)
            if found != self.params:
                raise self.error(f"expected parameters {self.params}, found {found}")
        elif not isinstance(value, self.kind):
            raise self.error(f"expected a {self.kind.__name__}, found {type(value).__name__}")
        return value

    def read(self, instance: Any) -> Any:
        """The target's attribute on `instance` (an object of its class, or its module), or
        IntegrationError naming the point when it has none or one of another type."""
        value = getattr(instance, self.name, _MISSING)
        if value is _MISSING:
            raise self.error(f"not found on a {type(instance).__name__}")
        if not isinstance(value, self.kind):
            raise self.error(f"expected a {self.kind.__name__}, found {type(value).__name__}")
        return value

    def error(self, problem: str) -> IntegrationError:
        return IntegrationError(
            f"pipeline-runtime cannot use {self.target}: {problem}; MLServer {mlserver_version()} "
            f"is installed{self._library()}, the runtime supports {SUPPORTED_MLSERVER}"
        )

    def _set_on_self(self, method: Any) -> set[str]:
        """The attributes `method`'s code assigns on its first parameter."""
        try:
            source = textwrap.dedent(inspect.getsource(inspect.unwrap(method)))
        except (OSError, TypeError) as exc:
            raise self.error(f"cannot read the code of {self.set_by} ({exc})") from None
        definition = ast.parse(source).body[0]
        if not isinstance(definition, (ast.FunctionDef, ast.AsyncFunctionDef)) or not definition.args.args:
            raise self.error(f"{self.set_by} is not a method")
        itself = definition.args.args[0].arg
        return {
            node.attr
            for node in ast.walk(definition)
            if isinstance(node, ast.Attribute)
            and isinstance(node.ctx, ast.Store)
            and isinstance(node.value, ast.Name)
            and node.value.id == itself
        }

    def _library(self) -> str:
        """ ", with <distribution> <version>" when the target is in another library than MLServer."""
        package = self.target.partition(".")[0].partition(":")[0]
        if package == "mlserver":
            return ""
        distributions = metadata.packages_distributions().get(package, [])
        return "".join(f" with {d} {metadata.version(d)}" for d in distributions[:1])


def _static(owner: Any, attribute: str) -> Any:
    """`owner`'s attribute as defined, without running descriptors (a property is not called)."""
    try:
        return inspect.getattr_static(owner, attribute)
    except AttributeError:
        raise AttributeError(f"{getattr(owner, '__name__', owner)} has no attribute {attribute!r}") from None


def read_point(
    target: str,
    what: str,
    upstream: str,
    lost: str,
    *,
    kind: type = object,
    set_by: str | None = "__init__",
    params: tuple[str, ...] | None = None,
) -> PatchPoint:
    """A point the integration only reads, never replaces: `what` it reads there and what is `lost`
    without it. Most are attributes each instance gets in `__init__`."""
    return PatchPoint(
        target=target,
        why=f"read, not replaced: {what}",
        upstream=upstream,
        if_removed=f"(a read) {lost}",
        params=params,
        kind=kind,
        set_by=set_by,
    )


def mlserver_version() -> str:
    try:
        return metadata.version("mlserver")
    except metadata.PackageNotFoundError:
        return "(not installed)"


def check_all(points: list[PatchPoint]) -> list[Any]:
    """Every point's current value, in order; IntegrationError at the first that does not match."""
    return [point.check() for point in points]


def install_all(points: list[PatchPoint]) -> None:
    """Check every point, then apply each: `apply(original)` returns the new value, or None when
    it only reads the target or changed it in place (e.g. added dict entries)."""
    originals = check_all(points)
    for point, original in zip(points, originals, strict=True):
        replacement = point.apply(original)
        if replacement is not None:
            owner, name = point.owner_and_name
            setattr(owner, name, replacement)
