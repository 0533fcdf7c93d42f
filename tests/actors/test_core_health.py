"""An ingress replica's health check is replica-local: a registry blip shorter than the threshold
fails no replica; a registry unreachable for longer does. Plain class, no Ray."""
from __future__ import annotations

import pytest

from actors.core.health import RegistryUnreachable, RegistryWatch


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def answers() -> int:
    return 0


async def blip() -> int:
    raise TimeoutError("registry restarting")


async def test_a_blip_below_the_threshold_passes_and_an_answer_resets_the_clock():
    clock = Clock()
    watch = RegistryWatch(60.0, clock=clock)
    await watch.check(answers)
    clock.now += 59
    await watch.check(blip)  # unreachable 59 s: not yet the replica's fault
    assert watch.failures == 1
    await watch.check(answers)
    clock.now += 59
    await watch.check(blip)  # counted from the last answer, not from the first failure
    assert watch.failures == 2 and watch.silent_for == 59


async def test_a_registry_unreachable_past_the_threshold_fails_the_check():
    clock = Clock()
    watch = RegistryWatch(60.0, clock=clock)
    await watch.check(blip)
    clock.now += 61
    with pytest.raises(RegistryUnreachable, match="61 s"):
        await watch.check(blip)
    await watch.check(answers)  # healthy again as soon as it answers
    assert watch.silent_for == 0
