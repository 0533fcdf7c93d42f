"""OpenAI-style agent: an LLM tool loop over the public runner API only.

Per run: read the binding config, pull history through ``api.history_page``
(the context never carries history; the current event's own transcript item is
skipped), optionally retrieve knowledge (RAG) into the system message, compact
old history into a checkpoint when the context budget is exceeded, then loop —
model call (streamed when the surface and the grant allow), tool calls through
``api.call_tool`` with ``tool.call.started/completed`` results, steering pulled
at every turn boundary — and finish with ``message.completed`` + ``run.completed``
(usage aggregated on the terminal result). A model that keeps failing (after the
optional runner-side fallback model) ends the run with a controlled
``run.failed`` ``model.unavailable`` (retryable).
"""
from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from protocol.context import EventContext, InputContext, RunContext
from protocol.errors import RunnerHostError
from protocol.logs import get_logger
from protocol.manifest import Capabilities, ConfigField, Permissions, RunnerManifest
from protocol.pages import TranscriptItem
from protocol.results import RunResult
from protocol.runner import Runner, RunnerAPI

log = get_logger(__name__)

CHECKPOINT_KEY = "runner.compaction.checkpoint"
CHECKPOINT_SCHEMA_VERSION = 1

SUMMARY_SYSTEM_PROMPT = (
    "You compress chat transcripts. Summarize the conversation below so that an assistant can "
    "continue it without the original messages: keep facts, names, numbers, decisions, user "
    "preferences and open questions. Be concise. Reply with the summary only."
)
MAX_TURNS_NOTE = "I stopped after reaching the maximum number of tool steps for this request."
NO_TOOLS_NOTE = "I could not complete this request: the model asked for a tool that is not available."
_MAX_ITEM_CHARS = 8000
_MAX_PASSAGE_CHARS = 2000
_MAX_SUMMARY_INPUT_CHARS = 200_000
_MAX_HISTORY_PAGES = 20


class AgentSettings(BaseModel):
    """The runner's ``runner_config`` (unknown keys — e.g. the host's resource selections — are ignored)."""

    model_config = ConfigDict(extra="ignore")

    system_prompt: str = ""
    model_id: str | None = None
    fallback_model_id: str | None = None
    max_turns: int = Field(default=8, ge=1, le=64)
    history_limit: int = Field(default=20, ge=0, le=1000)
    context_budget_tokens: int | None = Field(default=None, ge=64)
    compaction_keep_recent: int = Field(default=4, ge=0, le=200)
    knowledge_base_ids: list[str] | None = None
    rag: bool = False
    rag_top_k: int = Field(default=4, ge=1, le=50)
    rag_max_chars: int = Field(default=8000, ge=200)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1)
    use_tools: bool = True
    stream: bool = True
    steering: bool = True
    tool_result_max_chars: int = Field(default=16000, ge=100)


def _config_schema() -> list[ConfigField]:
    def f(name: str, type_: str, default: Any, en: str, **kw: Any) -> ConfigField:
        return ConfigField(name=name, type=type_, default=default, label={"en_US": en}, **kw)

    return [
        f("system_prompt", "text", "", "System prompt"),
        f("model_id", "llm-model-selector", None, "Model (default: first granted model)"),
        f("fallback_model_id", "llm-model-selector", None, "Fallback model"),
        f("max_turns", "integer", 8, "Max model calls per run (tool loop)"),
        f("history_limit", "integer", 20, "History items pulled per run"),
        f("context_budget_tokens", "integer", None, "Context budget (tokens, chars/4); compaction above it"),
        f("compaction_keep_recent", "integer", 4, "History items kept verbatim when compacting"),
        f("knowledge_base_ids", "knowledge-base-multi-selector", None, "Knowledge bases to retrieve from"),
        f("rag", "boolean", False, "Retrieve from all granted knowledge bases"),
        f("rag_top_k", "integer", 4, "Passages per knowledge base"),
        f("temperature", "number", None, "Temperature"),
        f("max_tokens", "integer", None, "Max completion tokens"),
        f("use_tools", "boolean", True, "Offer granted tools to the model"),
        f("stream", "boolean", True, "Stream deltas when the surface supports it"),
        f("steering", "boolean", True, "Absorb steered messages at turn boundaries"),
    ]


