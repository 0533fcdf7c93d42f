"""Actor addresses: how the hot path names actors it does not own.

A Ray actor handle passed inside a call's arguments makes the receiver a
*borrower* of it: Ray's distributed reference counting then adds RPCs
between owner and borrower for every such hand-off. A run used to pass four
handles (RunActor → registry, worker → RunActor, …) per event. Pooled actors
are named instead; what travels is an :class:`ActorAddress` (two strings) and
each process resolves an address once and keeps the handle.
"""
from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass
from typing import Any

import ray

from . import constants

_handles: collections.OrderedDict["ActorAddress", Any] = collections.OrderedDict()
_heard_from: dict["ActorAddress", float] = {}  # monotonic time the actor last answered this process


@dataclass(frozen=True)
class ActorAddress:
    """A named actor. ``incarnation`` tells apart actors that reuse a name after a death
    (session actors are rebuilt under their key's name): a new one is a new address."""

    name: str
    namespace: str
    incarnation: str = ""

    async def resolve(self) -> Any:
        """The actor's handle, looked up in the GCS on first use in this process (off the event
        loop: a GCS hiccup must not stall everything else this process serves). ``ValueError``
        when no actor has this name any more."""
        found = _handles.get(self)
        if found is None:
            found = await asyncio.to_thread(ray.get_actor, self.name, namespace=self.namespace)
            self.bind(found)
        return found

    def bind(self, handle: Any) -> None:
        """Seed the cache with a handle this process already holds (e.g. its creator's)."""
        _handles[self] = handle
        while len(_handles) > constants.ADDRESS_CACHE_SIZE:
            _handles.popitem(last=False)

    def heard_from(self) -> None:
        """Record that the actor just answered (it was alive a moment ago)."""
        _heard_from[self] = time.monotonic()
        while len(_heard_from) > constants.ADDRESS_CACHE_SIZE:
            del _heard_from[next(iter(_heard_from))]

    def silent_for(self) -> float:
        """Seconds since the actor last answered this process (infinite if never)."""
        last = _heard_from.get(self)
        return float("inf") if last is None else time.monotonic() - last

    def forget(self) -> None:
        """Drop the cached handle (the actor died or left its pool)."""
        _handles.pop(self, None)
        _heard_from.pop(self, None)


@dataclass(eq=False)
class PooledActor:
    """A pool member: the owner's handle and the address others use to reach it."""

    handle: Any
    address: ActorAddress
