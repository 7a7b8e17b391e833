"""The models loaded in this process, by name: where a model finds its fallback and its shadow.

MLServer loads each model version as its own object and says nothing of the others, so the
services register here when loaded and leave when unloaded. A name holds its latest load: a
reload loads the new version before it unloads the old one, and the old one's unload must not
remove the new one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runtime.service.service import ModelService


class Loaded:
    def __init__(self) -> None:
        self._by_name: dict[str, ModelService] = {}

    def add(self, service: ModelService) -> None:
        self._by_name[service.name] = service

    def remove(self, service: ModelService) -> None:
        """`service` leaves, unless a newer load of its name already took its place."""
        if self._by_name.get(service.name) is service:
            del self._by_name[service.name]

    def get(self, name: str) -> ModelService | None:
        return self._by_name.get(name)


# The process's registry: every service loads into it unless it is given its own (tests).
LOADED = Loaded()
