"""The models loaded in this process, by name: where a model finds its fallback and its shadow.

MLServer loads each model version as its own object and says nothing of the others, so the
services register here when loaded and leave when unloaded. A name holds its latest load: a
reload loads the new version before it unloads the old one, and the old one's unload must not
remove the new one. The process's registry is runtime.service.service.LOADED.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar


class Named(Protocol):
    @property
    def name(self) -> str: ...


S = TypeVar("S", bound=Named)


class Loaded(Generic[S]):
    def __init__(self) -> None:
        self._by_name: dict[str, S] = {}

    def add(self, service: S) -> None:
        self._by_name[service.name] = service

    def remove(self, service: S) -> None:
        """`service` leaves, unless a newer load of its name already took its place."""
        if self._by_name.get(service.name) is service:
            del self._by_name[service.name]

    def get(self, name: str) -> S | None:
        return self._by_name.get(name)
