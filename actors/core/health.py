"""Replica-local health of an ingress replica (Serve's ``check_health``).

Every replica talks to the one registry. If a replica's health check failed whenever one ping to
the registry failed, one registry blip (a restart, a stall) would fail every replica at once and
Serve would restart them all — turning a hiccup of a shared actor into an outage of the whole
ingress. So :class:`RegistryWatch` fails only once the registry has been unreachable *from this
replica* for longer than a threshold (``RUNNERHOST_REGISTRY_UNREACHABLE_FAIL_S``); the replica's own
state (is it closed, are its background loops alive) is checked by the host itself.
"""
from __future__ import annotations

import time
from typing import Awaitable, Callable

from protocol.logs import get_logger

log = get_logger(__name__)


class RegistryUnreachable(RuntimeError):
    pass


class RegistryWatch:
    def __init__(self, fail_after_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.fail_after_s = fail_after_s
        self._clock = clock
        self.last_ok = clock()  # the replica just started: the threshold counts from here
        self.failures = 0  # pings that failed, ever (observability, tests)

    @property
    def silent_for(self) -> float:
        return self._clock() - self.last_ok

    async def check(self, ping: Callable[[], Awaitable[object]]) -> None:
        """Ping; raise :class:`RegistryUnreachable` only when the registry has answered nothing for
        longer than ``fail_after_s``."""
        try:
            await ping()
        except Exception as exc:  # noqa: BLE001 - any failure to answer counts the same
            self.failures += 1
            silent = self.silent_for
            if silent > self.fail_after_s:
                raise RegistryUnreachable(f"the registry has not answered for {silent:.0f} s "
                                          f"({type(exc).__name__})") from None
            log.warning("the registry did not answer a health ping (%s); silent for %.0f s of the %.0f s "
                        "allowed", type(exc).__name__, silent, self.fail_after_s)
            return
        self.last_ok = self._clock()
