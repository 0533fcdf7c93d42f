"""An in-memory host for driving runners in tests (no Ray, no database).

:class:`MemoryHost` keeps the facts a real host would — transcript (with
per-conversation ``seq`` and opaque cursors), state by scope, knowledge bases —
and routes models to a real :class:`~actors.providers.ModelRegistry` and tools to
a real :class:`~actors.providers.ToolRegistry`. :meth:`MemoryHost.run` plays the
host's part around one run: writes the inbound user item, checks every result
with :class:`~protocol.results.ResultValidator`, persists ``state.updated`` and
the ``message.completed`` assistant item.

:class:`MemoryRunnerAPI` is the real runner-side client
(:class:`~actors.core.api_client.RunnerApiClient`) wired, in process, to the real
:class:`~actors.core.runner_api.RunnerApiService` and
:class:`~actors.core.authz.AccessSnapshot` of the run: the grants the test put in
the context (``ctx.resources`` / ``available_apis``) become the run's frozen
snapshot, so every check is the host's own — this module only keeps the facts
(:class:`MemoryBackend`). Every call is recorded in ``.calls`` so tests can
assert what the runner asked for; ``queue_steering`` / ``on_tool_call`` let a
test inject steered messages mid-run.
"""
from __future__ import annotations

import base64
import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable

from actors.core.api_client import RunnerApiClient
from actors.core.authz import AccessSnapshot
from actors.core.runner_api import RunIdentity, RunnerApiService
from actors.core.steering import SteeringEntry, SteeringQueue
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
from protocol.errors import invalid_argument, not_found, unauthorized
from protocol.pages import (
    ArtifactMetadata,
    ArtifactReadResult,
    EventRecord,
    HistoryPage,
    HistorySearchResult,
    RunEventPage,
    RunRecord,
    StateEntry,
    StateList,
    SteeringItem,
    TranscriptItem,
)
from protocol.read_scope import ReadScope
from protocol.results import ResultValidator, RunResult
from protocol.runner import Runner

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
        self.state: dict[str, dict[str, Any]] = {}  # scope key → {key: value}
        self.kv: dict[tuple[str, str], dict[str, Any]] = {}  # (area, namespace) → {key: value}
        self.events: dict[str, EventRecord] = {}
        self.event_runs: dict[str, str] = {}  # event id → the run it started
        self.runs: dict[str, RunRecord] = {}
        self.artifacts: dict[str, tuple[ArtifactMetadata, bytes]] = {}

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
        return self.state.setdefault(f"{scope}:{scope_id}", {})

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
        self.events[ctx.event.event_id] = EventRecord(
            event_id=ctx.event.event_id, event_type=ctx.event.event_type, source=ctx.event.source or "api",
            conversation_id=conv, bot_id=ctx.conversation.bot_id if ctx.conversation else None,
            input_summary=ctx.input.text, seq=len(self.events) + 1)
        self.event_runs[ctx.event.event_id] = ctx.run_id
        self.runs[ctx.run_id] = RunRecord(run_id=ctx.run_id, event_id=ctx.event.event_id, status="running",
                                          conversation_id=conv, runner_id=self.runner_id,
                                          bot_id=ctx.conversation.bot_id if ctx.conversation else None)
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




def _items(records: list[Any], limit: int) -> dict[str, Any]:
    return {"items": [r.model_dump(mode="json") for r in records[:limit]], "has_more": len(records) > limit,
            "total_count": len(records)}


