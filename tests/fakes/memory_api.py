"""An in-memory host for driving runners in tests (no Ray, no database).

:class:`MemoryHost` keeps the facts a real host would — transcript (with
per-conversation ``seq`` and opaque cursors), state by scope, knowledge bases —
and routes models to a real :class:`~actors.providers.ModelRegistry` and tools to
a real :class:`~actors.providers.ToolRegistry`. :meth:`MemoryHost.run` plays the
host's part around one run: writes the inbound user item, checks every result
with :class:`~protocol.results.ResultValidator`, persists ``state.updated`` and
the ``message.completed`` assistant item.

:class:`MemoryRunnerAPI` implements :class:`protocol.runner.RunnerAPI` for one
run, checks the run's grants (``ctx.resources`` / ``available_apis``) like the
RunActor would, and records every call in ``.calls`` so tests can assert what
the runner asked for. ``queue_steering`` / ``on_tool_call`` let a test inject
steered messages mid-run.
"""
from __future__ import annotations

import base64
import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, Literal

from protocol.context import (
    AvailableApis,
    ContextAccess,
    ConversationContext,
    DeliveryContext,
    EventContext,
    InputContext,
    KnowledgeBaseResource,
    ModelResource,
    Resources,
    RunContext,
    StateSnapshot,
    ToolResource,
    Trigger,
)
from protocol.errors import ErrorCode, RunnerHostError, invalid_argument, not_found, unauthorized
from protocol.pages import (
    ArtifactMetadata,
    ArtifactReadResult,
    EventPage,
    EventRecord,
    HistoryPage,
    HistorySearchResult,
    RunEventPage,
    RunPage,
    RunRecord,
    StateEntry,
    StateList,
    SteeringItem,
    SteeringPullResult,
    TranscriptItem,
)
from protocol.results import ResultValidator, RunResult
from protocol.runner import Runner, RunnerAPI

ALL_APIS = AvailableApis(history_page=True, history_search=True, event_get=True, event_page=True,
                         artifact_metadata=True, artifact_read=True, state=True, storage=True,
                         steering_pull=True, run_get=True, run_list=True, run_events_page=True, run_cancel=False)


def _cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"t:{seq}".encode()).decode().rstrip("=")


