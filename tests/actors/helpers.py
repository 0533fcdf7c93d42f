"""Small helpers shared by the actor-layer tests."""
from __future__ import annotations

from typing import Any

from protocol.events import EventEnvelope
from tests.waiting import wait_until  # noqa: F401  (re-exported: the actor tests' bounded wait)


def message(conv: str, text: str = "hi", **kw: Any) -> EventEnvelope:
    return EventEnvelope(event_type="message.received", conversation_id=conv,
                         actor={"actor_type": "user", "actor_id": "u1"}, input={"text": text}, **kw)


async def collect(stream) -> list[dict[str, Any]]:
    return [frame async for frame in stream]


async def run_to_end(host, event: EventEnvelope, agent_id: str) -> list[dict[str, Any]]:
    return await collect(await host.submit(event, agent_id))


def text_of(frames: list[dict[str, Any]]) -> str:
    return "".join(f["data"]["chunk"]["content"] for f in frames if f["type"] == "message.delta")


async def first_frame(stream):
    return await stream.__anext__()


async def events_of(host, conv: str) -> list[dict[str, Any]]:
    page = await host.read("event_page", scope={"conversation_id": conv}, limit=100)
    return page["items"]


async def transcript_of(host, conv: str) -> list[dict[str, Any]]:
    page = await host.read("history_page", conversation_id=conv, limit=100, direction="forward")
    return page["items"]


async def until_delta(stream) -> list[dict[str, Any]]:
    """Frames up to and including the first ``message.delta``: the run is provably live in its runner."""
    frames = []
    async for frame in stream:
        frames.append(frame)
        if frame["type"] == "message.delta":
            return frames
        assert frame["type"] not in ("run.completed", "run.failed"), frames
    raise AssertionError(f"the run ended before streaming a delta: {frames}")
