"""Feed one run's frames to delivery: the bridge used until the run path calls delivery itself.

``relay(frames, deliver)`` reads a run's frame stream (the host's ``join``) and hands them on in
batches of whatever is ready (:func:`actors.core.frames.take_ready`), non-terminal frames to
``deliver.on_frames`` and the terminal frame to ``deliver.on_terminal``.
"""
from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Awaitable, Callable

from protocol.delivery import DeliveryPlan
from protocol.logs import get_logger

from .frames import is_terminal, take_ready

log = get_logger(__name__)

OnFrames = Callable[[DeliveryPlan, list[dict[str, Any]]], Awaitable[Any]]
OnTerminal = Callable[[DeliveryPlan, dict[str, Any]], Awaitable[Any]]


async def relay(plan: DeliveryPlan, frames: AsyncIterator[dict[str, Any]], on_frames: OnFrames,
                on_terminal: OnTerminal) -> Any:
    """Returns what ``on_terminal`` returned (the run's delivery records)."""
    queue: asyncio.Queue = asyncio.Queue()
    end = object()

    async def pump() -> None:
        try:
            async for frame in frames:
                queue.put_nowait(frame)
        finally:
            queue.put_nowait(end)

    reader = asyncio.ensure_future(pump())
    try:
        while True:
            batch, ended = take_ready(await queue.get(), queue, end)
            body = [f for f in batch if not is_terminal(f)]
            terminal = next((f for f in batch if is_terminal(f)), None)
            if body:
                await on_frames(plan, body)
            if terminal is not None:
                return await on_terminal(plan, terminal)
            if ended:
                log.warning("run %s: stream ended without a terminal frame; nothing final delivered", plan.run_id)
                return None
    finally:
        reader.cancel()
