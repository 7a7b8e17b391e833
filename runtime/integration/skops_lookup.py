"""skops' lookup of the module an object belongs to, answered without a failed getattr per module.

skops.io builds its default trusted types when it is imported. For each public ufunc of numpy and
scipy.special, objects without `__module__`, its `whichmodule` tries `getattr(module, name, None)` on
every module in `sys.modules`, in import order, until one holds the object. Under MLServer about 2,800
modules are loaded by then, and on Python 3.11 each miss builds and drops an AttributeError with a
formatted message: some 400,000 misses, the largest share of skops' import and of this runtime's cold
start beyond stock's (docs/performance.md, "Cold start").

`whichmodule` here gives the same answer: the first module, in the same order, whose attribute of that
name is the object. For a plain module (exactly `types.ModuleType`, no module `__getattr__`) that
attribute is its `__dict__` entry, so those are looked up in C over the whole list at once; every
other module (a subclass, a lazy module with `__getattr__`, a non-module in `sys.modules`) still goes
through getattr, in its place in the order. The list of plain modules' dicts is kept while
`sys.modules` holds the same modules and none of them has gained a `__getattr__`. Dotted names and
names `ModuleType` itself defines go to skops' own function.

The replacement must be in place before skops.io is imported, so `install()` imports skops.io itself
(the runtime imports it before any model loads anyway, runtime.core.artifacts.skops_io) with an import
hook that swaps the function in as soon as skops.io._utils has run, before skops.io._trusted_types
uses it. The original is checked first: the point's parameters, and its code, as this was written
against, so a skops release that changes the lookup fails the start instead of being answered by an
outdated copy.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import inspect
import operator
import sys
import types
import warnings
from collections.abc import Callable
from itertools import compress, repeat
from typing import Any

from runtime.integration.patching import IntegrationError, PatchPoint

MODULE = "skops.io._utils"

# sha256 of `inspect.getsource(skops.io._utils.whichmodule)` in skops 0.16.0, whose answers these equal.
ORIGINAL_SOURCE_SHA256 = "0dc5d8a6316f005374985e055627e777bc14472dc4cdafd27f1eac492684e964"

_SKIPPED = frozenset({"__main__", "__mp_main__"})  # as skops (and pickle, bpo-42406) skip them
_TYPE_DEFINED = frozenset(dir(types.ModuleType))  # found on the type, not in a module's __dict__


class _Modules:
    """`sys.modules` as last seen: the plain modules' dicts, and every other module with its place."""

    def __init__(self, names: list[str], modules: list[Any]):
        self.names, self.modules = names, modules
        self.dicts: list[dict[str, Any]] = []
        self.dict_places: list[int] = []
        self.others: list[tuple[int, str, Any]] = []
        for place, (name, module) in enumerate(zip(names, modules, strict=True)):
            if name in _SKIPPED or module is None:
                continue
            if type(module) is types.ModuleType and "__getattr__" not in module.__dict__:
                self.dicts.append(module.__dict__)
                self.dict_places.append(place)
            else:
                self.others.append((place, name, module))

    def still(self, names: list[str], modules: list[Any]) -> bool:
        """The same modules in the same order, and no plain one has gained a `__getattr__`. Lists of
        the existing names and modules, not of new (name, module) pairs: thousands of new tuples a
        lookup would set the garbage collector walking every object of a process mid-import."""
        return (
            names == self.names
            and modules == self.modules
            and not any(map(operator.contains, self.dicts, repeat("__getattr__")))
        )

    def first_dict_holding(self, name: str, obj: Any) -> int | None:
        """The place of the first plain module whose entry `name` is `obj` (identity, never `==`)."""
        holding = compress(range(len(self.dicts)), map(operator.contains, self.dicts, repeat(name)))
        for index in holding:
            if self.dicts[index][name] is obj:
                return self.dict_places[index]
        return None


_seen: _Modules | None = None


def _modules() -> _Modules:
    global _seen
    names, modules = list(sys.modules), list(sys.modules.values())
    if _seen is None or not _seen.still(names, modules):
        _seen = _Modules(names, modules)
    return _seen