def _seq_of(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, seq = raw.partition(":")
        if kind != "t":
            raise ValueError
        return int(seq)
    except (ValueError, UnicodeDecodeError):
        raise invalid_argument("bad cursor") from None


@dataclass
class Outcome:
    """What one driven run produced."""

    results: list[RunResult]
    terminal: RunResult
    api: "MemoryRunnerAPI"
    rejected: list[Any] = field(default_factory=list)

    def of_type(self, rtype: str) -> list[RunResult]:
        return [r for r in self.results if r.type == rtype]

    @property
    def types(self) -> list[str]:
        return [r.type for r in self.results]

    @property
    def text(self) -> str:
        done = self.of_type("message.completed")
        return done[-1].data["message"]["content"] if done else ""

    @property
    def streamed_text(self) -> str:
        return "".join(r.data["chunk"]["content"] for r in self.of_type("message.delta"))


class MemoryHost:
    """Facts shared across runs: transcript, state, knowledge, providers."""

    def __init__(self, *, models: Any = None, tools: Any = None,
                 knowledge: dict[str, list[str | dict[str, Any]]] | None = None,
                 runner_id: str = "plugin:builtin/openai-agent/default") -> None:
        self.models = models
        self.tools = tools
        self.knowledge = {k: [d if isinstance(d, dict) else {"content": d} for d in docs]
                          for k, docs in (knowledge or {}).items()}
        self.runner_id = runner_id
        self.transcript: dict[str, list[TranscriptItem]] = {}
        self.state: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: dict[str, EventRecord] = {}

    # -- facts -------------------------------------------------------------------
    def add_item(self, conversation_id: str, role: str, content: str, *, event_id: str | None = None,
                 run_id: str | None = None, item_type: str = "message") -> TranscriptItem:
        items = self.transcript.setdefault(conversation_id, [])
        seq = (items[-1].seq or 0) + 1 if items else 1
        item = TranscriptItem(transcript_id=f"tr_{uuid.uuid4().hex[:12]}", event_id=event_id or f"evt_{uuid.uuid4().hex}",
                              conversation_id=conversation_id, run_id=run_id, role=role, item_type=item_type,
                              content=content, seq=seq, cursor=_cursor(seq), created_at=int(time.time()))
        items.append(item)
        return item

    def latest_seq(self, conversation_id: str) -> int | None:
        items = self.transcript.get(conversation_id) or []
        return items[-1].seq if items else None

    def scope_state(self, scope: str, scope_id: str) -> dict[str, Any]:
        return self.state.setdefault((scope, scope_id), {})

    # -- context ------------------------------------------------------------------------
    async def make_context(self, text: str | None = None, *, conversation_id: str = "conv_1",
                           event_type: str = "message.received", event_data: dict[str, Any] | None = None,
                           config: dict[str, Any] | None = None, streaming: bool = True,
                           model_ops: list[str] | None = None, model_ids: list[str] | None = None,
                           kb_ids: list[str] | None = None, tools: bool = True,
                           apis: AvailableApis | None = None, run_id: str | None = None,
                           event_id: str | None = None) -> RunContext:
        run_id = run_id or f"run_{uuid.uuid4().hex[:12]}"
        event_id = event_id or f"evt_{uuid.uuid4().hex}"
        ops = model_ops if model_ops is not None else ["invoke", "stream"]
        ids = model_ids if model_ids is not None else (self.models.ids() if self.models else [])
        models = [ModelResource(model_id=m, operations=ops) for m in ids]
        tool_res = []
        if tools and self.tools is not None:
            for spec in await self.tools.list_tools():
                tool_res.append(ToolResource(tool_name=spec["tool_name"], description=spec["description"],
                                             parameters=spec["parameters"], operations=["detail", "call"]))
        kbs = [KnowledgeBaseResource(kb_id=k, kb_name=k, operations=["list", "retrieve"])
               for k in (kb_ids if kb_ids is not None else list(self.knowledge))]
        return RunContext(
            run_id=run_id,
            trigger=Trigger(type="event", source="api", timestamp=int(time.time())),
            event=EventContext(event_id=event_id, event_type=event_type, source="api", data=event_data or {}),
            conversation=ConversationContext(conversation_id=conversation_id, bot_id="bot_1"),
            input=InputContext(text=text),
            delivery=DeliveryContext(supports_streaming=streaming),
            resources=Resources(models=models, tools=tool_res, knowledge_bases=kbs),
            context=ContextAccess(conversation_id=conversation_id,
                                  transcript_seq=self.latest_seq(conversation_id),
                                  has_history_before=bool(self.transcript.get(conversation_id)),
                                  available_apis=apis or ALL_APIS),
            state=StateSnapshot(conversation=dict(self.scope_state("conversation", conversation_id))),
            config=config or {},
        )

    # -- driving a run -----------------------------------------------------------------------
    async def run(self, runner: Runner, ctx: RunContext, *, api: "MemoryRunnerAPI | None" = None,
                  write_user_item: bool = True, strict: bool = True) -> Outcome:
        """Run ``runner`` like the host would and apply its accepted results."""
        conv = ctx.context.conversation_id
        if write_user_item and conv and ctx.event.event_type == "message.received":
            # The host writes the inbound item before the run starts.
            self.add_item(conv, "user", ctx.input.text or "", event_id=ctx.event.event_id)
            ctx.context.transcript_seq = self.latest_seq(conv)
        api = api or MemoryRunnerAPI(self, ctx)
        validator = ResultValidator(run_id=ctx.run_id)
        accepted, rejected = [], []
        async for raw in runner.run(ctx, api):
            verdict = validator.check(raw)
            if not verdict.accepted:
                rejected.append((raw, verdict.verdict, verdict.reason))
                continue
            result = verdict.result
            accepted.append(result)
            if result.type == "state.updated":
                scope = result.data["scope"]
                self.scope_state(scope, api.scope_id(scope))[result.data["key"]] = result.data["value"]
            elif result.type == "message.completed" and conv:
                msg = result.data["message"]
                self.add_item(conv, msg.get("role") or "assistant", msg.get("content") or "",
                              event_id=ctx.event.event_id, run_id=ctx.run_id)
        api.finished = True
        if strict and rejected:
            raise AssertionError(f"results rejected by ResultValidator: {rejected}")
        return Outcome(results=accepted, terminal=validator.finish(), api=api, rejected=rejected)


class MemoryRunnerAPI(RunnerAPI):
    """RunnerAPI for one run over a :class:`MemoryHost`; records every call in ``.calls``."""

    def __init__(self, host: MemoryHost, ctx: RunContext, *,
                 on_tool_call: Callable[["MemoryRunnerAPI", str, dict[str, Any]], Awaitable[None] | None] | None = None
                 ) -> None:
        self.host = host
        self.ctx = ctx
        self.run_id = ctx.run_id
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.steering: list[SteeringItem] = []
        self.history_returned: list[TranscriptItem] = []
        self.on_tool_call = on_tool_call
        self.finished = False

    # -- helpers -----------------------------------------------------------------
    def _record(self, name: str, **kwargs: Any) -> None:
        if self.finished:
            raise unauthorized("run is finished", run_id=self.run_id)
        self.calls.append((name, kwargs))

    def calls_of(self, name: str) -> list[dict[str, Any]]:
        return [kw for n, kw in self.calls if n == name]

    def scope_id(self, scope: str) -> str:
        ctx = self.ctx
        if scope == "conversation":
            return ctx.context.conversation_id or "-"
        if scope == "actor":
            return f"{ctx.actor.actor_type}:{ctx.actor.actor_id}" if ctx.actor else "-"
        if scope == "subject":
            return f"{ctx.subject.subject_type}:{ctx.subject.subject_id}" if ctx.subject else "-"
        return self.host.runner_id

    def _model_op(self, model_id: str, op: str) -> None:
        for m in self.ctx.resources.models:
            if m.model_id == model_id and op in m.operations:
                return
        raise unauthorized(f"model {model_id!r} ({op}) is not granted", run_id=self.run_id)

    def _tool_op(self, tool_name: str, op: str) -> None:
        for t in self.ctx.resources.tools:
            if t.tool_name == tool_name and op in t.operations:
                return
        raise unauthorized(f"tool {tool_name!r} ({op}) is not granted", run_id=self.run_id)

    def queue_steering(self, text: str, *, event_type: str = "message.received") -> SteeringItem:
        item = SteeringItem(claimed_run_id=self.run_id, runner_id=self.host.runner_id, claimed_at=int(time.time()),
                            event=EventContext(event_id=f"evt_{uuid.uuid4().hex}", event_type=event_type,
                                               source="api"),
                            input=InputContext(text=text))
        self.steering.append(item)
        conv = self.ctx.context.conversation_id
        if conv:  # the host still writes the steered user message to the transcript
            self.host.add_item(conv, "user", text, event_id=item.event.event_id)
        return item

    # -- models --------------------------------------------------------------------
    async def invoke_llm(self, model_id: str, messages: list[dict[str, Any]], *,
                         tools: list[dict[str, Any]] | None = None,
                         params: dict[str, Any] | None = None) -> dict[str, Any]:
        self._record("invoke_llm", model_id=model_id, messages=messages, tools=tools, params=params)
        self._model_op(model_id, "invoke")
        return await self.host.models.invoke(model_id, messages, tools, params)

    async def invoke_llm_stream(self, model_id: str, messages: list[dict[str, Any]], *,
                                tools: list[dict[str, Any]] | None = None,
                                params: dict[str, Any] | None = None) -> AsyncIterator[dict[str, Any]]:
        self._record("invoke_llm_stream", model_id=model_id, messages=messages, tools=tools, params=params)
        self._model_op(model_id, "stream")
        async for chunk in self.host.models.stream(model_id, messages, tools, params):
            yield chunk

    async def invoke_rerank(self, model_id: str, query: str, documents: list[str],
                            top_n: int | None = None, *, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        self._record("invoke_rerank", model_id=model_id, query=query, top_n=top_n, params=params)
        self._model_op(model_id, "rerank")
        return await self.host.models.rerank(model_id, query, documents, top_n, params)

    async def count_tokens(self, model_id: str, messages: list[dict[str, Any]], *,
                           tools: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        self._record("count_tokens", model_id=model_id, messages=messages, tools=tools)
        self._model_op(model_id, "count_tokens")
        return await self.host.models.count_tokens(model_id, messages, tools)

    async def invoke_embedding(self, model_id: str, texts: list[str]) -> dict[str, Any]:
        self._record("invoke_embedding", model_id=model_id, texts=texts)
        self._model_op(model_id, "invoke")
        return await self.host.models.embed(model_id, texts)

    # -- tools & knowledge ------------------------------------------------------------
    async def get_tool_detail(self, tool_name: str) -> dict[str, Any]:
        self._record("get_tool_detail", tool_name=tool_name)
        self._tool_op(tool_name, "detail")
        return await self.host.tools.detail(tool_name)

    async def call_tool(self, tool_name: str, parameters: dict[str, Any]) -> dict[str, Any]:
        self._record("call_tool", tool_name=tool_name, parameters=parameters)
        self._tool_op(tool_name, "call")
        if self.on_tool_call is not None:
            maybe = self.on_tool_call(self, tool_name, parameters)
            if maybe is not None:
                await maybe
        return await self.host.tools.call(tool_name, parameters)

    async def retrieve_knowledge(self, kb_id: str, query: str, top_k: int = 5, *,
                                 filters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Word-overlap ranking over the host's documents, answered in the real host's shape
        (LangBot ``RetrievalResultEntry``); ``filters`` use the real store's grammar."""
        from actors.core.runner_api import retrieval_entry
        from store.knowledge import compile_filter

        self._record("retrieve_knowledge", kb_id=kb_id, query=query, top_k=top_k, filters=filters)
        if not any(kb.kb_id == kb_id and "retrieve" in kb.operations for kb in self.ctx.resources.knowledge_bases):
            raise unauthorized(f"knowledge base {kb_id!r} (retrieve) is not granted")
        keep = compile_filter(filters)
        q = Counter(re.findall(r"\w+", query.lower()))
        scored = []
        for n, doc in enumerate(self.host.knowledge.get(kb_id, [])):
            d = Counter(re.findall(r"\w+", str(doc.get("content", "")).lower()))
            score = sum(min(q[t], d[t]) for t in q)
            hit = {"doc_id": doc.get("id") or f"doc{n}", "title": doc.get("title"), "content": doc.get("content"),
                   "metadata": dict(doc.get("metadata") or {}), "score": float(score),
                   "distance": 1.0 / (1.0 + score)}
            if score and (keep is None or keep(hit)):
                scored.append(hit)
        scored.sort(key=lambda r: -r["score"])
        return [retrieval_entry(kb_id, h) for h in scored[:top_k]]

    # -- history & events ------------------------------------------------------------------
    async def history_page(self, conversation_id: str | None = None, *,
                           before_cursor: str | None = None, after_cursor: str | None = None,
                           limit: int = 50,
                           direction: Literal["backward", "forward"] = "backward") -> HistoryPage:
        self._record("history_page", conversation_id=conversation_id, before_cursor=before_cursor,
                     after_cursor=after_cursor, limit=limit, direction=direction)
        if not self.ctx.context.available_apis.history_page:
            raise unauthorized("history.page is not granted")
        conv = conversation_id or self.ctx.context.conversation_id
        if conv != self.ctx.context.conversation_id:
            raise unauthorized("history of another conversation is not granted")
        if not 1 <= limit <= 100:
            raise invalid_argument("limit must be within 1..100")
        items = list(self.host.transcript.get(conv, []))
        if before_cursor:
            before = _seq_of(before_cursor)
            items = [i for i in items if (i.seq or 0) < before]
        if after_cursor:
            after = _seq_of(after_cursor)
            items = [i for i in items if (i.seq or 0) > after]
        if direction == "backward":
            page, has_more = items[-limit:], len(items) > limit
            next_cursor = page[0].cursor if has_more and page else None
        else:
            page, has_more = items[:limit], len(items) > limit
            next_cursor = page[-1].cursor if has_more and page else None
        self.history_returned.extend(page)
        return HistoryPage(items=page, next_cursor=next_cursor, has_more=has_more,
                           total_count=len(self.host.transcript.get(conv, [])))

    async def history_search(self, query: str, filters: dict[str, Any] | None = None,
                             top_k: int = 10) -> HistorySearchResult:
        self._record("history_search", query=query, filters=filters, top_k=top_k)
        conv = self.ctx.context.conversation_id
        hits = [i for i in self.host.transcript.get(conv, []) if query.lower() in (i.content or "").lower()]
        return HistorySearchResult(items=hits[:top_k], total_count=len(hits), query=query)

    async def event_get(self, event_id: str) -> EventRecord:
        self._record("event_get", event_id=event_id)
        if event_id not in self.host.events:
            raise not_found(f"event {event_id!r} not found")
        return self.host.events[event_id]

    async def event_page(self, conversation_id: str | None = None, *, event_types: list[str] | None = None,
                         before_cursor: str | None = None, limit: int = 50) -> EventPage:
        self._record("event_page", conversation_id=conversation_id, event_types=event_types)
        return EventPage(items=[e for e in self.host.events.values()
                                if not event_types or e.event_type in event_types][:limit])

    # -- steering ----------------------------------------------------------------------------------
    async def steering_pull(self, mode: Literal["all", "one-at-a-time"] = "all",
                            limit: int | None = None) -> SteeringPullResult:
        self._record("steering_pull", mode=mode, limit=limit)
        if not self.ctx.context.available_apis.steering_pull:
            raise unauthorized("steering_pull is not granted")
        n = 1 if mode == "one-at-a-time" else len(self.steering)
        if limit is not None:
            n = min(n, limit)
        pulled, self.steering = self.steering[:n], self.steering[n:]
        return SteeringPullResult(items=pulled)

    # -- artifacts -------------------------------------------------------------------------------------
    async def artifact_metadata(self, artifact_id: str) -> ArtifactMetadata:
        self._record("artifact_metadata", artifact_id=artifact_id)
        raise not_found(f"artifact {artifact_id!r} not found")

    async def artifact_read(self, artifact_id: str) -> ArtifactReadResult:
        self._record("artifact_read", artifact_id=artifact_id)
        raise not_found(f"artifact {artifact_id!r} not found")

    async def artifact_read_range(self, artifact_id: str, offset: int, length: int) -> ArtifactReadResult:
        self._record("artifact_read_range", artifact_id=artifact_id, offset=offset, length=length)
        raise not_found(f"artifact {artifact_id!r} not found")

    # -- state -----------------------------------------------------------------------------------------
    def _state(self, scope: str) -> dict[str, Any]:
        if not self.ctx.context.available_apis.state:
            raise unauthorized("state is not granted")
        if scope not in ("conversation", "actor", "subject", "runner"):
            raise invalid_argument(f"unknown state scope {scope!r}")
        return self.host.scope_state(scope, self.scope_id(scope))

    async def state_get(self, scope: str, key: str) -> StateEntry:
        self._record("state_get", scope=scope, key=key)
        store = self._state(scope)
        if key not in store:
            raise not_found(f"state key {key!r} not found")
        return StateEntry(key=key, value=store[key])

    async def state_set(self, scope: str, key: str, value: Any) -> StateEntry:
        self._record("state_set", scope=scope, key=key)
        self._state(scope)[key] = value
        return StateEntry(key=key, value=value, updated_at=int(time.time()))

    async def state_delete(self, scope: str, key: str) -> bool:
        self._record("state_delete", scope=scope, key=key)
        return self._state(scope).pop(key, None) is not None

    async def state_list(self, scope: str, prefix: str = "", limit: int = 100) -> StateList:
        self._record("state_list", scope=scope, prefix=prefix)
        items = [StateEntry(key=k, value=v) for k, v in sorted(self._state(scope).items()) if k.startswith(prefix)]
        return StateList(items=items[:limit], has_more=len(items) > limit)

    # -- storage ------------------------------------------------------------------------------------------
    async def storage_get(self, area: Literal["plugin", "workspace"], key: str) -> Any:
        self._record("storage_get", area=area, key=key)
        store = self.host.scope_state(f"storage:{area}", "-")
        if key not in store:
            raise not_found(f"storage key {key!r} not found")
        return store[key]

    async def storage_set(self, area: Literal["plugin", "workspace"], key: str, value: Any) -> None:
        self._record("storage_set", area=area, key=key)
        self.host.scope_state(f"storage:{area}", "-")[key] = value

    async def storage_delete(self, area: Literal["plugin", "workspace"], key: str) -> bool:
        self._record("storage_delete", area=area, key=key)
        return self.host.scope_state(f"storage:{area}", "-").pop(key, None) is not None

    async def storage_keys(self, area: Literal["plugin", "workspace"], prefix: str = "") -> list[str]:
        self._record("storage_keys", area=area, prefix=prefix)
        return sorted(k for k in self.host.scope_state(f"storage:{area}", "-") if k.startswith(prefix))

    # -- run ledger ------------------------------------------------------------------------------------------
    async def run_get(self, run_id: str | None = None) -> RunRecord:
        self._record("run_get", run_id=run_id)
        if run_id not in (None, self.run_id):
            raise not_found(f"run {run_id!r} not found")
        return RunRecord(run_id=self.run_id, status="running",
                         conversation_id=self.ctx.context.conversation_id, runner_id=self.host.runner_id)

    async def run_list(self, conversation_id: str | None = None, *, statuses: list[str] | None = None,
                       before_cursor: str | None = None, limit: int = 50) -> RunPage:
        self._record("run_list", conversation_id=conversation_id)
        return RunPage(items=[await self.run_get()], total_count=1)

    async def run_events_page(self, run_id: str | None = None, *, after_cursor: str | None = None,
                              limit: int = 50, before_cursor: str | None = None,
                              direction: Literal["forward", "backward"] = "forward") -> RunEventPage:
        self._record("run_events_page", run_id=run_id, after_cursor=after_cursor, before_cursor=before_cursor,
                     direction=direction)
        return RunEventPage()

    async def run_cancel(self, run_id: str, reason: str | None = None) -> RunRecord:
        self._record("run_cancel", run_id=run_id)
        raise RunnerHostError(ErrorCode.UNAUTHORIZED, "run_cancel is not granted")
