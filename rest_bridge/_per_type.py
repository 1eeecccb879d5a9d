"""One compiled function per message type, built once and shared."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from google.protobuf.descriptor import Descriptor

F = TypeVar("F")


class PerType(Generic[F]):
    """Builds ``build(descriptor)`` once per message type, safely across threads.

    A recursive type asks for itself while it is being built; it then gets
    ``forward(resolve)``, a stand-in that calls ``resolve()`` (the finished
    function) when it runs, by which time the build is over.
    """

    def __init__(
        self, build: Callable[[Descriptor], F], forward: Callable[[Callable[[], F]], F]
    ) -> None:
        self._build = build
        self._forward = forward
        self._built: dict[str, F] = {}
        self._building: set[str] = set()
        self._lock = threading.RLock()

    def __call__(self, descriptor: Descriptor) -> F:
        full_name = descriptor.full_name
        built = self._built.get(full_name)
        if built is not None:
            return built
        with self._lock:
            built = self._built.get(full_name)
            if built is not None:
                return built
            if full_name in self._building:
                return self._forward(lambda: self._built[full_name])
            self._building.add(full_name)
            try:
                built = self._build(descriptor)
            finally:
                self._building.discard(full_name)
            self._built[full_name] = built
            return built