class MemoryBackend:
    """The runner API service's :class:`~actors.core.runner_api.Backend` over a :class:`MemoryHost`:
    the facts and providers, no grant checks (those are the service's). Reads of events, runs and
    artifacts apply the :class:`ReadScope` the service sends, as the store does."""

    def __init__(self, host: MemoryHost, api: "MemoryRunnerAPI") -> None:
        self.host = host
        self.api = api

    async def read(self, kind: str, **kw: Any) -> Any:
        return await getattr(self, f"_r_{kind}")(**kw)

    async def write(self, kind: str, **kw: Any) -> Any:
        return await getattr(self, f"_w_{kind}")(**kw)

    # -- providers ------------------------------------------------------------------------------
    async def invoke_llm(self, model_id, messages, tools, params):
        return await self.host.models.invoke(model_id, messages, tools, params)

    async def stream_llm(self, model_id, messages, tools, params):
        async for chunk in self.host.models.stream(model_id, messages, tools, params):
            yield chunk

    async def rerank(self, model_id, query, documents, top_n, params=None):
        return await self.host.models.rerank(model_id, query, documents, top_n, params)

    async def count_tokens(self, model_id, messages, tools):
        return await self.host.models.count_tokens(model_id, messages, tools)

    async def embed(self, model_id, texts):
        return await self.host.models.embed(model_id, texts)

    async def knowledge_config(self, kb_id):
        return {}  # no embedding model: bases are searched by words

    async def tool_detail(self, name):
        return await self.host.tools.detail(name)

    async def call_tool(self, name, parameters):
        if self.api.on_tool_call is not None:  # a test's hook runs once the call is authorized
            maybe = self.api.on_tool_call(self.api, name, parameters)
            if maybe is not None:
                await maybe
        return await self.host.tools.call(name, parameters)

    async def _r_knowledge_retrieve(self, kb_id, query, top_k, filters=None, **_vector):
        """Word-overlap ranking over the host's documents, as store hits; ``filters`` use the real
        store's grammar (the service turns hits into LangBot ``RetrievalResultEntry`` entries)."""
        from store.knowledge import compile_filter

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
        return scored[:top_k]

    # -- history --------------------------------------------------------------------------------
    async def _r_history_page(self, conversation_id, before_cursor, after_cursor, limit, direction):
        everything = self.host.transcript.get(conversation_id, [])
        items = list(everything)
        if before_cursor:
            items = [i for i in items if (i.seq or 0) < _seq_of(before_cursor)]
        if after_cursor:
            items = [i for i in items if (i.seq or 0) > _seq_of(after_cursor)]
        if direction == "backward":
            page, has_more = items[-limit:], len(items) > limit
            next_cursor = page[0].cursor if has_more and page else None
        else:
            page, has_more = items[:limit], len(items) > limit
            next_cursor = page[-1].cursor if has_more and page else None
        return HistoryPage(items=page, next_cursor=next_cursor, has_more=has_more,
                           total_count=len(everything)).model_dump(mode="json")

    async def _r_history_search(self, conversation_id, query, top_k, filters):
        hits = [i for i in self.host.transcript.get(conversation_id, [])
                if query.lower() in (i.content or "").lower()]
        return HistorySearchResult(items=hits[:top_k], total_count=len(hits), query=query).model_dump(mode="json")

    # -- events, runs, artifacts (scoped) ---------------------------------------------------------------
    def _event_in(self, scope: ReadScope, record: EventRecord) -> bool:
        return scope.admits(conversation_id=record.conversation_id, run_id=self.host.event_runs.get(record.event_id),
                            bot_id=record.bot_id, workspace_id=record.workspace_id)

    async def _r_event_get(self, event_id, scope):
        record = self.host.events.get(event_id)
        if record is None:
            raise not_found("event not found", event_id=event_id)
        if not self._event_in(ReadScope.parse(scope), record):
            raise unauthorized("event is outside this reader's scope", event_id=event_id)
        return record.model_dump(mode="json")

    async def _r_event_page(self, scope, event_types, before_cursor, limit):
        scope = ReadScope.parse(scope)
        records = [e for e in reversed(self.host.events.values())
                   if self._event_in(scope, e) and (not event_types or e.event_type in event_types)]
        return _items(records, limit)

    def _run(self, run_id: str, scope: Any) -> RunRecord:
        run = self.host.runs.get(run_id)
        if run is None:
            raise not_found("run not found", run_id=run_id)
        if not ReadScope.parse(scope).admits(conversation_id=run.conversation_id, run_id=run.run_id,
                                             bot_id=run.bot_id, workspace_id=run.workspace_id):
            raise unauthorized("run is outside this reader's scope", run_id=run_id)
        return run

    async def _r_run_get(self, run_id, scope):
        return self._run(run_id, scope).model_dump(mode="json")

    async def _r_run_list(self, scope, statuses, before_cursor, limit):
        scope = ReadScope.parse(scope)
        runs = [r for r in reversed(self.host.runs.values())
                if scope.admits(conversation_id=r.conversation_id, run_id=r.run_id, bot_id=r.bot_id,
                                workspace_id=r.workspace_id) and (not statuses or r.status in statuses)]
        return _items(runs, limit)

    async def _r_run_events_page(self, run_id, scope, after_cursor, limit, before_cursor=None, direction="forward"):
        self._run(run_id, scope)
        return RunEventPage().model_dump(mode="json")

    def _artifact(self, artifact_id: str, scope: Any) -> tuple[ArtifactMetadata, bytes]:
        found = self.host.artifacts.get(artifact_id)
        if found is None:
            raise not_found("artifact not found", artifact_id=artifact_id)
        meta = found[0]
        if not ReadScope.parse(scope).admits(conversation_id=meta.conversation_id, run_id=meta.run_id):
            raise unauthorized("artifact is outside this reader's scope", artifact_id=artifact_id)
        return found

    async def _r_artifact_metadata(self, artifact_id, scope):
        return self._artifact(artifact_id, scope)[0].model_dump(mode="json")

    async def _r_artifact_read(self, artifact_id, scope):
        meta, data = self._artifact(artifact_id, scope)
        return await self._r_artifact_read_range(artifact_id, 0, len(data), scope)

    async def _r_artifact_read_range(self, artifact_id, offset, length, scope):
        meta, data = self._artifact(artifact_id, scope)
        chunk = data[offset:offset + length]
        return ArtifactReadResult(artifact_id=artifact_id, offset=offset, length=len(chunk), total_size=len(data),
                                  eof=offset + len(chunk) >= len(data), mime_type=meta.mime_type,
                                  content_base64=base64.b64encode(chunk).decode()).model_dump(mode="json")

    # -- state and storage --------------------------------------------------------------------------------
    async def _r_state_get(self, scope_key, key):
        values = self.host.state.get(scope_key, {})
        return {"key": key, "value": values.get(key), "updated_at": None}

    async def _r_state_list(self, scope_key, prefix, limit):
        items = [StateEntry(key=k, value=v) for k, v in sorted(self.host.state.get(scope_key, {}).items())
                 if k.startswith(prefix)]
        return StateList(items=items[:limit], has_more=len(items) > limit).model_dump(mode="json")

    async def _w_state_set(self, scope_key, key, value, scope, runner_id):
        values = self.host.state.setdefault(scope_key, {})
        previous = {"key": key, "value": values[key]} if key in values else None
        values[key] = value
        return {"entry": StateEntry(key=key, value=value, updated_at=int(time.time())).model_dump(mode="json"),
                "previous": previous}

    async def _w_state_delete(self, scope_key, key):
        values = self.host.state.setdefault(scope_key, {})
        previous = {"key": key, "value": values.pop(key)} if key in values else None
        return {"deleted": previous is not None, "previous": previous}

    async def _r_kv_get(self, area, namespace, key):
        values = self.host.kv.get((area, namespace), {})
        if key not in values:
            raise not_found("storage key not found", key=key)
        return values[key]

    async def _r_kv_keys(self, area, namespace, prefix):
        return sorted(k for k in self.host.kv.get((area, namespace), {}) if k.startswith(prefix))

    async def _w_kv_set(self, area, namespace, key, value):
        self.host.kv.setdefault((area, namespace), {})[key] = value

    async def _w_kv_delete(self, area, namespace, key):
        return self.host.kv.setdefault((area, namespace), {}).pop(key, None) is not None