@dataclass
class _Run:
    ctx: RunContext
    api: RunnerAPI
    settings: AgentSettings
    model_id: str
    fallback_model_id: str | None
    conversation_id: str | None
    usage: dict[str, int] = field(default_factory=lambda: {"prompt_tokens": 0, "completion_tokens": 0,
                                                           "total_tokens": 0})
    model_calls: int = 0
    switched: bool = False
    streamed: bool = False  # whether any message.delta went out
    last_call_streamed: bool = False
    text_parts: list[str] = field(default_factory=list)
    summary: str | None = None
    history: list[TranscriptItem] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return self.ctx.run_id

    def add_usage(self, usage: Any) -> None:
        self.model_calls += 1
        if isinstance(usage, dict):
            for key in self.usage:
                if isinstance(usage.get(key), int):
                    self.usage[key] += usage[key]

    def model_ops(self, model_id: str) -> set[str]:
        for m in self.ctx.resources.models:
            if m.model_id == model_id:
                return set(m.operations)
        return set()


class OpenAIAgentRunner(Runner):
    manifest = RunnerManifest(
        id="plugin:builtin/openai-agent/default",
        label="OpenAI-compatible agent",
        description=("LLM tool-loop agent on any OpenAI-compatible model: history via the runner API, "
                     "tool calls, RAG, steering and history compaction."),
        version="1.0.0",
        execution="in_actor",
        capabilities=Capabilities(streaming=True, tool_calling=True, knowledge_retrieval=True, steering=True),
        permissions=Permissions(
            models=["invoke", "stream"],
            tools=["detail", "call"],
            knowledge_bases=["list", "retrieve"],
            history=["page", "search"],
            state=["read", "write"],
            steering=["pull"],
        ),
        config_schema=_config_schema(),
    )

    async def run(self, ctx: RunContext, api: RunnerAPI) -> AsyncIterator[RunResult]:
        run_id = ctx.run_id
        try:
            settings = AgentSettings.model_validate(ctx.config or {})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            yield RunResult.failed(run_id, "runner.config_invalid", f"{where}: {first.get('msg')}")
            return
        model_id = settings.model_id or _first_model(ctx)
        if not model_id:
            yield RunResult.failed(run_id, "model.unavailable", "no model is granted to this run", retryable=False)
            return
        st = _Run(ctx=ctx, api=api, settings=settings, model_id=model_id,
                  fallback_model_id=settings.fallback_model_id if settings.fallback_model_id != model_id else None,
                  conversation_id=ctx.context.conversation_id or (ctx.conversation.conversation_id
                                                                  if ctx.conversation else None))

        checkpoint = _valid_checkpoint(ctx.state.conversation.get(CHECKPOINT_KEY), st.conversation_id)
        if checkpoint is not None:
            st.summary = checkpoint["summary"]
        st.history = await self._pull_history(st, checkpoint["covers_until"] if checkpoint else None)
        current = _event_messages(ctx.event, ctx.input)
        knowledge = await self._retrieve(st, _input_text(ctx.input))

        async for result in self._maybe_compact(st, knowledge, current):
            yield result

        tools, name_map = (await _tool_definitions(ctx, api)) if settings.use_tools else ([], {})
        messages = self._build_messages(st, knowledge, current)
        params: dict[str, Any] = {}
        if settings.temperature is not None:
            params["temperature"] = settings.temperature
        if settings.max_tokens is not None:
            params["max_tokens"] = settings.max_tokens

        finish_reason = "stop"
        turn = 0
        while True:
            last_turn = turn == settings.max_turns - 1
            async for steered in self._pull_steering(st):
                messages.append(steered)
            turn_params = dict(params)
            if tools and last_turn:
                turn_params["tool_choice"] = "none"
            response = None
            error: BaseException | None = None
            first_delta = True
            async for kind, payload in self._call_model(st, messages, tools or None, turn_params or None):
                if kind == "delta":
                    if first_delta and st.text_parts:
                        st.text_parts.append("\n\n")
                        yield RunResult.delta(run_id, "\n\n")
                    first_delta = False
                    st.streamed = True
                    st.text_parts.append(payload)
                    yield RunResult.delta(run_id, payload)
                elif kind == "final":
                    response = payload
                else:
                    error = payload
            turn += 1
            if response is None:
                message = error.message if isinstance(error, RunnerHostError) else type(error).__name__
                yield RunResult.failed(run_id, "model.unavailable", f"model call failed: {message}", retryable=True)
                return
            reply = response.get("message") or {}
            text = _content_text(reply.get("content"))
            if first_delta and text:  # not streamed: the text arrives whole
                piece = ("\n\n" if st.text_parts else "") + text
                st.text_parts.append(piece)
                if st.streamed:  # keep the deltas adding up to the completed message
                    yield RunResult.delta(run_id, piece)
            tool_calls = [tc for tc in (reply.get("tool_calls") or []) if isinstance(tc, dict)]
            if tool_calls and not last_turn and tools:
                calls = _with_ids(tool_calls)
                messages.append({"role": "assistant", "content": text or None, "tool_calls": calls})
                for call in calls:
                    async for result in self._run_tool(st, call, name_map, messages):
                        yield result
                continue  # steering is pulled at the top of the next turn
            if tool_calls:  # asked for tools it cannot have now: finish with what we have
                if last_turn:
                    finish_reason = "max_turns"
                if not "".join(st.text_parts).strip():
                    note = MAX_TURNS_NOTE if last_turn else NO_TOOLS_NOTE
                    st.text_parts.append(note)
                    if st.streamed or st.last_call_streamed:
                        yield RunResult.delta(run_id, note)
                break
            # A final answer. Before finishing, absorb steering (only if a turn is left to answer it).
            if not last_turn:
                steered = [m async for m in self._pull_steering(st)]
                if steered:
                    messages.append({"role": "assistant", "content": text})
                    messages.extend(steered)
                    continue
            break

        yield RunResult.completed_message(run_id, "".join(st.text_parts))
        yield RunResult(run_id=run_id, type="run.completed", data={"finish_reason": finish_reason},
                        usage={**st.usage, "model_calls": st.model_calls, "model_id": st.model_id})

    # -- history ----------------------------------------------------------------
    async def _pull_history(self, st: _Run, covers_until: int | None) -> list[TranscriptItem]:
        ctx, api, want = st.ctx, st.api, st.settings.history_limit
        if want <= 0 or not ctx.context.available_apis.history_page or not st.conversation_id:
            return []
        fetch_cap = want + 1  # +1: the current event's own item is usually already in the transcript
        latest = ctx.context.transcript_seq
        if covers_until is not None and latest is not None:
            fetch_cap = min(fetch_cap, latest - covers_until)
            if fetch_cap <= 0:
                return []
        collected: list[TranscriptItem] = []
        before: str | None = None
        fetched = 0
        try:
            for _ in range(_MAX_HISTORY_PAGES):
                limit = min(100, fetch_cap - fetched)
                if limit <= 0:
                    break
                page = await api.history_page(st.conversation_id, before_cursor=before, limit=limit,
                                              direction="backward")
                if not page.items:
                    break
                fetched += len(page.items)
                ordered = _chronological(page.items)
                reached_checkpoint = False
                for item in reversed(ordered):
                    if covers_until is not None and item.seq is not None and item.seq <= covers_until:
                        reached_checkpoint = True
                        break
                    if item.event_id == ctx.event.event_id or (item.run_id and item.run_id == ctx.run_id):
                        continue
                    collected.append(item)
                    if len(collected) >= want:
                        break
                if reached_checkpoint or len(collected) >= want or not page.has_more:
                    break
                before = ordered[0].cursor or page.next_cursor
                if not before:
                    break
        except RunnerHostError as exc:
            log.warning("run %s: history unavailable (%s)", ctx.run_id, exc.code.value)
        return list(reversed(collected))

    # -- knowledge ----------------------------------------------------------------
    async def _retrieve(self, st: _Run, query: str) -> str:
        settings, ctx = st.settings, st.ctx
        granted = [kb.kb_id for kb in ctx.resources.knowledge_bases if "retrieve" in kb.operations]
        if settings.knowledge_base_ids is not None:
            kb_ids = [k for k in settings.knowledge_base_ids if k in granted]
            skipped = set(settings.knowledge_base_ids) - set(kb_ids)
            if skipped:
                log.warning("run %s: knowledge bases not granted: %s", ctx.run_id, sorted(skipped))
        elif settings.rag:
            kb_ids = granted
        else:
            kb_ids = []
        if not kb_ids or not query.strip():
            return ""
        passages: list[str] = []
        for kb_id in kb_ids:
            try:
                hits = await st.api.retrieve_knowledge(kb_id, query, top_k=settings.rag_top_k)
            except RunnerHostError as exc:
                log.warning("run %s: retrieval from %s failed (%s)", ctx.run_id, kb_id, exc.code.value)
                continue
            for hit in hits or []:
                text = _passage_text(hit)
                if text:
                    passages.append(f"[{len(passages) + 1}] ({kb_id}) {text[:_MAX_PASSAGE_CHARS]}")
        if not passages:
            return ""
        body, used = [], 0
        for p in passages:
            if used + len(p) > settings.rag_max_chars and body:
                break
            body.append(p)
            used += len(p)
        return ("Relevant knowledge retrieved for the current message (use it when it helps; "
                "say so when it does not answer the question):\n" + "\n".join(body))

    # -- compaction ---------------------------------------------------------------
    def _build_messages(self, st: _Run, knowledge: str, current: list[dict[str, Any]]) -> list[dict[str, Any]]:
        system_parts = []
        if st.settings.system_prompt.strip():
            system_parts.append(st.settings.system_prompt.strip())
        if st.summary:
            system_parts.append("Summary of the earlier conversation:\n" + st.summary)
        if knowledge:
            system_parts.append(knowledge)
        messages: list[dict[str, Any]] = []
        if system_parts:
            messages.append({"role": "system", "content": "\n\n".join(system_parts)})
        messages.extend(m for m in (_item_message(it) for it in st.history) if m is not None)
        messages.extend(current)
        return messages

    async def _maybe_compact(self, st: _Run, knowledge: str,
                             current: list[dict[str, Any]]) -> AsyncIterator[RunResult]:
        budget = st.settings.context_budget_tokens
        if not budget or not st.history:
            return
        tokens_before = estimate_tokens(self._build_messages(st, knowledge, current))
        if tokens_before <= budget:
            return
        keep = st.settings.compaction_keep_recent
        older = st.history[: max(0, len(st.history) - keep)]
        older = older[: next((i for i, it in enumerate(older) if it.seq is None), len(older))]
        if not older:
            return
        transcript = "\n".join(f"{it.role}: {_item_text(it)[:_MAX_ITEM_CHARS]}" for it in older)
        prompt = (f"Earlier summary:\n{st.summary}\n\n" if st.summary else "") + f"Conversation:\n{transcript}"
        request = [{"role": "system", "content": SUMMARY_SYSTEM_PROMPT},
                   {"role": "user", "content": prompt[-_MAX_SUMMARY_INPUT_CHARS:]}]
        summary = None
        for model_id in self._candidates(st):
            try:
                response = await st.api.invoke_llm(model_id, request)
            except Exception as exc:  # noqa: BLE001 — compaction is best effort
                log.warning("run %s: summarization with %s failed (%s)", st.run_id, model_id,
                            exc.code.value if isinstance(exc, RunnerHostError) else type(exc).__name__)
                continue
            st.add_usage(response.get("usage"))
            summary = _content_text((response.get("message") or {}).get("content")).strip()
            if summary:
                break
        if not summary:
            return
        covers_until = max(it.seq for it in older if it.seq is not None)
        checkpoint = {
            "schema_version": CHECKPOINT_SCHEMA_VERSION,
            "summary": summary,
            "covers_until": covers_until,
            "tokens_before": tokens_before,
            "created_at": int(time.time()),
            "conversation_id": st.conversation_id,
        }
        st.summary = summary
        st.history = st.history[len(older):]
        if st.ctx.context.available_apis.state:
            yield RunResult.state(st.run_id, "conversation", CHECKPOINT_KEY, checkpoint)

    # -- model ---------------------------------------------------------------------
    def _candidates(self, st: _Run) -> list[str]:
        out = [st.model_id]
        if st.fallback_model_id and not st.switched and st.fallback_model_id != st.model_id:
            out.append(st.fallback_model_id)
        return out

    async def _call_model(self, st: _Run, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None,
                          params: dict[str, Any] | None) -> AsyncIterator[tuple[str, Any]]:
        """Yields ``("delta", text)``…, then ``("final", response)`` or ``("error", exc)``."""
        last_error: BaseException | None = None
        for model_id in self._candidates(st):
            streamed = False
            use_stream = (st.settings.stream and st.ctx.delivery.supports_streaming
                          and "stream" in st.model_ops(model_id))
            st.last_call_streamed = use_stream
            try:
                if use_stream:
                    final = None
                    async for chunk in st.api.invoke_llm_stream(model_id, messages, tools=tools, params=params):
                        if not isinstance(chunk, dict):
                            continue
                        if "message" in chunk:
                            final = chunk
                            continue
                        content = (chunk.get("delta") or {}).get("content")
                        if isinstance(content, str) and content:
                            streamed = True
                            yield "delta", content
                    if final is None:
                        raise RunnerHostError("runtime_error", "model stream ended without a final message",
                                              retryable=True)
                else:
                    final = await st.api.invoke_llm(model_id, messages, tools=tools, params=params)
            except Exception as exc:  # noqa: BLE001 — any host/transport failure of a model call
                last_error = exc
                log.warning("run %s: model %s failed (%s)", st.run_id, model_id,
                            exc.code.value if isinstance(exc, RunnerHostError) else type(exc).__name__)
                if streamed:
                    break  # partial output already went out: no silent retry on another model
                continue
            if model_id != st.model_id:
                log.info("run %s: switched to fallback model %s", st.run_id, model_id)
                st.model_id, st.switched = model_id, True
            st.add_usage(final.get("usage"))
            yield "final", final
            return
        yield "error", last_error or RunnerHostError("runtime_error", "no model available", retryable=True)

    # -- tools ------------------------------------------------------------------------
    async def _run_tool(self, st: _Run, call: dict[str, Any], name_map: dict[str, str],
                        messages: list[dict[str, Any]]) -> AsyncIterator[RunResult]:
        fn = call.get("function") or {}
        call_id = call["id"]
        tool_name = name_map.get(fn.get("name") or "", fn.get("name") or "")
        raw_args = fn.get("arguments")
        error: str | None = None
        parameters: dict[str, Any] = {}
        try:
            parsed = json.loads(raw_args) if isinstance(raw_args, str) and raw_args.strip() else (raw_args or {})
            if not isinstance(parsed, dict):
                raise ValueError
            parameters = parsed
        except ValueError:
            error = "invalid_argument: tool arguments are not a JSON object"
        yield RunResult(run_id=st.run_id, type="tool.call.started",
                        data={"tool_call_id": call_id, "tool_name": tool_name, "parameters": parameters})
        result: dict[str, Any] | None = None
        if error is None and tool_name not in name_map.values():
            error = f"not_found: tool {tool_name!r} is not available"
        if error is None:
            try:
                result = await st.api.call_tool(tool_name, parameters)
                if not isinstance(result, dict):
                    result = {"result": result}
            except RunnerHostError as exc:
                error = f"{exc.code.value}: {exc.message}"
            except Exception as exc:  # noqa: BLE001
                error = f"runtime_error: {type(exc).__name__}"
        yield RunResult(run_id=st.run_id, type="tool.call.completed",
                        data={"tool_call_id": call_id, "tool_name": tool_name, "result": result, "error": error})
        content = json.dumps(result if error is None else {"error": error}, ensure_ascii=False, default=str)
        limit = st.settings.tool_result_max_chars
        if len(content) > limit:
            content = content[:limit] + " …[truncated]"
        messages.append({"role": "tool", "tool_call_id": call_id, "content": content})

    # -- steering -----------------------------------------------------------------------
    async def _pull_steering(self, st: _Run) -> AsyncIterator[dict[str, Any]]:
        if not st.settings.steering or not st.ctx.context.available_apis.steering_pull:
            return
        try:
            pulled = await st.api.steering_pull("all")
        except RunnerHostError as exc:
            log.warning("run %s: steering pull failed (%s)", st.run_id, exc.code.value)
            return
        for item in pulled.items:
            for message in _event_messages(item.event, item.input):
                yield message


