"""LiteLLM behind :class:`~actors.providers.models.ModelRegistry` (``kind = "litellm"``).

LiteLLM is an optional extra (``pip install 'runnerhost[providers]'``); it is imported
on first use, never at import time. Every function returns plain OpenAI-shaped data
(``model_dump()`` of LiteLLM's response objects) or raises :class:`CallFailed`, whose
``reason`` the registry scrubs before it reaches a message.

LiteLLM would fetch its model map from the network at import; this module makes it
use the copy it ships (``LITELLM_LOCAL_MODEL_COST_MAP``) unless the operator set the
variable.
"""
from __future__ import annotations

import os
from typing import Any, AsyncIterator

INSTALL_HINT = "kind 'litellm' needs the optional LiteLLM extra: pip install 'runnerhost[providers]'"


class CallFailed(Exception):
    """One LiteLLM call failed; ``kind`` is ``config | timeout | rate_limited | connection | http_error``."""

    def __init__(self, kind: str, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.kind, self.reason, self.status = kind, reason, status


def _lib() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        import litellm
    except ImportError:
        raise CallFailed("config", INSTALL_HINT) from None
    litellm.suppress_debug_info = True
    return litellm


def available() -> bool:
    try:
        _lib()
    except CallFailed:
        return False
    return True


def _failure(exc: Exception) -> CallFailed:
    if isinstance(exc, CallFailed):
        return exc
    name = type(exc).__name__
    status = getattr(exc, "status_code", None)
    status = status if isinstance(status, int) else None
    reason = str(getattr(exc, "message", None) or exc).strip().splitlines()[0][:300] if str(exc) else name
    if "Timeout" in name:
        return CallFailed("timeout", f"timed out ({name})")
    if status == 429 or "RateLimit" in name:
        return CallFailed("rate_limited", f"HTTP 429: {reason}", 429)
    if "APIConnectionError" in name or "ServiceUnavailable" in name and status is None:
        return CallFailed("connection", f"{name}: {reason}")
    if status is not None:
        return CallFailed("http_error", f"HTTP {status}: {reason}", status)
    return CallFailed("connection", f"{name}: {reason}")


async def completion(kwargs: dict[str, Any]) -> dict[str, Any]:
    lib = _lib()
    try:
        response = await lib.acompletion(**kwargs, stream=False)
    except Exception as exc:  # LiteLLM maps every provider error onto its own exception classes
        raise _failure(exc) from None
    return response.model_dump()


async def completion_stream(kwargs: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    lib = _lib()
    try:
        stream = await lib.acompletion(**kwargs, stream=True)
        async for chunk in stream:
            yield chunk.model_dump()
    except CallFailed:
        raise
    except Exception as exc:
        raise _failure(exc) from None


async def embedding(kwargs: dict[str, Any], texts: list[str]) -> dict[str, Any]:
    lib = _lib()
    try:
        response = await lib.aembedding(input=texts, **kwargs)
    except Exception as exc:
        raise _failure(exc) from None
    return response.model_dump()


async def rerank(kwargs: dict[str, Any], query: str, documents: list[str], top_n: int | None) -> list[dict[str, Any]]:
    lib = _lib()
    try:
        response = await lib.arerank(query=query, documents=documents, top_n=top_n, return_documents=False,
                                     **kwargs)
    except Exception as exc:
        raise _failure(exc) from None
    data = response.model_dump() if hasattr(response, "model_dump") else dict(response)
    return list(data.get("results") or [])


def count_tokens(model: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> int:
    """The provider's tokenizer as LiteLLM knows it (a tiktoken fallback for unknown models)."""
    lib = _lib()
    try:
        return int(lib.token_counter(model=model, messages=messages, tools=tools or None))
    except Exception as exc:
        raise _failure(exc) from None


def model_limits(model: str) -> dict[str, int]:
    """Context window / max output from LiteLLM's model map; ``{}`` when unknown (or no LiteLLM)."""
    try:
        info = _lib().get_model_info(model)
    except Exception:
        return {}
    out = {}
    if isinstance(info.get("max_input_tokens"), int):
        out["context_window"] = info["max_input_tokens"]
    if isinstance(info.get("max_output_tokens"), int):
        out["max_output_tokens"] = info["max_output_tokens"]
    return out
