"""What a runner author programs against: :class:`Runner` and :class:`RunnerAPI`.

A runner is a class with a ``manifest`` and an async-generator ``run(ctx, api)``.
``api`` is the only door to host resources; every call is checked by the host
against the run's frozen authorization snapshot and raises
:class:`~protocol.errors.RunnerHostError` (``unauthorized``, ``not_found``, …)
when refused. Runners depend on this module and nothing else of the host.
"""
from __future__ import annotations

import abc
from typing import Any, AsyncIterator, ClassVar, Literal

from .context import RunContext
from .delivery import SentMessage
from .errors import ErrorCode, RunnerHostError
from .manifest import RunnerManifest
from .pages import (
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
    SteeringPullResult,
)
from .results import RunResult


class RunnerAPI(abc.ABC):
    """The runner-facing API (SPEC §6), bound to one run."""

    run_id: str

    # -- models -------------------------------------------------------------
    @abc.abstractmethod
    async def invoke_llm(self, model_id: str, messages: list[dict[str, Any]], *,
                         tools: list[dict[str, Any]] | None = None,
                         params: dict[str, Any] | None = None) -> dict[str, Any]:
        """One chat completion. Returns ``{"message": {...}, "usage": {...}, "model_id": ...}``."""

    @abc.abstractmethod
    def invoke_llm_stream(self, model_id: str, messages: list[dict[str, Any]], *,
                          tools: list[dict[str, Any]] | None = None,
                          params: dict[str, Any] | None = None) -> AsyncIterator[dict[str, Any]]:
        """Streamed completion: chunks ``{"delta": {...}}`` then ``{"message", "usage"}``."""

    @abc.abstractmethod
    async def invoke_rerank(self, model_id: str, query: str, documents: list[str],
                            top_n: int | None = None, *,
                            params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """A rerank model call: ``[{"index", "relevance_score", "document"}]``, best first
        (at most the first 64 documents are scored). Needs ``models: rerank``."""

    async def count_tokens(self, model_id: str, messages: list[dict[str, Any]], *,
                           tools: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Input tokens of ``messages`` (+ ``tools``) for the model: ``{"tokens": int, "method":
        "litellm" | "tiktoken" | "estimate"}``. Needs ``models: count_tokens``."""
        raise RunnerHostError(ErrorCode.INVALID_ARGUMENT, "count_tokens is not supported by this host")

    async def invoke_embedding(self, model_id: str, texts: list[str]) -> dict[str, Any]:
        """Embeddings from an embedding model: ``{"vectors": [[float, …], …], "usage"}``, one per
        text. Needs ``models: invoke`` on the embedding model."""
        raise RunnerHostError(ErrorCode.INVALID_ARGUMENT, "invoke_embedding is not supported by this host")

    # -- tools & knowledge --------------------------------------------------
    @abc.abstractmethod
    async def get_tool_detail(self, tool_name: str) -> dict[str, Any]: ...

    @abc.abstractmethod
    async def call_tool(self, tool_name: str, parameters: dict[str, Any]) -> dict[str, Any]: ...

    @abc.abstractmethod
    async def retrieve_knowledge(self, kb_id: str, query: str, top_k: int = 5, *,
                                 filters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Best entries first, in the shape of LangBot's ``RetrievalResultEntry``: ``{"id", "content":
        [{"type": "text", "text"}], "metadata": {kb_id, doc_id, title, …}, "distance", "score"}``.
        ``filters``: metadata filters (``store/knowledge.py`` documents the grammar)."""

    # -- history & events ---------------------------------------------------
    @abc.abstractmethod
    async def history_page(self, conversation_id: str | None = None, *,
                           before_cursor: str | None = None, after_cursor: str | None = None,
                           limit: int = 50,
                           direction: Literal["backward", "forward"] = "backward") -> HistoryPage: ...

    @abc.abstractmethod
    async def history_search(self, query: str, filters: dict[str, Any] | None = None,
                             top_k: int = 10) -> HistorySearchResult: ...

    @abc.abstractmethod
    async def event_get(self, event_id: str) -> EventRecord: ...

    @abc.abstractmethod
    async def event_page(self, conversation_id: str | None = None, *,
                         event_types: list[str] | None = None,
                         before_cursor: str | None = None, limit: int = 50) -> EventPage: ...

    # -- steering -----------------------------------------------------------
    @abc.abstractmethod
    async def steering_pull(self, mode: Literal["all", "one-at-a-time"] = "all",
                            limit: int | None = None) -> SteeringPullResult: ...

    # -- artifacts ----------------------------------------------------------
    @abc.abstractmethod
    async def artifact_metadata(self, artifact_id: str) -> ArtifactMetadata: ...

    @abc.abstractmethod
    async def artifact_read(self, artifact_id: str) -> ArtifactReadResult: ...

    @abc.abstractmethod
    async def artifact_read_range(self, artifact_id: str, offset: int, length: int) -> ArtifactReadResult: ...

    # -- state --------------------------------------------------------------
    @abc.abstractmethod
    async def state_get(self, scope: str, key: str) -> StateEntry: ...

    @abc.abstractmethod
    async def state_set(self, scope: str, key: str, value: Any) -> StateEntry: ...

    @abc.abstractmethod
    async def state_delete(self, scope: str, key: str) -> bool: ...

    @abc.abstractmethod
    async def state_list(self, scope: str, prefix: str = "", limit: int = 100) -> StateList: ...

    # -- plugin / workspace storage ------------------------------------------
    @abc.abstractmethod
    async def storage_get(self, area: Literal["plugin", "workspace"], key: str) -> Any: ...

    @abc.abstractmethod
    async def storage_set(self, area: Literal["plugin", "workspace"], key: str, value: Any) -> None: ...

    @abc.abstractmethod
    async def storage_delete(self, area: Literal["plugin", "workspace"], key: str) -> bool: ...

    @abc.abstractmethod
    async def storage_keys(self, area: Literal["plugin", "workspace"], prefix: str = "") -> list[str]: ...

    # -- run ledger ---------------------------------------------------------
    @abc.abstractmethod
    async def run_get(self, run_id: str | None = None) -> RunRecord: ...

    @abc.abstractmethod
    async def run_list(self, conversation_id: str | None = None, *,
                       statuses: list[str] | None = None,
                       before_cursor: str | None = None, limit: int = 50) -> RunPage: ...

    @abc.abstractmethod
    async def run_events_page(self, run_id: str | None = None, *,
                              after_cursor: str | None = None, limit: int = 50,
                              before_cursor: str | None = None,
                              direction: Literal["forward", "backward"] = "forward") -> RunEventPage:
        """A page of a run's result events; ``backward`` (or a ``before_cursor``) pages toward the
        run's first event, each page in ascending order."""

    @abc.abstractmethod
    async def run_cancel(self, run_id: str, reason: str | None = None) -> RunRecord: ...

    # -- explicit messages (host-owned delivery) -----------------------------
    async def message_send(self, text: str, *, target: dict[str, Any] | None = None,
                           key: str | None = None) -> SentMessage:
        """Post ``text`` now into the conversation the run's event came from, through the host's
        recorded delivery (LangBot's ``reply`` / ``send_message`` / ``reply_stream``), apart from
        the run's results. Available when ``ctx.context.available_apis.message_send``; a run
        whose event came from no platform chat gets ``invalid_argument``.

        ``target``: an address in the shape of ``ctx.delivery.reply_target`` (default: that
        one); any other conversation is ``unauthorized``. ``key``: the idempotency key — a call
        repeated with the same key (and text) posts nothing new and answers the same facts;
        without one, every call is a new message. A platform refusal is ``runtime_error``."""
        raise RunnerHostError(ErrorCode.INVALID_ARGUMENT, "message_send is not supported by this host")


class Runner(abc.ABC):
    """Base class of every runner. One instance serves many runs concurrently.

    ``run`` yields :class:`RunResult` objects (or plain dicts of the same shape)
    and must not keep per-run state on ``self``.
    """

    manifest: ClassVar[RunnerManifest]

    @abc.abstractmethod
    def run(self, ctx: RunContext, api: RunnerAPI) -> AsyncIterator[RunResult | dict[str, Any]]:
        ...

    async def close(self) -> None:
        """Release long-lived resources when the worker shuts down."""