def snapshot_of(ctx: RunContext, runner_id: str) -> AccessSnapshot:
    """The frozen snapshot whose ``available_apis()``/``resources()`` are what ``ctx`` advertises."""
    apis = ctx.context.available_apis
    flags = lambda **named: frozenset(name for name, on in named.items() if on)  # noqa: E731
    conversation_id = ctx.context.conversation_id
    return AccessSnapshot(
        run_id=ctx.run_id, runner_id=runner_id, conversation_id=conversation_id, thread_id=ctx.context.thread_id,
        models={m.model_id: frozenset(m.operations) for m in ctx.resources.models},
        tools={t.tool_name: frozenset(t.operations) for t in ctx.resources.tools},
        knowledge_bases={k.kb_id: frozenset(k.operations) for k in ctx.resources.knowledge_bases},
        history=flags(page=apis.history_page, search=apis.history_search),
        events=flags(get=apis.event_get, page=apis.event_page),
        artifacts=flags(metadata=apis.artifact_metadata, read=apis.artifact_read),
        storage=flags(plugin=apis.storage, workspace=apis.storage),
        state_ops=flags(read=apis.state, write=apis.state),
        state_scopes=frozenset(["actor", "subject", "runner"] + (["conversation"] if conversation_id else []))
        if apis.state else frozenset(),
        steering=apis.steering_pull,
        run_ledger=flags(get=apis.run_get, list=apis.run_list, events_page=apis.run_events_page,
                         cancel=apis.run_cancel),
    )


