"""Server side of the runner API (SPEC §6): argument checks + snapshot checks.

:class:`RunnerApiService` is bound to one run. Every call is checked against
the run's frozen :class:`AccessSnapshot` before anything reaches storage or a
provider; results are plain JSON so they cross Ray cheaply. Every read of
events, runs and artifacts carries the run's :class:`~protocol.read_scope.ReadScope`
(its conversation, or its own run when it has none, within its bot and
workspace), which the store applies as a filter or an ownership check.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Protocol

from protocol.errors import ErrorCode, RunnerHostError, invalid_argument

from .. import constants
from .authz import AccessSnapshot
from .steering import SteeringEntry, SteeringQueue

MAX_PAGE = 100
#: An embedding-backed knowledge base embeds chunks that have no vector yet when it is searched,
#: this many per embedding call and at most this many calls per search (the rest on the next one).
EMBED_BATCH = 64
EMBED_ROUNDS_PER_SEARCH = 16


def retrieval_entry(kb_id: str, hit: dict[str, Any]) -> dict[str, Any]:
    """A store hit → LangBot's ``RetrievalResultEntry`` (id, content elements, metadata, distance, score)."""
    metadata = {**(hit.get("metadata") or {}), "kb_id": kb_id, "doc_id": hit.get("doc_id"),
                "title": hit.get("title")}
    return {"id": str(hit.get("doc_id")), "content": [{"type": "text", "text": hit.get("content") or ""}],
            "metadata": metadata, "distance": float(hit.get("distance", 0.0)), "score": hit.get("score")}


class Backend(Protocol):
    """Where the service forwards checked calls (storage actor, providers)."""

    async def read(self, kind: str, **kwargs: Any) -> Any: ...
    async def write(self, kind: str, **kwargs: Any) -> Any: ...
    async def invoke_llm(self, model_id: str, messages: list, tools: list | None, params: dict) -> dict: ...
    def stream_llm(self, model_id: str, messages: list, tools: list | None, params: dict) -> AsyncIterator[dict]: ...
    async def rerank(self, model_id: str, query: str, documents: list[str], top_n: int | None,
                     params: dict | None = None) -> list: ...
    async def count_tokens(self, model_id: str, messages: list, tools: list | None) -> dict: ...
    async def embed(self, model_id: str, texts: list[str]) -> dict: ...
    async def knowledge_config(self, kb_id: str) -> dict: ...
    async def tool_detail(self, name: str) -> dict: ...
    async def call_tool(self, name: str, parameters: dict) -> dict: ...


@dataclass(frozen=True)
class RunIdentity:
    """Who the run is, for scope keys and ownership checks."""

    run_id: str
    runner_id: str
    binding_identity: str
    bot_id: str | None
    workspace_id: str | None
    conversation_id: str | None
    thread_id: str | None
    actor_type: str | None
    actor_id: str | None
    subject_type: str | None
    subject_id: str | None


def _limit(value: Any, default: int = 50) -> int:
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_PAGE:
        raise invalid_argument(f"limit must be an integer in 1..{MAX_PAGE}")
    return value


def _text(value: Any, name: str, max_len: int = 4096) -> str:
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise invalid_argument(f"{name} must be a non-empty string of at most {max_len} characters")
    return value


def _size(obj: Any) -> int:
    try:
        return len(json.dumps(obj, separators=(",", ":")).encode())
    except (TypeError, ValueError):
        raise invalid_argument("payload is not JSON-serialisable") from None