def whichmodule(obj: Any, name: str) -> str:
    """skops.io._utils.whichmodule's answer: the object's `__module__`, else the first module in
    `sys.modules` holding it under `name`, else "__main__"."""
    module_name = getattr(obj, "__module__", None)
    if module_name is not None:
        return module_name
    if "." in name or name in _TYPE_DEFINED:
        return original()(obj, name)
    modules = _modules()
    place = modules.first_dict_holding(name, obj)
    before = len(modules.names) if place is None else place
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # as skops: numpy.core's deprecation
        for other_place, other_name, other in modules.others:
            if other_place > before:
                break
            try:
                if getattr(other, name, None) is obj:
                    return other_name
            except (AttributeError, ImportError):
                continue
    return "__main__" if place is None else modules.names[place]


_original: Callable[[Any, str], str] | None = None  # skops' own, once replaced


def check_code(function: Any) -> None:
    """IntegrationError unless `function` is the code this module answers for."""
    found = hashlib.sha256(inspect.getsource(function).encode()).hexdigest()
    if found != ORIGINAL_SOURCE_SHA256:
        raise POINT.error(f"its code changed (sha256 {found[:12]}…), not the code the faster lookup answers as")


def original() -> Callable[[Any, str], str]:
    """skops' own whichmodule (for the names only it handles, and for tests): the one replaced, else
    the one skops.io holds."""
    if _original is not None:
        return _original
    found: Callable[[Any, str], str] = sys.modules[MODULE].whichmodule
    return found


def _replace(module: types.ModuleType) -> None:
    """Check skops' whichmodule and put this one in its place (idempotent)."""
    global _original
    current = POINT.check()
    if current is whichmodule:
        return
    check_code(current)
    _original = current
    module.whichmodule = whichmodule  # type: ignore[attr-defined]


def _keep(original: Any) -> None:
    """install_all's apply: `install()` has already replaced it (or found it replaced)."""
    if original is not whichmodule:
        raise POINT.error("skops.io was imported before the runtime's integration replaced the lookup")


POINT = PatchPoint(
    target=f"{MODULE}:whichmodule",
    why=(
        "the module of an object without __module__ (numpy's and scipy.special's ufuncs, at skops.io's "
        "import; an artifact's functions, at its audit) is found by one lookup over the plain modules' "
        "dicts at once instead of a failed getattr per module (runtime.integration.skops_lookup); same "
        "answers, checked against skops' code"
    ),
    upstream=(
        "skops-dev/skops#542 (closed: the slow ufunc lookup at skops.io's import, seen under a debugger; "
        "its cost grows with the modules loaded before it); CPython 3.12 stops building the AttributeError "
        "of a missing module attribute"
    ),
    if_removed="every start (and parallel worker) spends ~0.3-0.4 s more importing skops.io",
    params=("obj", "name"),
    apply=_keep,
)


class _SwapAfterExec(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Runs skops.io._utils through its own loader, then replaces its whichmodule."""

    def __init__(self) -> None:
        self._loader: Any = None

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != MODULE:
            return None
        sys.meta_path.remove(self)  # find the real spec, once
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        self._loader, spec.loader = spec.loader, self
        return spec

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        created: types.ModuleType | None = self._loader.create_module(spec)
        return created

    def exec_module(self, module: types.ModuleType) -> None:
        module.__loader__ = self._loader  # the module keeps its real loader (source lookups, reloads)
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        _replace(module)


def install(import_skops_io: Callable[[], Any]) -> None:
    """Import skops.io (through `import_skops_io`) with the faster lookup swapped in as its first
    module runs; if skops.io was already imported, swap it in now (later audits still gain)."""
    if MODULE in sys.modules:
        _replace(sys.modules[MODULE])
        return
    hook = _SwapAfterExec()
    sys.meta_path.insert(0, hook)
    try:
        import_skops_io()
    finally:
        if hook in sys.meta_path:
            sys.meta_path.remove(hook)
    if sys.modules.get(MODULE) is not None and POINT.check() is not whichmodule:
        raise IntegrationError(f"pipeline-runtime could not replace {POINT.target} while skops.io was imported")
