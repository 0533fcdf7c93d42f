"""The detached control-plane actors (storage, registry, providers) and their configuration version.

These actors are named and detached: every ingress replica asks for them by name and the first one
creates them. Ray keeps an actor's constructor arguments for its whole life (a restart re-runs the
constructor with them), so a redeploy with another configuration would otherwise keep talking to
actors built from the *first* one. Each of them therefore carries a **config version** — a digest
of its constructor configuration, which holds secrets by environment-variable *name* only (never
a value) — and :func:`ensure_actor` reuses an existing actor only when its version is the one
asked for. One with another version is drained (the storage actor commits everything it accepted,
refusing new writes) and killed, and a new one is created under the same name.

Dependents follow through their own versions: the registry holds the storage actor's handle, so
its version includes the storage version and it is replaced with it. The delivery engine and the
scheduler (created on demand by the hosts, resuming from their tables) are simply stopped when the
storage actor is replaced; the next host that needs them creates them on the new one.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import Any

import ray
from ray.exceptions import RayActorError

from protocol.logs import get_logger

from . import constants

log = get_logger(__name__)


def config_version(config: Any) -> str:
    """A stable digest of a JSON-able configuration (key order does not matter)."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


async def _lookup(name: str, namespace: str | None) -> Any:
    try:
        return await asyncio.to_thread(ray.get_actor, name, namespace=namespace)
    except ValueError:
        return None


async def _version_of(handle: Any, timeout: float = constants.PING_TIMEOUT_S) -> str | None:
    """The running actor's version; ``None`` for an actor without one (built by an older release)."""
    try:
        method = handle.config_version
    except AttributeError:
        return None
    return await asyncio.wait_for(method.remote(), timeout)


async def ensure_actor(actor_cls: Any, *, name: str, namespace: str | None, version: str, args: tuple,
                       options: dict[str, Any], what: str, drain: bool = False,
                       dependents: tuple[str, ...] = ()) -> Any:
    """The named detached actor ``name`` built with configuration ``version``: the existing one when
    its version matches; otherwise the existing one is drained (``drain=True``: its ``drain()``
    returns once everything it accepted is durable), killed, and replaced — and the named actors
    ``dependents`` (which hold its handle) are stopped."""
    existing = await _lookup(name, namespace)
    if existing is not None:
        try:
            current = await _version_of(existing)
        except (RayActorError, asyncio.TimeoutError) as exc:
            # Not answering now (restarting, overloaded): replacing a live one blind could drop work.
            log.warning("%s did not tell its configuration version (%s); keeping it", what, type(exc).__name__)
            return existing
        if current == version:
            return existing
        log.warning("%s runs configuration version %s, this deployment asks for %s: replacing it",
                    what, current or "(none)", version)
        if drain:
            try:
                await asyncio.wait_for(existing.drain.remote(), constants.CONTROL_PLANE_DRAIN_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - a dead one has nothing left to drain
                log.warning("draining %s failed (%s); replacing it anyway", what, type(exc).__name__)
        ray.kill(existing, no_restart=True)
        for dependent in dependents:
            held = await _lookup(dependent, namespace)
            if held is not None:
                log.warning("stopping %s: it holds the replaced %s", dependent, what)
                ray.kill(held, no_restart=True)
        await _wait_name_free(name, namespace, what)
    handle = actor_cls.options(name=name, namespace=namespace, lifetime="detached", get_if_exists=True,
                               **options).remote(*args, config_version=version)
    try:  # a new actor is a new process: seconds on a loaded machine
        running = await _version_of(handle, constants.SESSION_CREATE_TIMEOUT_S)
    except asyncio.TimeoutError:
        log.warning("%s did not answer within %.0f s of its creation", what, constants.SESSION_CREATE_TIMEOUT_S)
        return handle
    if running != version:  # another host created it concurrently from another configuration
        log.warning("%s runs configuration version %s, not %s (another host deployed it)", what, running, version)
    return handle


async def _wait_name_free(name: str, namespace: str | None, what: str) -> None:
    """Until the killed actor's name is released (the GCS does it shortly after the kill)."""
    deadline = time.monotonic() + constants.CONTROL_PLANE_REPLACE_TIMEOUT_S
    while await _lookup(name, namespace) is not None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: the replaced actor's name {name!r} was not released within "
                               f"{constants.CONTROL_PLANE_REPLACE_TIMEOUT_S:.0f} s")
        await asyncio.sleep(0.05)
