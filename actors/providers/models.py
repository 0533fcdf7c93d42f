"""OpenAI-compatible chat-completions provider (SPEC §6 ``invoke_llm`` / ``invoke_llm_stream``).

:class:`ModelRegistry` maps host model ids to :class:`ModelProviderConfig` and
talks to ``{base_url}/chat/completions`` over httpx, streamed (SSE ``data:``
lines ending with ``[DONE]``) or not. Tool-call deltas are accumulated into
complete ``tool_calls``; token usage is returned to the caller.

Failure handling: an HTTP error status, a timeout, a connection error or a
malformed reply of one model makes the registry try the model's
``fallback_model_id`` (a chain, cycle-safe) — for a stream only while nothing
has been yielded yet. When every candidate failed it raises
:class:`~protocol.errors.RunnerHostError` ``runtime_error`` (``rate_limited``
when the last failure was an HTTP 429), always ``retryable``.

Secrets: the API key is read from the environment variable named by
``api_key_env`` at request time and is never stored on the config, logged or
put in an error message; provider error bodies are scrubbed of the key and of
``extra_headers`` values before they reach a message.
"""
from __future__ import annotations

import asyncio
import json
import math
import os
import re
from collections import Counter
from typing import Any, AsyncIterator, Iterable

import httpx
from pydantic import BaseModel, ConfigDict, Field

from protocol.errors import ErrorCode, RunnerHostError
from protocol.logs import get_logger
from protocol.redact import redact

log = get_logger(__name__)

#: Request-body keys a caller's ``params`` may not override.
_RESERVED_PARAMS = frozenset({"model", "messages", "stream", "tools"})
_MAX_ERROR_SNIPPET = 200