# -- helpers -----------------------------------------------------------------------------

def estimate_tokens(messages: list[dict[str, Any]]) -> int:
    """Rough token count: characters / 4 (content + tool calls)."""
    chars = 0
    for m in messages:
        chars += len(_content_text(m.get("content")))
        if m.get("tool_calls"):
            chars += len(json.dumps(m["tool_calls"]))
    return chars // 4


def _first_model(ctx: RunContext) -> str | None:
    for m in ctx.resources.models:
        if {"invoke", "stream"} & set(m.operations):
            return m.model_id
    return ctx.resources.models[0].model_id if ctx.resources.models else None


def _valid_checkpoint(raw: Any, conversation_id: str | None) -> dict[str, Any] | None:
    if not isinstance(raw, dict):
        return None
    if raw.get("schema_version") != CHECKPOINT_SCHEMA_VERSION:
        return None
    if conversation_id is None or raw.get("conversation_id") != conversation_id:
        return None
    covers = raw.get("covers_until")
    if isinstance(covers, bool) or not isinstance(covers, int) or not isinstance(raw.get("summary"), str):
        return None
    return raw


def _chronological(items: list[TranscriptItem]) -> list[TranscriptItem]:
    if all(it.seq is not None for it in items):
        return sorted(items, key=lambda it: it.seq)  # type: ignore[arg-type,return-value]
    return list(items)


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text") or "") for p in content if isinstance(p, dict))
    return str(content)


