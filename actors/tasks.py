"""Background tasks that outlive the Ray task that started them.

Ray attributes actor calls made from asyncio code to the task in the
``async_task_id`` context variable and cancels them recursively when that task
is cancelled (Ray Serve cancels a request whose client hung up). A run must
survive its reader, so run drivers start in a context with that variable
cleared.
"""
from __future__ import annotations

import asyncio
import contextvars
from typing import Any, Coroutine

_background: set[asyncio.Task] = set()


def detached_context() -> contextvars.Context:
    ctx = contextvars.copy_context()
    try:
        import ray._raylet as raylet
        var = getattr(raylet, "async_task_id", None)
    except ImportError:  # pragma: no cover
        var = None
    if var is not None:
        ctx.run(var.set, None)
    return ctx


def spawn_detached(coro: Coroutine[Any, Any, Any]) -> asyncio.Task:
    """Start ``coro`` outside the caller's Ray task; keep a reference until it ends."""
    task = asyncio.get_running_loop().create_task(coro, context=detached_context())
    _background.add(task)
    task.add_done_callback(_background.discard)
    task.add_done_callback(lambda t: t.cancelled() or t.exception())  # never "exception never retrieved"
    return task
