"""Actor addresses: how the hot path names actors it does not own.

A Ray actor handle passed inside a call's arguments makes the receiver a
*borrower* of it: Ray's distributed reference counting then adds RPCs
between owner and borrower for every such hand-off. A run used to pass four
handles (RunActor → registry, worker → RunActor, …) per event. Pooled actors
are named instead; what travels is an :class:`ActorAddress` (two strings) and
each process resolves an address once and keeps the handle.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any

import ray

_CACHE_SIZE = 4096
_handles: collections.OrderedDict["ActorAddress", Any] = collections.OrderedDict()


@dataclass(frozen=True)
class ActorAddress:
    """A named actor. ``incarnation`` tells apart actors that reuse a name after a death
    (session actors are rebuilt under their key's name): a new one is a new address."""

    name: str
    namespace: str
    incarnation: str = ""

    def handle(self) -> Any:
        """The actor's handle, looked up in the GCS on first use in this process."""
        found = _handles.get(self)
        if found is None:
            found = ray.get_actor(self.name, namespace=self.namespace)
            _handles[self] = found
            while len(_handles) > _CACHE_SIZE:
                _handles.popitem(last=False)
        return found

    def bind(self, handle: Any) -> None:
        """Seed the cache with a handle this process already holds (e.g. its creator's)."""
        _handles[self] = handle

    def forget(self) -> None:
        """Drop the cached handle (the actor died or left its pool)."""
        _handles.pop(self, None)


@dataclass(eq=False)
class PooledActor:
    """A pool member: the owner's handle and the address others use to reach it."""

    handle: Any
    address: ActorAddress