def _item_text(item: TranscriptItem) -> str:
    if item.content:
        return item.content
    if item.content_json:
        return json.dumps(item.content_json, ensure_ascii=False, default=str)
    return ""


def _item_message(item: TranscriptItem) -> dict[str, Any] | None:
    text = _item_text(item)[:_MAX_ITEM_CHARS]
    if item.attachment_refs:
        names = ", ".join(str(a.get("name") or a.get("type") or "file") for a in item.attachment_refs)
        text = f"{text}\n[attachments: {names}]".strip()
    if not text:
        return None
    if item.item_type == "message" and item.role in ("user", "assistant"):
        return {"role": item.role, "content": text}
    # Non-message facts (events, tool records, notes) are context, never fake user turns.
    return {"role": "system", "content": f"[{item.item_type} · {item.role}] {text}"}


def _input_text(inp: InputContext) -> str:
    if inp.text:
        return inp.text
    return " ".join(p.text for p in inp.contents if p.type == "text" and p.text)


def _event_messages(event: EventContext, inp: InputContext) -> list[dict[str, Any]]:
    """The message(s) an event contributes: a user turn for messages, a system note otherwise."""
    text = _input_text(inp)
    if inp.attachments:
        names = ", ".join(a.name or a.type or a.mime_type or "file" for a in inp.attachments)
        text = f"{text}\n[attachments: {names}]".strip()
    if event.event_type == "message.received":
        return [{"role": "user", "content": text or "(empty message)"}]
    note = f"Event `{event.event_type}` from {event.source}"
    if event.source_event_type:
        note += f" ({event.source_event_type})"
    if event.data:
        note += ": " + json.dumps(event.data, ensure_ascii=False, default=str)[:2000]
    if text:
        note += f"\nInput: {text}"
    return [{"role": "system", "content": note}]