class ModelProviderConfig(BaseModel):
    """One host model id → one OpenAI-compatible endpoint and model name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_id: str = Field(min_length=1, max_length=256)
    base_url: str = Field(min_length=1, description="e.g. https://api.openai.com/v1 (…/chat/completions is appended)")
    model: str = Field(min_length=1, description="model name sent to the endpoint")
    api_key_env: str | None = Field(default=None, description="NAME of the env var holding the API key")
    api_key_header: str = Field(default="Authorization",
                                description="'Authorization' sends 'Bearer <key>'; any other header gets the raw key")
    timeout_s: float = Field(default=60.0, gt=0, description="connect/read/write timeout per request")
    fallback_model_id: str | None = None
    extra_headers: dict[str, str] = Field(default_factory=dict, repr=False)
    default_params: dict[str, Any] = Field(default_factory=dict,
                                           description="merged under the caller's params (temperature, …)")
    provider: str = "openai-compatible"
    stream_usage: bool = Field(default=True, description="send stream_options.include_usage on streamed calls")

    @property
    def endpoint(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"


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
        """``{model_id: {"provider": ...}}`` — the shape of ``ResourceCatalog.models``."""
        return {mid: {"provider": cfg.provider, "model_type": "chat"} for mid, cfg in self._configs.items()}

    def _chain(self, model_id: str) -> list[ModelProviderConfig]:
        chain = [self.get(model_id)]
        seen = {model_id}
        nxt = chain[0].fallback_model_id
        while nxt and nxt not in seen and nxt in self._configs:
            seen.add(nxt)
            chain.append(self._configs[nxt])
            nxt = self._configs[nxt].fallback_model_id
        return chain

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

    def _headers(self, cfg: ModelProviderConfig) -> dict[str, str]:
        headers = {"Content-Type": "application/json", **cfg.extra_headers}
        if cfg.api_key_env:
            key = os.environ.get(cfg.api_key_env)
            if not key:
                raise _AttemptFailed(cfg.model_id, "config",
                                     f"API key environment variable {cfg.api_key_env!r} is not set")
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

    async def _invoke_one(self, cfg: ModelProviderConfig, messages: list[dict[str, Any]],
                          tools: list[dict[str, Any]] | None, params: dict[str, Any] | None) -> dict[str, Any]:
        body = self._body(cfg, messages, tools, params, stream=False)
        headers = self._headers(cfg)
        try:
            resp = await self._http().post(cfg.endpoint, json=body, headers=headers,
                                           timeout=httpx.Timeout(cfg.timeout_s))
        except httpx.HTTPError as exc:
            raise self._transport_failure(cfg, exc) from None
        if resp.status_code >= 400:
            raise self._http_failure(cfg, resp.status_code, resp.content)
        try:
            data = resp.json()
            choice = (data.get("choices") or [])[0]
            raw_msg = choice.get("message") or {}
        except (ValueError, IndexError, AttributeError, TypeError):
            raise _AttemptFailed(cfg.model_id, "bad_response", "malformed completion body") from None
        if isinstance(data.get("error"), dict):
            raise self._http_failure(cfg, resp.status_code, resp.content)
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

    async def _stream_one(self, cfg: ModelProviderConfig, messages: list[dict[str, Any]],
                          tools: list[dict[str, Any]] | None,
                          params: dict[str, Any] | None) -> AsyncIterator[dict[str, Any]]:
        body = self._body(cfg, messages, tools, params, stream=True)
        headers = self._headers(cfg)
        text: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        usage: dict[str, Any] = {}
        finish_reason: str | None = None
        role = "assistant"
        try:
            async with self._http().stream("POST", cfg.endpoint, json=body, headers=headers,
                                           timeout=httpx.Timeout(cfg.timeout_s)) as resp:
                if resp.status_code >= 400:
                    raise self._http_failure(cfg, resp.status_code, await resp.aread())
                async for line in resp.aiter_lines():
                    line = line.strip()
                    if not line.startswith("data:"):
                        continue  # blank separators, ":" comments, event:/id: fields
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        break
                    try:
                        chunk = json.loads(payload)
                    except ValueError:
                        raise _AttemptFailed(cfg.model_id, "bad_response", "malformed stream chunk") from None
                    if not isinstance(chunk, dict):
                        continue
                    if chunk.get("error"):
                        raise self._http_failure(cfg, 502, json.dumps({"error": chunk["error"]}).encode())
                    if chunk.get("usage"):
                        usage = _usage(chunk["usage"])
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
        except httpx.HTTPError as exc:
            raise self._transport_failure(cfg, exc) from None
        message: dict[str, Any] = {"role": role, "content": "".join(text) if text else None}
        tool_calls = [_normalize_tool_call(calls[i], i) for i in sorted(calls)]
        if tool_calls:
            message["tool_calls"] = tool_calls
        if message["content"] is None and not tool_calls:
            message["content"] = ""
        yield {"message": message, "usage": usage, "model_id": cfg.model_id, "finish_reason": finish_reason}

    # -- rerank -----------------------------------------------------------------
    async def rerank(self, model_id: str, query: str, documents: list[str],
                     top_n: int | None = None) -> list[dict[str, Any]]:
        """NAIVE rerank: token-overlap scoring, no model call.

        Chat-completion endpoints have no rerank API, so this scores each
        document by the cosine of query/document token counts. Every item is
        labelled ``"method": "naive_token_overlap"`` so nobody mistakes it for
        a real cross-encoder. ``model_id`` must still be configured.
        """
        self.get(model_id)
        if not isinstance(documents, list):
            raise RunnerHostError(ErrorCode.INVALID_ARGUMENT, "documents must be a list of strings")
        q = Counter(_tokens(query))
        scored = []
        for index, doc in enumerate(documents):
            d = Counter(_tokens(str(doc)))
            dot = sum(q[t] * d[t] for t in q)
            norm = math.sqrt(sum(v * v for v in q.values())) * math.sqrt(sum(v * v for v in d.values()))
            scored.append({"index": index, "score": round(dot / norm, 6) if norm else 0.0,
                           "document": doc, "method": "naive_token_overlap"})
        scored.sort(key=lambda r: (-r["score"], r["index"]))
        return scored[:top_n] if top_n else scored


# -- helpers --------------------------------------------------------------------

def _tokens(text: str) -> list[str]:
    return re.findall(r"\w+", (text or "").lower())


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
