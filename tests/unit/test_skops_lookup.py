"""runtime.integration.skops_lookup answers exactly as skops' own whichmodule: the real ufuncs
skops looks up at import, and the module kinds that take another path (a module `__getattr__`, a
module subclass, a lazy module that fails to import, a module replaced or given a `__getattr__`
after a first lookup, `__main__`). That the server imports skops with it, and skops' default trusted
types come out the same, is pinned in tests/pins."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import scipy.special

from runtime.core.artifacts import skops_io
from runtime.integration import IntegrationError, skops_lookup

skops_io()


def _both(obj: Any, name: str | None = None) -> tuple[str, str]:
    name = name or obj.__name__
    return skops_lookup.whichmodule(obj, name), skops_lookup.original()(obj, name)


def _ufuncs(module: types.ModuleType) -> list[Any]:
    return [getattr(module, n) for n in dir(module) if isinstance(getattr(module, n), np.ufunc)]


@pytest.mark.parametrize("module", [np, scipy.special], ids=lambda m: m.__name__)
def test_every_public_ufunc_is_found_where_skops_finds_it(module):
    ufuncs = _ufuncs(module)
    assert len(ufuncs) > 50
    for ufunc in ufuncs:
        ours, theirs = _both(ufunc)
        assert ours == theirs, ufunc


class _Held:
    """An object without `__module__`, as a ufunc is."""

    def __init__(self, name: str):
        self.__name__ = name

    def __getattribute__(self, attribute: str) -> Any:
        if attribute == "__module__":
            raise AttributeError(attribute)
        return object.__getattribute__(self, attribute)


@pytest.fixture
def modules(monkeypatch) -> Iterator[Any]:
    """Adds modules at the end of sys.modules, in call order, removed after the test."""

    def add(name: str, module: Any) -> Any:
        monkeypatch.setitem(sys.modules, name, module)
        return module

    yield add


def _plain(name: str, **attributes: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    return module


def test_the_first_plain_module_holding_it_wins(modules):
    held = _Held("held_a")
    modules("lookup_first", _plain("lookup_first", held_a=held))
    modules("lookup_second", _plain("lookup_second", held_a=held))
    assert _both(held) == ("lookup_first", "lookup_first")


def test_a_module_getattr_earlier_in_the_order_wins(modules):
    held = _Held("held_b")
    modules("lookup_lazy", _plain("lookup_lazy", __getattr__=lambda n: held if n == "held_b" else None))
    modules("lookup_plain", _plain("lookup_plain", held_b=held))
    assert _both(held) == ("lookup_lazy", "lookup_lazy")


def test_a_lazy_module_that_fails_to_import_is_passed_over(modules):
    held = _Held("held_c")

    def broken(name: str) -> Any:
        raise ImportError(f"no {name}")

    modules("lookup_broken", _plain("lookup_broken", __getattr__=broken))
    modules("lookup_holder", _plain("lookup_holder", held_c=held))
    assert _both(held) == ("lookup_holder", "lookup_holder")


def test_a_module_subclass_and_a_non_module_are_asked_by_getattr(modules):
    held = _Held("held_d")

    class Moved(types.ModuleType):
        def __getattr__(self, name: str) -> Any:
            if name == "held_d":
                return held
            raise AttributeError(name)

    modules("lookup_moved", Moved("lookup_moved"))
    assert _both(held) == ("lookup_moved", "lookup_moved")
    other = _Held("held_e")
    modules("lookup_object", types.SimpleNamespace(held_e=other))
    assert _both(other) == ("lookup_object", "lookup_object")


def test_a_module_that_gains_a_getattr_or_is_replaced_is_seen(modules):
    held = _Held("held_f")
    early = modules("lookup_early", _plain("lookup_early"))
    modules("lookup_late", _plain("lookup_late", held_f=held))
    assert _both(held) == ("lookup_late", "lookup_late")
    early.__getattr__ = lambda n: held if n == "held_f" else None
    assert _both(held) == ("lookup_early", "lookup_early")
    modules("lookup_early", _plain("lookup_early"))  # replaced, same place in the order
    assert _both(held) == ("lookup_late", "lookup_late")


def test_main_is_skipped_and_an_object_held_nowhere_is_main(modules):
    held = _Held("held_g")
    modules("__mp_main__", _plain("__mp_main__", held_g=held))
    assert _both(held) == ("__main__", "__main__")
    assert _both(np.add) == ("numpy", "numpy")  # a ufunc with __module__ answers by it


def test_names_only_skops_handles_go_to_it(modules):
    held = _Held("__doc__")
    modules("lookup_doc", _plain("lookup_doc"))
    assert _both(held) == ("__main__", "__main__")
    inner = _Held("Outer.inner")
    modules("lookup_dotted", _plain("lookup_dotted", Outer=types.SimpleNamespace(inner=inner)))
    assert _both(inner) == ("lookup_dotted", "lookup_dotted")


def test_another_lookup_than_the_checked_one_fails_naming_the_point():
    def whichmodule(obj: Any, name: str) -> str:
        return "__main__"

    with pytest.raises(IntegrationError, match=r"skops\.io\._utils:whichmodule: its code changed"):
        skops_lookup.check_code(whichmodule)
    skops_lookup.check_code(skops_lookup.original())