class RunnerApiService:
    def __init__(self, snapshot: AccessSnapshot, identity: RunIdentity, backend: Backend,
                 steering: SteeringQueue,
                 on_steering_pulled: Callable[[list[SteeringEntry]], Awaitable[None]],
                 state_scope_key: Callable[[str], str],
                 on_state_written: Callable[[str, str, str, Any], None] | None = None,
                 cancel_run: Callable[[str, str | None], Awaitable[dict]] | None = None,
                 send_message: Callable[[str, dict | None, str | None], Awaitable[dict]] | None = None) -> None:
        self.snapshot = snapshot
        self.identity = identity
        self.backend = backend
        self.steering = steering
        self._on_pulled = on_steering_pulled
        self._scope_key = state_scope_key
        self._on_state_written = on_state_written
        self._cancel_run = cancel_run
        self._send_message = send_message

    METHODS = frozenset({
        "invoke_llm", "invoke_rerank", "count_tokens", "invoke_embedding", "get_tool_detail", "call_tool", "retrieve_knowledge",
        "history_page", "history_search", "event_get", "event_page", "steering_pull",
        "artifact_metadata", "artifact_read", "artifact_read_range",
        "state_get", "state_set", "state_delete", "state_list",
        "storage_get", "storage_set", "storage_delete", "storage_keys",
        "run_get", "run_list", "run_events_page", "run_cancel", "message_send",
    })

    async def call(self, method: str, kwargs: dict[str, Any]) -> Any:
        if method not in self.METHODS:
            raise invalid_argument(f"unknown runner API method {method!r}")
        self.snapshot.check_deadline()
        self.snapshot.check_payload(_size(kwargs))
        try:
            return await getattr(self, method)(**kwargs)
        except TypeError as exc:  # wrong/missing keyword arguments
            if "argument" in str(exc):
                raise invalid_argument(f"{method}: {exc}") from None
            raise

    # -- models -----------------------------------------------------------------
    async def invoke_llm(self, model_id: str, messages: list, tools: list | None = None,
                         params: dict | None = None) -> dict:
        self.snapshot.check_model(_text(model_id, "model_id", 256), "invoke")
        self._check_messages(messages)
        return await self.backend.invoke_llm(model_id, messages, tools, params or {})

    def invoke_llm_stream(self, model_id: str, messages: list, tools: list | None = None,
                          params: dict | None = None) -> AsyncIterator[dict]:
        self.snapshot.check_deadline()
        self.snapshot.check_model(_text(model_id, "model_id", 256), "stream")
        self._check_messages(messages)
        self.snapshot.check_payload(_size(messages))
        return self.backend.stream_llm(model_id, messages, tools, params or {})

    async def invoke_rerank(self, model_id: str, query: str, documents: list[str],
                            top_n: int | None = None, params: dict | None = None) -> list:
        self.snapshot.check_model(_text(model_id, "model_id", 256), "rerank")
        if not isinstance(documents, list) or not all(isinstance(d, str) for d in documents):
            raise invalid_argument("documents must be a list of strings")
        if params is not None and not isinstance(params, dict):
            raise invalid_argument("params must be an object")
        return await self.backend.rerank(model_id, _text(query, "query"), documents, top_n, params or None)

    async def count_tokens(self, model_id: str, messages: list, tools: list | None = None) -> dict:
        self.snapshot.check_model(_text(model_id, "model_id", 256), "count_tokens")
        self._check_messages(messages)
        if tools is not None and not isinstance(tools, list):
            raise invalid_argument("tools must be a list")
        return await self.backend.count_tokens(model_id, messages, tools)

    async def invoke_embedding(self, model_id: str, texts: list[str]) -> dict:
        self.snapshot.check_model(_text(model_id, "model_id", 256), "invoke")
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
            raise invalid_argument("texts must be a non-empty list of non-empty strings")
        return await self.backend.embed(model_id, texts)

    @staticmethod
    def _check_messages(messages: Any) -> None:
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise invalid_argument("messages must be a non-empty list of objects")

    # -- tools & knowledge ------------------------------------------------------------
    async def get_tool_detail(self, tool_name: str) -> dict:
        self.snapshot.check_tool(_text(tool_name, "tool_name", 256), "detail")
        return await self.backend.tool_detail(tool_name)

    async def call_tool(self, tool_name: str, parameters: dict | None = None) -> dict:
        self.snapshot.check_tool(_text(tool_name, "tool_name", 256), "call")
        if parameters is not None and not isinstance(parameters, dict):
            raise invalid_argument("parameters must be an object")
        return await self.backend.call_tool(tool_name, parameters or {})

    async def retrieve_knowledge(self, kb_id: str, query: str, top_k: int = 5,
                                 filters: dict | None = None) -> list:
        """Entries in LangBot's ``RetrievalResultEntry`` shape. A base configured with an
        embedding model is searched by vector (its new chunks are embedded first, lazily);
        any other by full text."""
        self.snapshot.check_kb(_text(kb_id, "kb_id", 256), "retrieve")
        query = _text(query, "query")
        if filters is not None and not isinstance(filters, dict):
            raise invalid_argument("filters must be an object")
        top_k = _limit(top_k, 5)
        config = await self.backend.knowledge_config(kb_id) or {}
        model_id = config.get("embedding_model_id")
        if not model_id:
            hits = await self.backend.read("knowledge_retrieve", kb_id=kb_id, query=query, top_k=top_k,
                                           filters=filters or None)
        else:
            await self._embed_new_chunks(kb_id, model_id)
            [vector] = (await self.backend.embed(model_id, [query]))["vectors"]
            hits = await self.backend.read("knowledge_retrieve", kb_id=kb_id, query=query, top_k=top_k,
                                           filters=filters or None, query_vector=vector, model_id=model_id)
        return [retrieval_entry(kb_id, h) for h in hits]

    async def _embed_new_chunks(self, kb_id: str, model_id: str) -> None:
        for _ in range(EMBED_ROUNDS_PER_SEARCH):
            chunks = await self.backend.read("knowledge_missing_vectors", kb_id=kb_id, model_id=model_id,
                                             limit=EMBED_BATCH)
            if not chunks:
                return
            texts = [f"{c['title']}\n\n{c['content']}" if c.get("title") else c["content"] for c in chunks]
            vectors = (await self.backend.embed(model_id, texts))["vectors"]
            await self.backend.write("knowledge_vectors", kb_id=kb_id, model_id=model_id,
                                     rows=[{"document_id": c["id"], "vector": v} for c, v in zip(chunks, vectors)])
            if len(chunks) < EMBED_BATCH:
                return

    # -- history & events ---------------------------------------------------------------
    async def history_page(self, conversation_id: str | None = None, before_cursor: str | None = None,
                           after_cursor: str | None = None, limit: int = 50,
                           direction: str = "backward") -> dict:
        target = self.snapshot.check_history("page", conversation_id)
        if direction not in ("backward", "forward"):
            raise invalid_argument("direction must be 'backward' or 'forward'")
        return await self.backend.read("history_page", conversation_id=target, before_cursor=before_cursor,
                                       after_cursor=after_cursor, limit=_limit(limit), direction=direction)

    async def history_search(self, query: str, filters: dict | None = None, top_k: int = 10) -> dict:
        filters = dict(filters or {})
        target = self.snapshot.check_history("search", filters.pop("conversation_id", None))
        return await self.backend.read("history_search", conversation_id=target,
                                       query=_text(query, "query", 1000), top_k=_limit(top_k, 10),
                                       filters=filters)

    async def event_get(self, event_id: str) -> dict:
        self.snapshot.require("get" in self.snapshot.events, "events.get")
        return await self.backend.read("event_get", event_id=_text(event_id, "event_id", 256),
                                       scope=self._lookup_scope())

    async def event_page(self, conversation_id: str | None = None, event_types: list[str] | None = None,
                         before_cursor: str | None = None, limit: int = 50) -> dict:
        scope = self.snapshot.check_events("page", conversation_id, **self._tenant())
        return await self.backend.read("event_page", scope=scope.wire(), event_types=event_types,
                                       before_cursor=before_cursor, limit=_limit(limit))

    # -- read scopes ------------------------------------------------------------------
    def _tenant(self) -> dict[str, str | None]:
        return {"bot_id": self.identity.bot_id, "workspace_id": self.identity.workspace_id}

    def _lookup_scope(self, cross_conversation: bool = True) -> dict[str, Any]:
        """Wire form of the scope of a read by id (own conversation/run; see AccessSnapshot)."""
        return self.snapshot.lookup_scope(**self._tenant(), cross_conversation=cross_conversation).wire()

    # -- steering --------------------------------------------------------------------
    async def steering_pull(self, mode: str = "all", limit: int | None = None) -> dict:
        self.snapshot.require(self.snapshot.steering, "steering_pull")
        entries = self.steering.pull(mode, limit)
        if entries:
            await self._on_pulled(entries)
        return {"items": [e.item for e in entries]}

    # -- artifacts ---------------------------------------------------------------------
    async def artifact_metadata(self, artifact_id: str) -> dict:
        self.snapshot.require("metadata" in self.snapshot.artifacts, "artifacts.metadata")
        return await self.backend.read("artifact_metadata", artifact_id=_text(artifact_id, "artifact_id", 256),
                                       scope=self._lookup_scope(cross_conversation=False))

    async def artifact_read(self, artifact_id: str) -> dict:
        self.snapshot.require("read" in self.snapshot.artifacts, "artifacts.read")
        return await self.backend.read("artifact_read", artifact_id=_text(artifact_id, "artifact_id", 256),
                                       scope=self._lookup_scope(cross_conversation=False))

    async def artifact_read_range(self, artifact_id: str, offset: int, length: int) -> dict:
        self.snapshot.require("read" in self.snapshot.artifacts, "artifacts.read")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (offset, length)):
            raise invalid_argument("offset and length must be non-negative integers")
        self.snapshot.check_payload(length)
        return await self.backend.read("artifact_read_range", artifact_id=_text(artifact_id, "artifact_id", 256),
                                       offset=offset, length=length,
                                       scope=self._lookup_scope(cross_conversation=False))

    # -- state --------------------------------------------------------------------------
    async def state_get(self, scope: str, key: str) -> dict:
        self.snapshot.check_state(scope, "read")
        return await self.backend.read("state_get", scope_key=self._scope_key(scope), key=_text(key, "key", 256))

    async def state_set(self, scope: str, key: str, value: Any) -> dict:
        self.snapshot.check_state(scope, "write")
        scope_key = self._scope_key(scope)
        result = await self.backend.write("state_set", scope_key=scope_key, key=_text(key, "key", 256),
                                          value=value, scope=scope, runner_id=self.identity.runner_id)
        if self._on_state_written is not None:
            self._on_state_written(scope_key, scope, key, result.get("previous"))
        return result["entry"]

    async def state_delete(self, scope: str, key: str) -> bool:
        self.snapshot.check_state(scope, "write")
        scope_key = self._scope_key(scope)
        result = await self.backend.write("state_delete", scope_key=scope_key, key=_text(key, "key", 256))
        if self._on_state_written is not None:
            self._on_state_written(scope_key, scope, key, result.get("previous"))
        return bool(result.get("deleted"))

    async def state_list(self, scope: str, prefix: str = "", limit: int = 100) -> dict:
        self.snapshot.check_state(scope, "read")
        if not isinstance(prefix, str) or len(prefix) > 256:
            raise invalid_argument("prefix must be a string of at most 256 characters")
        return await self.backend.read("state_list", scope_key=self._scope_key(scope), prefix=prefix,
                                       limit=_limit(limit, 100))

    # -- plugin / workspace storage ---------------------------------------------------------
    def _area(self, area: str) -> str:
        if area not in ("plugin", "workspace"):
            raise invalid_argument("area must be 'plugin' or 'workspace'")
        self.snapshot.require(area in self.snapshot.storage, f"{area} storage")
        # plugin storage is private to the runner; workspace storage to the workspace
        return self.identity.runner_id if area == "plugin" else (self.identity.workspace_id or "_default")

    async def storage_get(self, area: str, key: str) -> Any:
        ns = self._area(area)
        return await self.backend.read("kv_get", area=area, namespace=ns, key=_text(key, "key", 256))

    async def storage_set(self, area: str, key: str, value: Any) -> None:
        ns = self._area(area)
        await self.backend.write("kv_set", area=area, namespace=ns, key=_text(key, "key", 256), value=value)

    async def storage_delete(self, area: str, key: str) -> bool:
        ns = self._area(area)
        return bool(await self.backend.write("kv_delete", area=area, namespace=ns, key=_text(key, "key", 256)))

    async def storage_keys(self, area: str, prefix: str = "") -> list:
        ns = self._area(area)
        return await self.backend.read("kv_keys", area=area, namespace=ns, prefix=prefix or "")

    # -- run ledger -------------------------------------------------------------------
    async def run_get(self, run_id: str | None = None) -> dict:
        self.snapshot.require("get" in self.snapshot.run_ledger, "run_get")
        return await self.backend.read("run_get", run_id=_text(run_id or self.snapshot.run_id, "run_id", 128),
                                       scope=self._lookup_scope())

    async def run_list(self, conversation_id: str | None = None, statuses: list[str] | None = None,
                       before_cursor: str | None = None, limit: int = 50) -> dict:
        self.snapshot.require("list" in self.snapshot.run_ledger, "run_list")
        scope = self.snapshot.read_scope(conversation_id, **self._tenant())
        return await self.backend.read("run_list", scope=scope.wire(), statuses=statuses,
                                       before_cursor=before_cursor, limit=_limit(limit))

    async def run_events_page(self, run_id: str | None = None, after_cursor: str | None = None,
                              limit: int = 50, before_cursor: str | None = None,
                              direction: str = "forward") -> dict:
        self.snapshot.require("events_page" in self.snapshot.run_ledger, "run_events_page")
        if direction not in ("forward", "backward"):
            raise invalid_argument("direction must be 'forward' or 'backward'")
        if before_cursor and after_cursor:
            raise invalid_argument("give before_cursor or after_cursor, not both")
        backward = bool(before_cursor) or (direction == "backward" and not after_cursor)
        return await self.backend.read("run_events_page",
                                       run_id=_text(run_id or self.snapshot.run_id, "run_id", 128),
                                       scope=self._lookup_scope(), after_cursor=after_cursor,
                                       before_cursor=before_cursor, direction="backward" if backward else "forward",
                                       limit=_limit(limit))

    async def run_cancel(self, run_id: str, reason: str | None = None) -> dict:
        self.snapshot.require("cancel" in self.snapshot.run_ledger, "run_cancel")
        await self.backend.read("run_get", run_id=_text(run_id, "run_id", 128), scope=self._lookup_scope())
        if self._cancel_run is None:
            raise RunnerHostError(ErrorCode.RUNTIME_ERROR, "cancellation is not available here")
        return await self._cancel_run(run_id, reason)

    # -- explicit messages ------------------------------------------------------------
    async def message_send(self, text: str, target: dict | None = None, key: str | None = None) -> dict:
        """Checked here: the run has a chat of its own, the arguments' shapes; where it may post
        (its own conversation only) is checked again by the delivery engine against the plan."""
        if not self.snapshot.message_send or self._send_message is None:
            raise invalid_argument("this run's event has no delivery target: it came from no platform chat "
                                   "(an HTTP or scheduled event); yield message results instead",
                                   reason="no_delivery_target", run_id=self.snapshot.run_id)
        text = _text(text, "text", constants.MESSAGE_SEND_MAX_CHARS)
        if target is not None and (not isinstance(target, dict) or not all(isinstance(k, str) for k in target)):
            raise invalid_argument("target must be an address object (the shape of ctx.delivery.reply_target)")
        if key is not None:
            key = _text(key, "key", 256)
        return await self._send_message(text, target, key)