class MemoryRunnerAPI(RunnerApiClient):
    """The runner API of one run over a :class:`MemoryHost`, checked by the real service; records every
    call in ``.calls``."""

    def __init__(self, host: MemoryHost, ctx: RunContext, *,
                 on_tool_call: Callable[["MemoryRunnerAPI", str, dict[str, Any]], Awaitable[None] | None] | None = None
                 ) -> None:
        super().__init__(ctx.run_id, token="in-process")
        self.host = host
        self.ctx = ctx
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.history_returned: list[TranscriptItem] = []
        self.on_tool_call = on_tool_call
        self.finished = False
        conv, actor, subject = ctx.conversation, ctx.actor, ctx.subject
        identity = RunIdentity(
            run_id=ctx.run_id, runner_id=host.runner_id, binding_identity="memory",
            bot_id=conv.bot_id if conv else None, workspace_id=conv.workspace_id if conv else None,
            conversation_id=ctx.context.conversation_id, thread_id=ctx.context.thread_id,
            actor_type=actor.actor_type if actor else None, actor_id=actor.actor_id if actor else None,
            subject_type=subject.subject_type if subject else None, subject_id=subject.subject_id if subject else None)
        self._steering = SteeringQueue(64)

        async def pulled(_entries: list[SteeringEntry]) -> None:
            return None
        self.service = RunnerApiService(snapshot_of(ctx, host.runner_id), identity, MemoryBackend(host, self),
                                        self._steering, pulled,
                                        state_scope_key=lambda scope: f"{scope}:{self.scope_id(scope)}")

    # -- transport: the service in this process -------------------------------------------------------
    def _record(self, method: str, kwargs: dict[str, Any]) -> None:
        if self.finished:  # the RunActor refuses every call of a finished run
            raise unauthorized("run is not active", run_id=self.run_id)
        self.calls.append((method, kwargs))

    async def _call(self, method: str, **kwargs: Any) -> Any:
        self._record(method, kwargs)
        return await self.service.call(method, kwargs)

    async def _stream(self, method: str, kwargs: dict[str, Any]) -> AsyncIterator[Any]:
        self._record(method, kwargs)
        async for chunk in self.service.invoke_llm_stream(**kwargs):
            yield chunk

    # -- test helpers --------------------------------------------------------------------------------
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

    def queue_steering(self, text: str, *, event_type: str = "message.received") -> SteeringItem:
        item = SteeringItem(claimed_run_id=self.run_id, runner_id=self.host.runner_id, claimed_at=int(time.time()),
                            event=EventContext(event_id=f"evt_{uuid.uuid4().hex}", event_type=event_type,
                                               source="api"),
                            input=InputContext(text=text))
        self._steering.offer(SteeringEntry(item.event.event_id, item.model_dump(mode="json")))
        conv = self.ctx.context.conversation_id
        if conv:  # the host still writes the steered user message to the transcript
            self.host.add_item(conv, "user", text, event_id=item.event.event_id)
        return item

    async def history_page(self, conversation_id=None, **kwargs: Any) -> HistoryPage:
        page = await super().history_page(conversation_id, **kwargs)
        self.history_returned.extend(page.items)
        return page