def _passage_text(hit: Any) -> str:
    if isinstance(hit, str):
        return hit.strip()
    if not isinstance(hit, dict):
        return ""
    for key in ("content", "text", "chunk", "document", "page_content"):
        value = hit.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
        if isinstance(value, (list, dict)) and value:
            return _content_text(value) if isinstance(value, list) else json.dumps(value, ensure_ascii=False)
    return ""


_NAME_RE = re.compile(r"[^a-zA-Z0-9_-]")


async def _tool_definitions(ctx: RunContext, api: RunnerAPI) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """OpenAI function definitions from ``ctx.resources.tools`` and a function-name → tool-name map.

    The schemas come with the context; only a granted tool whose resource carries no
    ``parameters`` costs a ``get_tool_detail`` round trip (when "detail" is granted).
    """
    tools, name_map = [], {}
    for tool in ctx.resources.tools:
        if "call" not in tool.operations:
            continue
        if tool.parameters is None and "detail" in tool.operations:
            try:
                detail = await api.get_tool_detail(tool.tool_name)
                tool = tool.model_copy(update={
                    "parameters": detail.get("parameters") if isinstance(detail.get("parameters"), dict) else None,
                    "description": tool.description or detail.get("description")})
            except RunnerHostError as exc:
                log.warning("run %s: no schema for tool %s (%s)", ctx.run_id, tool.tool_name, exc.code.value)
        fname = _NAME_RE.sub("_", tool.tool_name)[:64] or "tool"
        base, n = fname, 2
        while fname in name_map:
            suffix = f"_{n}"
            fname, n = base[: 64 - len(suffix)] + suffix, n + 1
        name_map[fname] = tool.tool_name
        params = tool.parameters if isinstance(tool.parameters, dict) and tool.parameters else {
            "type": "object", "properties": {}}
        tools.append({"type": "function", "function": {
            "name": fname, "description": (tool.description or tool.tool_name)[:1024], "parameters": params}})
    return tools, name_map


def _with_ids(tool_calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for tc in tool_calls:
        fn = tc.get("function") or {}
        args = fn.get("arguments")
        out.append({"id": tc.get("id") or f"call_{uuid.uuid4().hex[:12]}", "type": "function",
                    "function": {"name": fn.get("name") or "",
                                 "arguments": args if isinstance(args, str) else json.dumps(args or {})}})
    return out
