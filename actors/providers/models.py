"""Host models behind the runner API (SPEC §6): chat, embeddings, rerank, token counting.

:class:`ModelRegistry` maps host model ids to :class:`ModelProviderConfig`. Two kinds:

* ``kind = "openai"`` (default) — an OpenAI-compatible HTTP endpoint over httpx:
  ``{base_url}/chat/completions`` (streamed as SSE ``data:`` lines ending with
  ``[DONE]``, or not), ``{base_url}/embeddings`` and ``{base_url}{rerank_path}``
  (the Cohere / Jina ``/rerank`` shape OpenAI-compatible servers expose);
* ``kind = "litellm"`` — a native provider through LiteLLM (optional extra
  ``runnerhost[providers]``): Anthropic Messages (``model = "anthropic/…"``), Gemini
  (``gemini/…``), Bedrock (``bedrock/…``), Ollama (``ollama_chat/…``) and the rest
  of LiteLLM's providers, for chat, embeddings (``aembedding``) and rerank
  (``arerank``). Responses are normalised to the OpenAI shapes, so both kinds answer
  alike.

``model_type`` says what a model is for: ``llm`` (chat; ``chat`` is accepted as an
alias), ``embedding`` or ``rerank``; asking a model for something else is
``invalid_argument``. Tool-call deltas are accumulated into complete
``tool_calls``; token usage is returned to the caller. ``count_tokens`` uses the
provider's tokenizer where there is one (LiteLLM's ``token_counter``; ``tiktoken``
for OpenAI model names it knows) and otherwise a documented estimate
(:mod:`actors.providers.tokens`). ``params["reasoning_level"]`` (LangBot's
``llm.reasoning_level``) becomes the provider's ``reasoning_effort``.

Failure handling: an HTTP error status, a timeout, a connection error or a
malformed reply of one chat model makes the registry try the model's
``fallback_model_id`` (a chain, cycle-safe) — for a stream only while nothing
has been yielded yet. Embedding and rerank models never fall back (vectors and
scores of another model are not comparable). When every candidate failed it raises
:class:`~protocol.errors.RunnerHostError` ``runtime_error`` (``rate_limited``
when the last failure was an HTTP 429), always ``retryable``.

Secrets: the API key is read from the environment variable named by
``api_key_env`` at request time (LiteLLM providers may also read their own
variables, e.g. AWS credentials for Bedrock) and is never stored on the config, logged or
put in an error message; provider error bodies are scrubbed of the key and of
``extra_headers`` values before they reach a message.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
from typing import Any, AsyncIterator, Iterable, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from protocol.errors import ErrorCode, RunnerHostError, invalid_argument
from protocol.logs import get_logger
from protocol.redact import redact

from . import litellm_backend, tokens

log = get_logger(__name__)

#: Request-body keys a caller's ``params`` may not override.
_RESERVED_PARAMS = frozenset({"model", "messages", "stream", "tools"})
_MAX_ERROR_SNIPPET = 200


ModelType = Literal["llm", "embedding", "rerank"]
#: LangBot's ``llm.reasoning_level`` → OpenAI / LiteLLM ``reasoning_effort``
#: (``provider_default`` and ``enabled`` leave the provider's default).
REASONING_EFFORT: dict[str, str | None] = {
    "provider_default": None, "enabled": None, "disabled": "none", "minimal": "minimal",
    "low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high",
}
#: LangBot caps a rerank call at 64 documents; only the first 64 are scored.
MAX_RERANK_DOCUMENTS = 64
MAX_EMBEDDING_TEXTS = 256


class ModelProviderConfig(BaseModel):
    """One host model id → one endpoint and model name (see the module doc for ``kind``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_id: str = Field(min_length=1, max_length=256)
    kind: Literal["openai", "litellm"] = "openai"
    model_type: ModelType = "llm"
    base_url: str | None = Field(default=None, description="e.g. https://api.openai.com/v1 (…/chat/completions "
                                 "is appended); for litellm the api_base, if the provider needs one")
    model: str = Field(min_length=1, description="model name sent to the endpoint (litellm: provider/model)")
    api_key_env: str | None = Field(default=None, description="NAME of the env var holding the API key")
    api_key_header: str = Field(default="Authorization",
                                description="'Authorization' sends 'Bearer <key>'; any other header gets the raw key")
    timeout_s: float = Field(default=60.0, gt=0, description="connect/read/write timeout per request")
    fallback_model_id: str | None = None
    extra_headers: dict[str, str] = Field(default_factory=dict, repr=False)
    default_params: dict[str, Any] = Field(default_factory=dict,
                                           description="merged under the caller's params (temperature, …)")
    provider: str | None = Field(default=None, description="label in ctx.resources (default: the kind's name)")
    stream_usage: bool = Field(default=True, description="send stream_options.include_usage on streamed calls")
    context_window: int | None = Field(default=None, ge=1, description="input tokens the model accepts")
    max_output_tokens: int | None = Field(default=None, ge=1)
    rerank_path: str = Field(default="/rerank", description="appended to base_url for rerank models (openai kind)")

    @field_validator("model_type", mode="before")
    @classmethod
    def _chat_is_llm(cls, value: Any) -> Any:
        return "llm" if value == "chat" else value

    @model_validator(mode="after")
    def _endpoint_needed(self) -> "ModelProviderConfig":
        if self.kind == "openai" and not self.base_url:
            raise ValueError(f"model {self.model_id!r}: base_url is required for kind 'openai'")
        return self

    @property
    def endpoint(self) -> str:
        return (self.base_url or "").rstrip("/") + "/chat/completions"

    @property
    def provider_label(self) -> str:
        if self.provider:
            return self.provider
        if self.kind == "litellm":
            return self.model.split("/", 1)[0] if "/" in self.model else "litellm"
        return "openai-compatible"


class _AttemptFailed(Exception):
    """One model attempt failed; ``reason`` is already free of secrets."""

    def __init__(self, model_id: str, kind: str, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.model_id = model_id
        self.kind = kind
        self.reason = reason
        self.status = status

    def summary(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "kind": self.kind, "status": self.status, "reason": self.reason}


def _strip_userinfo(url: str) -> str:
    return re.sub(r"//[^/@]*@", "//", url, count=1)


class ModelRegistry:
    """Host model ids → OpenAI-compatible endpoints, with per-model fallback."""

    def __init__(self, configs: Iterable[ModelProviderConfig | dict[str, Any]], *,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._configs: dict[str, ModelProviderConfig] = {}
        for raw in configs:
            cfg = raw if isinstance(raw, ModelProviderConfig) else ModelProviderConfig.model_validate(raw)
            if cfg.model_id in self._configs:
                raise ValueError(f"duplicate model_id {cfg.model_id!r}")
            self._configs[cfg.model_id] = cfg
        for cfg in self._configs.values():
            if cfg.fallback_model_id and cfg.fallback_model_id not in self._configs:
                log.warning("model %s: fallback %s is not configured; it will be skipped",
                            cfg.model_id, cfg.fallback_model_id)
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"ModelRegistry(models={list(self._configs)!r})"

    # -- catalog --------------------------------------------------------------
    def ids(self) -> list[str]:
        return list(self._configs)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._configs

    def get(self, model_id: str) -> ModelProviderConfig:
        try:
            return self._configs[model_id]
        except KeyError:
            raise RunnerHostError(ErrorCode.NOT_FOUND, f"model {model_id!r} is not configured",
                                  details={"model_id": model_id}) from None

    def catalog(self) -> dict[str, dict[str, Any]]:
        """``{model_id: {"provider", "model_type", "context_window", "max_output_tokens"}}`` — the shape
        of ``ResourceCatalog.models``. The context window is the configured one, else LiteLLM's model
        map when the model is in it, else absent."""
        out: dict[str, dict[str, Any]] = {}
        for mid, cfg in self._configs.items():
            entry: dict[str, Any] = {"provider": cfg.provider_label, "model_type": cfg.model_type}
            window, max_out = cfg.context_window, cfg.max_output_tokens
            if cfg.kind == "litellm" and (window is None or max_out is None):
                known = litellm_backend.model_limits(cfg.model)
                window, max_out = window or known.get("context_window"), max_out or known.get("max_output_tokens")
            if window:
                entry["context_window"] = window
            if max_out:
                entry["max_output_tokens"] = max_out
            out[mid] = entry
        return out

    def _of_type(self, model_id: str, model_type: str, what: str) -> ModelProviderConfig:
        cfg = self.get(model_id)
        if cfg.model_type != model_type:
            raise invalid_argument(f"model {model_id!r} is a {cfg.model_type} model; {what} needs a "
                                   f"{model_type} model", model_id=model_id, model_type=cfg.model_type)
        return cfg

    def _chain(self, model_id: str) -> list[ModelProviderConfig]:
        chain = [self._of_type(model_id, "llm", "a chat completion")]
        seen = {model_id}
        nxt = chain[0].fallback_model_id
        while nxt and nxt not in seen and nxt in self._configs:
            seen.add(nxt)
            chain.append(self._configs[nxt])
            nxt = self._configs[nxt].fallback_model_id
        return [c for c in chain if c.model_type == "llm"]

    # -- http -----------------------------------------------------------------
    def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop or self._client.is_closed:
            # httpx pools are bound to the loop that opened them.
            self._client = httpx.AsyncClient(transport=self._transport, timeout=None)
            self._client_loop = loop
        return self._client

    async def aclose(self) -> None:
        if self._client is not None and not self._client.is_closed:
            try:
                await self._client.aclose()
            except RuntimeError:  # closed from another loop
                pass
        self._client = None

    def _secrets(self, cfg: ModelProviderConfig) -> list[str]:
        values = [v for v in cfg.extra_headers.values() if v]
        key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
        if key:
            values.append(key)
        return values

    def _redact(self, cfg: ModelProviderConfig, text: str) -> str:
        # This model's key and header values, then anything key-like (protocol.redact).
        return _strip_userinfo(redact(text, tuple(self._secrets(cfg))))

    def _api_key(self, cfg: ModelProviderConfig) -> str | None:
        if not cfg.api_key_env:
            return None
        key = os.environ.get(cfg.api_key_env)
        if not key:
            raise _AttemptFailed(cfg.model_id, "config",
                                 f"API key environment variable {cfg.api_key_env!r} is not set")
        return key

    def _headers(self, cfg: ModelProviderConfig) -> dict[str, str]:
        headers = {"Content-Type": "application/json", **cfg.extra_headers}
        key = self._api_key(cfg)
        if key:
            if cfg.api_key_header.lower() == "authorization":
                headers["Authorization"] = f"Bearer {key}"
            else:
                headers[cfg.api_key_header] = key
        return headers

    def _body(self, cfg: ModelProviderConfig, messages: list[dict[str, Any]],
              tools: list[dict[str, Any]] | None, params: dict[str, Any] | None, stream: bool) -> dict[str, Any]:
        if not isinstance(messages, list) or not messages:
            raise RunnerHostError(ErrorCode.INVALID_ARGUMENT, "messages must be a non-empty list")
        body: dict[str, Any] = {k: v for k, v in cfg.default_params.items() if k not in _RESERVED_PARAMS}
        for k, v in (params or {}).items():
            if k not in _RESERVED_PARAMS and v is not None:
                body[k] = v
        level = body.pop("reasoning_level", None)
        if level is not None:
            if level not in REASONING_EFFORT:
                raise invalid_argument(f"unknown reasoning_level {level!r}", allowed=sorted(REASONING_EFFORT))
            if REASONING_EFFORT[level] is not None:
                body["reasoning_effort"] = REASONING_EFFORT[level]
        body["model"] = cfg.model
        body["messages"] = messages
        norm_tools = _normalize_tools(tools)
        if norm_tools:
            body["tools"] = norm_tools
        else:
            body.pop("tool_choice", None)
            body.pop("parallel_tool_calls", None)
        body["stream"] = stream
        if stream and cfg.stream_usage:
            body.setdefault("stream_options", {"include_usage": True})
        return body

    def _http_failure(self, cfg: ModelProviderConfig, status: int, raw: bytes) -> _AttemptFailed:
        snippet = ""
        try:
            data = json.loads(raw or b"null")
            err = data.get("error") if isinstance(data, dict) else None
            if isinstance(err, dict):
                snippet = str(err.get("message") or "")
            elif isinstance(err, str):
                snippet = err
        except ValueError:
            snippet = (raw or b"")[:_MAX_ERROR_SNIPPET].decode("utf-8", "replace")
        snippet = self._redact(cfg, snippet.strip())[:_MAX_ERROR_SNIPPET]
        reason = f"HTTP {status}" + (f": {snippet}" if snippet else "")
        kind = "rate_limited" if status == 429 else "http_error"
        return _AttemptFailed(cfg.model_id, kind, reason, status)

    def _transport_failure(self, cfg: ModelProviderConfig, exc: Exception) -> _AttemptFailed:
        if isinstance(exc, httpx.TimeoutException):
            return _AttemptFailed(cfg.model_id, "timeout", f"timed out after {cfg.timeout_s:g}s ({type(exc).__name__})")
        detail = self._redact(cfg, str(exc))[:_MAX_ERROR_SNIPPET]
        return _AttemptFailed(cfg.model_id, "connection",
                              f"{type(exc).__name__}" + (f": {detail}" if detail else ""))

    def _final_error(self, model_id: str, attempts: list[_AttemptFailed]) -> RunnerHostError:
        last = attempts[-1]
        code = ErrorCode.RATE_LIMITED if last.kind == "rate_limited" else ErrorCode.RUNTIME_ERROR
        parts = [f"{a.model_id}: {a.reason}" for a in attempts]
        message = f"model {model_id!r} unavailable (" + "; ".join(parts) + ")"
        return RunnerHostError(code, message, retryable=True,
                               details={"model_id": model_id, "attempts": [a.summary() for a in attempts]})

    # -- invoke -----------------------------------------------------------------
    async def invoke(self, model_id: str, messages: list[dict[str, Any]],
                     tools: list[dict[str, Any]] | None = None,
                     params: dict[str, Any] | None = None) -> dict[str, Any]:
        """One non-streamed completion: ``{"message", "usage", "model_id", "finish_reason"}``."""
        attempts: list[_AttemptFailed] = []
        for cfg in self._chain(model_id):
            try:
                result = await self._invoke_one(cfg, messages, tools, params)
            except _AttemptFailed as failure:
                attempts.append(failure)
                log.warning("model %s failed (%s); %s", cfg.model_id, failure.reason,
                            "trying fallback" if cfg.fallback_model_id else "no fallback left")
                continue
            if attempts:
                result["fallback_from"] = model_id
            return result
        raise self._final_error(model_id, attempts)

    def _litellm_kwargs(self, cfg: ModelProviderConfig, body: dict[str, Any]) -> dict[str, Any]:
        kwargs = {k: v for k, v in body.items() if k != "stream"}
        kwargs["timeout"] = cfg.timeout_s
        if cfg.base_url:
            kwargs["api_base"] = cfg.base_url
        key = self._api_key(cfg)
        if key:
            kwargs["api_key"] = key
        if cfg.extra_headers:
            kwargs["extra_headers"] = dict(cfg.extra_headers)
        return kwargs

    def _litellm_failure(self, cfg: ModelProviderConfig, exc: litellm_backend.CallFailed) -> _AttemptFailed:
        return _AttemptFailed(cfg.model_id, exc.kind, self._redact(cfg, exc.reason)[:_MAX_ERROR_SNIPPET + 40],
                              exc.status)

    async def _post_json(self, cfg: ModelProviderConfig, url: str, body: dict[str, Any]) -> Any:
        """POST to an OpenAI-compatible endpoint; the JSON reply, or :class:`_AttemptFailed`."""
        try:
            resp = await self._http().post(url, json=body, headers=self._headers(cfg),
                                           timeout=httpx.Timeout(cfg.timeout_s))
        except httpx.HTTPError as exc:
            raise self._transport_failure(cfg, exc) from None
        if resp.status_code >= 400:
            raise self._http_failure(cfg, resp.status_code, resp.content)
        try:
            data = resp.json()
        except ValueError:
            raise _AttemptFailed(cfg.model_id, "bad_response", "the reply is not JSON") from None
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            raise self._http_failure(cfg, resp.status_code, resp.content)
        return data

    async def _invoke_one(self, cfg: ModelProviderConfig, messages: list[dict[str, Any]],
                          tools: list[dict[str, Any]] | None, params: dict[str, Any] | None) -> dict[str, Any]:
        body = self._body(cfg, messages, tools, params, stream=False)
        if cfg.kind == "litellm":
            try:
                data = await litellm_backend.completion(self._litellm_kwargs(cfg, body))
            except litellm_backend.CallFailed as exc:
                raise self._litellm_failure(cfg, exc) from None
        else:
            data = await self._post_json(cfg, cfg.endpoint, body)
        try:
            choice = (data.get("choices") or [])[0]
            raw_msg = choice.get("message") or {}
        except (IndexError, AttributeError, TypeError):
            raise _AttemptFailed(cfg.model_id, "bad_response", "malformed completion body") from None
        message: dict[str, Any] = {"role": raw_msg.get("role") or "assistant",
                                   "content": _text_of(raw_msg.get("content"))}
        tool_calls = [_normalize_tool_call(tc, i) for i, tc in enumerate(raw_msg.get("tool_calls") or [])]
        if tool_calls:
            message["tool_calls"] = tool_calls
        return {"message": message, "usage": _usage(data.get("usage")), "model_id": cfg.model_id,
                "finish_reason": choice.get("finish_reason")}

    # -- stream -----------------------------------------------------------------
    async def stream(self, model_id: str, messages: list[dict[str, Any]],
                     tools: list[dict[str, Any]] | None = None,
                     params: dict[str, Any] | None = None) -> AsyncIterator[dict[str, Any]]:
        """Streamed completion.

        Yields ``{"delta": {"content": str}}`` and ``{"delta": {"tool_calls": [...]}}``
        chunks, then one final ``{"message", "usage", "model_id", "finish_reason"}``.
        """
        attempts: list[_AttemptFailed] = []
        for cfg in self._chain(model_id):
            yielded = False
            try:
                async for item in self._stream_one(cfg, messages, tools, params):
                    if "message" in item and attempts:
                        item["fallback_from"] = model_id
                    yielded = True
                    yield item
                return
            except _AttemptFailed as failure:
                if yielded:
                    log.warning("model %s stream broke after output (%s); no fallback", cfg.model_id, failure.reason)
                    raise RunnerHostError(
                        ErrorCode.RUNTIME_ERROR,
                        f"model {cfg.model_id!r} stream failed after partial output: {failure.reason}",
                        retryable=True, details={"model_id": model_id, "attempts": [failure.summary()]},
                    ) from None
                attempts.append(failure)
                log.warning("model %s failed (%s); %s", cfg.model_id, failure.reason,
                            "trying fallback" if cfg.fallback_model_id else "no fallback left")
        raise self._final_error(model_id, attempts)

    async def _sse_chunks(self, cfg: ModelProviderConfig, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """The ``data:`` chunks of an OpenAI-compatible SSE completion, up to ``[DONE]``."""
        try:
            async with self._http().stream("POST", cfg.endpoint, json=body, headers=self._headers(cfg),
                                           timeout=httpx.Timeout(cfg.timeout_s)) as resp:
                if resp.status_code >= 400:
                    raise self._http_failure(cfg, resp.status_code, await resp.aread())
                async for line in resp.aiter_lines():
                    line = line.strip()
                    if not line.startswith("data:"):
                        continue  # blank separators, ":" comments, event:/id: fields
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        return
                    try:
                        chunk = json.loads(payload)
                    except ValueError:
                        raise _AttemptFailed(cfg.model_id, "bad_response", "malformed stream chunk") from None
                    if isinstance(chunk, dict):
                        yield chunk
        except httpx.HTTPError as exc:
            raise self._transport_failure(cfg, exc) from None

    async def _litellm_chunks(self, cfg: ModelProviderConfig, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        try:
            async for chunk in litellm_backend.completion_stream(self._litellm_kwargs(cfg, body)):
                yield chunk
        except litellm_backend.CallFailed as exc:
            raise self._litellm_failure(cfg, exc) from None

    async def _stream_one(self, cfg: ModelProviderConfig, messages: list[dict[str, Any]],
                          tools: list[dict[str, Any]] | None,
                          params: dict[str, Any] | None) -> AsyncIterator[dict[str, Any]]:
        body = self._body(cfg, messages, tools, params, stream=True)
        chunks = self._litellm_chunks(cfg, body) if cfg.kind == "litellm" else self._sse_chunks(cfg, body)
        text: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        usage: dict[str, Any] = {}
        finish_reason: str | None = None
        role = "assistant"
        async for chunk in chunks:
            if chunk.get("error"):
                raise self._http_failure(cfg, 502, json.dumps({"error": chunk["error"]}).encode())
            if chunk.get("usage"):
                usage = _usage(chunk["usage"]) or usage
            for choice in chunk.get("choices") or []:
                if choice.get("index", 0) != 0:
                    continue
                delta = choice.get("delta") or {}
                role = delta.get("role") or role
                content = _text_of(delta.get("content"))
                if content:
                    text.append(content)
                    yield {"delta": {"content": content}}
                if delta.get("tool_calls"):
                    for pos, part in enumerate(delta["tool_calls"]):
                        _merge_tool_call_delta(calls, part, pos)
                    yield {"delta": {"tool_calls": delta["tool_calls"]}}
                if choice.get("finish_reason"):
                    finish_reason = choice["finish_reason"]
        message: dict[str, Any] = {"role": role, "content": "".join(text) if text else None}
        tool_calls = [_normalize_tool_call(calls[i], i) for i in sorted(calls)]
        if tool_calls:
            message["tool_calls"] = tool_calls
        if message["content"] is None and not tool_calls:
            message["content"] = ""
        yield {"message": message, "usage": usage, "model_id": cfg.model_id, "finish_reason": finish_reason}

    # -- embeddings, rerank, token counting ---------------------------------------
    async def embed(self, model_id: str, texts: list[str]) -> dict[str, Any]:
        """``{"vectors": [[float, …], …], "usage", "model_id"}``, one vector per text, in order."""
        cfg = self._of_type(model_id, "embedding", "invoke_embedding")
        if (not isinstance(texts, list) or not texts or len(texts) > MAX_EMBEDDING_TEXTS
                or not all(isinstance(t, str) and t for t in texts)):
            raise invalid_argument(f"texts must be 1..{MAX_EMBEDDING_TEXTS} non-empty strings")
        body = {**{k: v for k, v in cfg.default_params.items() if k not in _RESERVED_PARAMS},
                "model": cfg.model, "input": texts}
        try:
            if cfg.kind == "litellm":
                kwargs = self._litellm_kwargs(cfg, body)
                kwargs.pop("input")
                try:
                    data = await litellm_backend.embedding(kwargs, texts)
                except litellm_backend.CallFailed as exc:
                    raise self._litellm_failure(cfg, exc) from None
            else:
                data = await self._post_json(cfg, cfg.base_url.rstrip("/") + "/embeddings", body)
            rows = sorted(data.get("data") or [], key=lambda r: r.get("index", 0))
            vectors = [[float(x) for x in row["embedding"]] for row in rows]
        except _AttemptFailed as failure:
            raise self._final_error(model_id, [failure]) from None
        except (AttributeError, KeyError, TypeError, ValueError):
            raise self._final_error(model_id, [_AttemptFailed(model_id, "bad_response",
                                                              "malformed embeddings body")]) from None
        if len(vectors) != len(texts):
            raise self._final_error(model_id, [_AttemptFailed(
                model_id, "bad_response", f"{len(vectors)} vectors for {len(texts)} texts")])
        return {"vectors": vectors, "usage": _usage(data.get("usage")), "model_id": model_id}

    async def rerank(self, model_id: str, query: str, documents: list[str],
                     top_n: int | None = None, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """A real rerank model call: ``[{"index", "relevance_score", "document"}]``, best first.

        Only rerank models (``model_type = "rerank"``) answer; anything else is
        ``invalid_argument``. Like LangBot, at most the first :data:`MAX_RERANK_DOCUMENTS`
        documents are scored (``index`` refers to the caller's list).
        """
        cfg = self._of_type(model_id, "rerank", "invoke_rerank")
        if not isinstance(documents, list) or not all(isinstance(d, str) for d in documents):
            raise invalid_argument("documents must be a list of strings")
        if top_n is not None and (not isinstance(top_n, int) or isinstance(top_n, bool) or top_n < 1):
            raise invalid_argument("top_n must be a positive integer")
        if not documents:
            return []
        if len(documents) > MAX_RERANK_DOCUMENTS:
            log.warning("rerank %s: %d documents, scoring the first %d", model_id, len(documents),
                        MAX_RERANK_DOCUMENTS)
            documents = documents[:MAX_RERANK_DOCUMENTS]
        extra = {k: v for k, v in {**cfg.default_params, **(params or {})}.items()
                 if k not in ("model", "query", "documents", "top_n", "return_documents") and v is not None}
        try:
            if cfg.kind == "litellm":
                kwargs = self._litellm_kwargs(cfg, {"model": cfg.model, **extra})
                try:
                    raw = await litellm_backend.rerank(kwargs, query, documents, top_n)
                except litellm_backend.CallFailed as exc:
                    raise self._litellm_failure(cfg, exc) from None
            else:
                body = {**extra, "model": cfg.model, "query": query, "documents": documents,
                        "return_documents": False}
                if top_n is not None:
                    body["top_n"] = top_n
                data = await self._post_json(cfg, cfg.base_url.rstrip("/") + cfg.rerank_path, body)
                raw = data.get("results") if isinstance(data, dict) else data  # TEI answers a bare list
            results = []
            for item in raw or []:
                index = int(item["index"])
                score = item.get("relevance_score", item.get("score"))
                if not 0 <= index < len(documents) or not isinstance(score, (int, float)):
                    raise ValueError("result out of range")
                results.append({"index": index, "relevance_score": float(score), "document": documents[index]})
        except _AttemptFailed as failure:
            raise self._final_error(model_id, [failure]) from None
        except (AttributeError, KeyError, TypeError, ValueError):
            raise self._final_error(model_id, [_AttemptFailed(model_id, "bad_response",
                                                              "malformed rerank body")]) from None
        results.sort(key=lambda r: (-r["relevance_score"], r["index"]))
        return results[:top_n] if top_n else results

    async def count_tokens(self, model_id: str, messages: list[dict[str, Any]],
                           tools: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """``{"tokens": n, "method": "litellm" | "tiktoken" | "estimate"}`` (see the module doc)."""
        cfg = self.get(model_id)
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise invalid_argument("messages must be a list of objects")
        norm_tools = _normalize_tools(tools)
        if cfg.kind == "litellm" and litellm_backend.available():
            try:
                return {"tokens": litellm_backend.count_tokens(cfg.model, messages, norm_tools), "method": "litellm"}
            except litellm_backend.CallFailed as exc:
                log.info("model %s: LiteLLM cannot count tokens (%s); estimating", model_id,
                         self._redact(cfg, exc.reason)[:200])
        elif cfg.kind == "openai":
            counted = tokens.tiktoken_tokens(cfg.model, messages, norm_tools)
            if counted is not None:
                return {"tokens": counted, "method": "tiktoken"}
        return {"tokens": tokens.estimate_tokens(messages, norm_tools), "method": "estimate"}


# -- helpers --------------------------------------------------------------------

def _text_of(content: Any) -> str | None:
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text") or "") for p in content if isinstance(p, dict))
    return str(content)


def _usage(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        return {}
    out: dict[str, Any] = {}
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        if isinstance(raw.get(key), int):
            out[key] = raw[key]
    if "total_tokens" not in out and ("prompt_tokens" in out or "completion_tokens" in out):
        out["total_tokens"] = out.get("prompt_tokens", 0) + out.get("completion_tokens", 0)
    return out


def _normalize_tools(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Accept OpenAI ``{"type": "function", "function": {...}}`` or bare ``{"name", ...}`` specs."""
    out = []
    for tool in tools or []:
        if not isinstance(tool, dict):
            raise RunnerHostError(ErrorCode.INVALID_ARGUMENT, "each tool must be an object")
        if tool.get("type") == "function" and isinstance(tool.get("function"), dict):
            out.append(tool)
            continue
        name = tool.get("name") or tool.get("tool_name")
        if not name:
            raise RunnerHostError(ErrorCode.INVALID_ARGUMENT, "a tool definition has no name")
        out.append({"type": "function", "function": {
            "name": name,
            "description": tool.get("description") or "",
            "parameters": tool.get("parameters") or {"type": "object", "properties": {}},
        }})
    return out


def _merge_tool_call_delta(calls: dict[int, dict[str, Any]], part: dict[str, Any], pos: int) -> None:
    index = part.get("index", pos)
    slot = calls.setdefault(index, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
    if part.get("id"):
        slot["id"] = part["id"]
    if part.get("type"):
        slot["type"] = part["type"]
    fn = part.get("function") or {}
    if fn.get("name"):
        # Names arrive whole in practice; a few servers split them, so append.
        slot["function"]["name"] += fn["name"]
    if fn.get("arguments"):
        args = fn["arguments"]
        slot["function"]["arguments"] += args if isinstance(args, str) else json.dumps(args)


def _normalize_tool_call(raw: dict[str, Any], index: int) -> dict[str, Any]:
    fn = raw.get("function") or {}
    args = fn.get("arguments")
    if args is None:
        args = ""
    elif not isinstance(args, str):
        args = json.dumps(args)
    return {"id": raw.get("id") or f"call_{index}", "type": raw.get("type") or "function",
            "function": {"name": fn.get("name") or "", "arguments": args}}
