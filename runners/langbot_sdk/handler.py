"""The runtime handler LangBot SDK runners talk to, answered by our :class:`RunnerAPI`.

An SDK runner never sees a transport: its ``ctx.api`` (the SDK's own
``RunnerAPIProxy``) calls ``plugin_runtime_handler.call_action(action, data,
timeout)`` — or ``call_action_generator`` for ``invoke_llm_stream`` — and
expects a response dict of a fixed shape per action, or an
``ActionCallError`` whose ``data["error"]`` is ``{code, message, retryable,
details}`` (the SDK turns that into ``AgentAPIException(AgentAPIError)``).

* :class:`HostActionHandler` — one run: every supported action is translated
  into one call on that run's :class:`RunnerAPI` (the RunActor, which does all
  authorization) and the answer is reshaped into what the SDK reads.
* :class:`HostRuntimeHandler` — what the adapter binds to a *shared* SDK runner
  instance: routes each action to the active run's handler by the ``run_id``
  every run-scoped SDK call carries (or, for run-scoped plugin helpers, by the
  SDK's task-local invocation). A run that is not active is ``unauthorized``.

Replies — ``ctx.reply`` (the ``event_reply`` tool), ``reply_message``, ``send_message`` (into the
run's own chat only) and ``reply_stream`` (its final text, once) — become ``message_send``, the
host's recorded delivery. Message chains are sent as text (:func:`chain_text`).

Unsupported actions fail at once with a structured ``invalid_argument`` error
(``details.reason = "unsupported_action"``); nothing waits on a peer.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import re
from typing import Any, AsyncIterator, Awaitable, Callable

from ._compat import require_langbot_plugin

require_langbot_plugin()

from langbot_plugin.entities.io.errors import ActionCallError, ActionCallTimeoutError  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from protocol.errors import ErrorCode, RunnerHostError  # noqa: E402
from protocol.logs import get_logger
from protocol.runner import RunnerAPI  # noqa: E402

log = get_logger(__name__)

HOST_NAME = "runnerhost"

# -- action names (values of langbot_plugin PluginToRuntimeAction) -------------
GET_LANGBOT_VERSION = "get_langbot_version"
INVOKE_LLM = "invoke_llm"
INVOKE_LLM_STREAM = "invoke_llm_stream"
INVOKE_RERANK = "invoke_rerank"
INVOKE_EMBEDDING = "invoke_embedding"
COUNT_TOKENS = "count_tokens"
GET_TOOL_DETAIL = "get_tool_detail"
CALL_TOOL = "call_tool"
RETRIEVE_KNOWLEDGE_BASE = "retrieve_knowledge_base"
HISTORY_PAGE = "history_page"
HISTORY_SEARCH = "history_search"
EVENT_GET = "event_get"
EVENT_PAGE = "event_page"
STEERING_PULL = "steering_pull"
STATE_GET = "state_get"
STATE_SET = "state_set"
STATE_DELETE = "state_delete"
STATE_LIST = "state_list"
RUN_GET = "run_get"
RUN_LIST = "run_list"
RUN_EVENTS_PAGE = "run_events_page"
RUN_CANCEL = "run_cancel"
# Explicit messages, all through RunnerAPI.message_send (host-owned, recorded delivery).
CALL_PLATFORM_API = "call_platform_api"  # only its "send_message" action (plain or event_reply)
SEND_MESSAGE = "send_message"            # the plugin-level LangBotAPIProxy.send_message
REPLY_MESSAGE = "reply_message"          # the query-based reply
REPLY_STREAM = "reply_stream"            # update / finish / abort of ctx.reply_stream()
#: The platform tool ``ctx.reply(text)`` calls; advertised (with ``available_apis.reply_stream``)
#: to runs whose event came from a platform chat (see :func:`advertise_replies`).
EVENT_REPLY_TOOL = "event_reply"
# Present in some langbot-plugin releases (not 0.7.18); answered when asked.
ARTIFACT_METADATA = "artifact_metadata"
ARTIFACT_READ = "artifact_read"

_STORAGE_ACTIONS: dict[str, tuple[str, str]] = {
    f"{verb}_{area}_storage{suffix}": (area, op)
    for area in ("plugin", "workspace")
    for verb, suffix, op in (("set", "", "set"), ("get", "", "get"),
                             ("delete", "", "delete"), ("get", "_keys", "keys"))
}

#: action → the RunnerAPI method that answers it (the table in the README).
ACTION_TABLE: dict[str, str] = {
    GET_LANGBOT_VERSION: "(answered by the adapter: host version, API_FEATURES)",
    INVOKE_LLM: "invoke_llm",
    COUNT_TOKENS: "count_tokens",
    INVOKE_EMBEDDING: "invoke_embedding",
    INVOKE_LLM_STREAM: "invoke_llm_stream (generator form)",
    INVOKE_RERANK: "invoke_rerank",
    GET_TOOL_DETAIL: "get_tool_detail",
    CALL_TOOL: "call_tool",
    RETRIEVE_KNOWLEDGE_BASE: "retrieve_knowledge",
    HISTORY_PAGE: "history_page",
    HISTORY_SEARCH: "history_search",
    EVENT_GET: "event_get",
    EVENT_PAGE: "event_page",
    STEERING_PULL: "steering_pull",
    STATE_GET: "state_get",
    STATE_SET: "state_set",
    STATE_DELETE: "state_delete",
    STATE_LIST: "state_list",
    **{name: f"storage_{op}('{area}', …)" for name, (area, op) in _STORAGE_ACTIONS.items()},
    RUN_GET: "run_get",
    RUN_LIST: "run_list",
    RUN_EVENTS_PAGE: "run_events_page",
    RUN_CANCEL: "run_cancel",
    CALL_PLATFORM_API: "message_send (action 'send_message' only)",
    SEND_MESSAGE: "message_send",
    REPLY_MESSAGE: "message_send",
    REPLY_STREAM: "message_send (the final text, once, on finish)",
    ARTIFACT_METADATA: "artifact_metadata",
    ARTIFACT_READ: "artifact_read / artifact_read_range",
}

STREAM_ACTIONS: frozenset[str] = frozenset({INVOKE_LLM_STREAM})
UNARY_ACTIONS: frozenset[str] = frozenset(ACTION_TABLE) - STREAM_ACTIONS
SUPPORTED_ACTIONS: frozenset[str] = UNARY_ACTIONS | STREAM_ACTIONS

#: Why the well-known actions we do not serve are refused (anything else: generic).
UNSUPPORTED_REASONS: dict[str, str] = {
    "get_prompt": "the host never assembles prompts; pull history with history_page",
    "run_append_result": "results travel on the run's result stream; the host owns the ledger",
    "run_finalize": "the host finalizes the run ledger from the result stream",
    **{a: "RunnerHost has no Box sandbox service" for a in (
        "get_box_status", "list_boxes", "acquire_box", "bind_box",
        "import_box_attachments", "export_box_files")},
}

_DEFAULT_TIMEOUT = 15.0

#: What ``get_langbot_version`` advertises; each is honoured: ``llm.reasoning_level`` becomes the
#: model's ``reasoning_effort`` (``actors/providers/models.py`` REASONING_EFFORT).
API_FEATURES: tuple[str, ...] = ("llm.reasoning_level",)
_THINK_RE = re.compile(r"<think>.*?</think>\s*", re.DOTALL)


def action_name(action: Any) -> str:
    """``PluginToRuntimeAction.X`` or a plain string → the wire name."""
    return str(getattr(action, "value", action))


# -- errors -------------------------------------------------------------------
def api_error(code: str | ErrorCode, message: str, *, retryable: bool = False,
              details: dict[str, Any] | None = None) -> ActionCallError:
    """An ``ActionCallError`` the SDK parses into ``AgentAPIException(AgentAPIError)``."""
    code = code.value if isinstance(code, ErrorCode) else str(code)
    body = {"code": code, "message": message, "retryable": retryable, "details": dict(details or {})}
    return ActionCallError(message, {"error": body})


def unsupported_action(name: str, *, streaming: bool = False) -> ActionCallError:
    reason = UNSUPPORTED_REASONS.get(name, "not supported by RunnerHost")
    if streaming and name in UNARY_ACTIONS:
        reason = "this action has no streaming form; use call_action"
    elif not streaming and name in STREAM_ACTIONS:
        reason = "this is a streaming action; use call_action_generator"
    return api_error(ErrorCode.INVALID_ARGUMENT, f"action {name!r} is not supported: {reason}",
                     details={"action": name, "reason": "unsupported_action"})


def host_error_of(exc: BaseException) -> RunnerHostError | None:
    """The RunnerHostError behind ``exc`` (also through Ray's ``RayTaskError.cause``)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, RunnerHostError):
            return cur
        seen.add(id(cur))
        cause = getattr(cur, "cause", None)
        cur = cause if isinstance(cause, BaseException) else cur.__cause__
    return None


def translate_exception(name: str, exc: BaseException) -> ActionCallError:
    if isinstance(exc, ActionCallError):
        return exc
    host = host_error_of(exc)
    if host is not None:
        return api_error(host.code, host.message, retryable=host.retryable,
                         details={**host.details, "action": name})
    text = f"{type(exc).__name__}: {exc}"[:500]
    log.warning("action %s failed unexpectedly: %s", name, text)
    return api_error(ErrorCode.RUNTIME_ERROR, text, details={"action": name})


def _invalid(message: str, **details: Any) -> RunnerHostError:
    return RunnerHostError(ErrorCode.INVALID_ARGUMENT, message, details=details)


# -- payload helpers ----------------------------------------------------------
def _req_str(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise _invalid(f"{key} is required", field=key)
    return value


def _opt_str(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid(f"{key} must be a string", field=key)
    return value


def _opt_int(data: dict[str, Any], key: str, default: int | None) -> int | None:
    value = data.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(f"{key} must be an integer", field=key)
    return value


def _opt_dict(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _invalid(f"{key} must be an object", field=key)
    return value


def _opt_list(data: dict[str, Any], key: str) -> list[Any]:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _invalid(f"{key} must be a list", field=key)
    return value


def _dump(value: Any) -> dict[str, Any]:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return value
    raise RunnerHostError(ErrorCode.RUNTIME_ERROR,
                          f"host returned a {type(value).__name__} where an object was expected")


# -- LLM message translation --------------------------------------------------
_IMAGE_MAGIC = ((b"\x89PNG", "image/png"), (b"\xff\xd8", "image/jpeg"),
                (b"GIF8", "image/gif"), (b"RIFF", "image/webp"))


def _data_url(b64: str) -> str:
    if b64.startswith("data:"):
        return b64
    mime = "image/png"
    try:
        head = base64.b64decode(b64[:16] + "=" * (-len(b64[:16]) % 4))
        mime = next((m for magic, m in _IMAGE_MAGIC if head.startswith(magic)), mime)
    except (binascii.Error, ValueError):
        pass
    return f"data:{mime};base64,{b64}"


def _strip_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def sdk_message_to_chat(message: Any) -> dict[str, Any]:
    """SDK ``provider.message.Message`` dump → OpenAI-style chat message for our API."""
    if isinstance(message, BaseModel):
        message = message.model_dump()
    if not isinstance(message, dict) or not isinstance(message.get("role"), str):
        raise _invalid("every message needs a role")
    out = {k: v for k, v in message.items()
           if v is not None and k not in ("resp_message_id", "attachments", "provider_specific_fields")}
    content = out.get("content")
    if isinstance(content, list):
        parts = []
        for element in content:
            element = _strip_none(element if isinstance(element, dict) else {"type": "text", "text": str(element)})
            if element.get("type") == "image_base64" and isinstance(element.get("image_base64"), str):
                element = {"type": "image_url", "image_url": {"url": _data_url(element["image_base64"])}}
            parts.append(element)
        out["content"] = parts
    if isinstance(out.get("tool_calls"), list):
        out["tool_calls"] = [
            {k: v for k, v in _strip_none(tc).items() if k != "provider_specific_fields"}
            for tc in out["tool_calls"] if isinstance(tc, dict)
        ]
    return out


def sdk_tool_to_chat(func: Any) -> dict[str, Any]:
    """SDK ``LLMTool`` dump → OpenAI ``{"type": "function", "function": {...}}``."""
    if isinstance(func, BaseModel):
        func = func.model_dump()
    if not isinstance(func, dict):
        raise _invalid("funcs must be objects")
    if func.get("type") == "function" and isinstance(func.get("function"), dict):
        return func
    name = func.get("name")
    if not isinstance(name, str) or not name:
        raise _invalid("every func needs a name")
    return {"type": "function", "function": {
        "name": name,
        "description": func.get("description") or func.get("human_desc") or "",
        "parameters": func.get("parameters") or {"type": "object", "properties": {}},
    }}


def _sdk_tool_call(tc: dict[str, Any]) -> dict[str, Any]:
    fn = tc.get("function") if isinstance(tc.get("function"), dict) else {}
    args = fn.get("arguments")
    if not isinstance(args, str):
        args = json.dumps(args if args is not None else {})
    return {"id": str(tc.get("id") or ""), "type": tc.get("type") or "function",
            "function": {"name": str(fn.get("name") or ""), "arguments": args}}


def chat_to_sdk_message(message: Any) -> dict[str, Any]:
    """A chat message from our API → a dict that validates as the SDK ``Message``."""
    if not isinstance(message, dict):
        raise RunnerHostError(ErrorCode.RUNTIME_ERROR, "model returned no message")
    out: dict[str, Any] = {"role": message.get("role") or "assistant"}
    for key in ("name", "tool_call_id"):
        if isinstance(message.get(key), str):
            out[key] = message[key]
    content = message.get("content")
    if isinstance(content, str):
        out["content"] = content
    elif isinstance(content, list):
        out["content"] = [p if isinstance(p, dict) and "type" in p else {"type": "text", "text": str(p)}
                          for p in content]
    if message.get("tool_calls"):
        out["tool_calls"] = [_sdk_tool_call(tc) for tc in message["tool_calls"] if isinstance(tc, dict)]
    return out


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text") or "") for p in content
                       if isinstance(p, dict) and p.get("type") == "text")
    return ""


# -- explicit messages ---------------------------------------------------------
#: Keys that name the chat in a reply target (telegram chat_id, slack channel, discord
#: channel_id, onebot group_id / user_id): what LangBot's ``target_id`` is compared with.
CHAT_ID_KEYS: tuple[str, ...] = ("chat_id", "channel", "channel_id", "group_id", "user_id")
#: Message-chain components that are message metadata, not content (never rendered).
_CHAIN_METADATA = frozenset({"Source", "Quote"})
#: ``reply_stream`` sessions one run may hold open at once.
MAX_REPLY_STREAMS = 64
_REPLY_TOOL_SCHEMA = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}


def chain_text(chain: Any) -> tuple[str, list[str]]:
    """A LangBot message chain → the text we send, and the component types not sent as such.

    Plain text is kept; mentions become ``@name``; media and other components (Image, Voice,
    File, Forward, Face, …) become LangBot's own text placeholders (``[Image]``, ``[File]name``)
    and are listed as not sent; Source and Quote (metadata) are left out."""
    from langbot_plugin.api.entities.builtin.platform.message import MessageChain

    if isinstance(chain, str):
        return chain, []
    try:
        parsed = chain if isinstance(chain, MessageChain) else MessageChain.model_validate(chain)
    except Exception:
        raise _invalid("message_chain is not a LangBot message chain", field="message_chain") from None
    pieces, lost = [], []
    for component in parsed.root:
        kind = getattr(component, "type", type(component).__name__)
        if kind in _CHAIN_METADATA:
            continue
        if kind not in ("Plain", "At", "AtAll"):
            lost.append(kind)
        pieces.append(str(component))
    return "".join(pieces), lost


def sent_result(sent: Any, not_sent: list[str] | None = None) -> dict[str, Any]:
    """Our ``SentMessage`` → what the SDK's reply / send_message callers get back as ``result``."""
    sent = _dump(sent)
    ids = [p["platform_message_id"] for p in sent.get("parts") or [] if p.get("platform_message_id")]
    out = {"success": sent.get("status") == "delivered", "status": sent.get("status"),
           "platform": sent.get("platform"), "message_id": ids[0] if ids else None, "message_ids": ids}
    if not_sent:
        out["not_sent"] = list(not_sent)
    return out


def advertise_replies(wire: dict[str, Any]) -> dict[str, Any]:
    """The SDK's view of a run that may post into its chat: ``available_apis.reply_stream`` and
    the ``event_reply`` platform tool (what ``ctx.reply`` / ``ctx.reply_stream`` check locally),
    both only when our context grants ``message_send``. ``wire`` is changed in place."""
    apis = (wire.get("context") or {}).get("available_apis") or {}
    if not apis.get("message_send"):
        return wire
    apis["reply_stream"] = True
    tools = wire.setdefault("resources", {}).setdefault("tools", [])
    if not any(t.get("tool_name") == EVENT_REPLY_TOOL for t in tools):
        tools.append({"tool_name": EVENT_REPLY_TOOL, "tool_type": "platform", "operations": ["call"],
                      "description": "Send a message to the conversation this event came from.",
                      "parameters": _REPLY_TOOL_SCHEMA})
    return wire


# -- the per-run handler ------------------------------------------------------
Action = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class HostActionHandler:
    """``plugin_runtime_handler`` for ONE run, backed by that run's :class:`RunnerAPI`.

    ``call_action`` returns the response dict the SDK expects for the action;
    every refusal is an ``ActionCallError`` carrying ``{"error": {code, message,
    retryable, details}}``; a call that outlives ``timeout`` raises the SDK's
    ``ActionCallTimeoutError`` (→ ``deadline_exceeded``, retryable).
    """

    def __init__(self, api: RunnerAPI, *, run_id: str | None = None, host_version: str | None = None,
                 reply_target: dict[str, Any] | None = None, bot_id: str | None = None):
        self.api = api
        self.run_id: str | None = run_id or getattr(api, "run_id", None)
        self.host_version = host_version or _host_version()
        self.reply_target = dict(reply_target or {})  # the run's own chat (ctx.delivery.reply_target)
        self.bot_id = bot_id
        self._reply_streams: dict[str, str] = {}  # stream_id → the text so far
        self._unary: dict[str, Action] = {
            GET_LANGBOT_VERSION: self._get_langbot_version,
            INVOKE_LLM: self._invoke_llm,
            COUNT_TOKENS: self._count_tokens,
            INVOKE_EMBEDDING: self._invoke_embedding,
            INVOKE_RERANK: self._invoke_rerank,
            GET_TOOL_DETAIL: self._get_tool_detail,
            CALL_TOOL: self._call_tool,
            RETRIEVE_KNOWLEDGE_BASE: self._retrieve_knowledge_base,
            HISTORY_PAGE: self._history_page,
            HISTORY_SEARCH: self._history_search,
            EVENT_GET: self._event_get,
            EVENT_PAGE: self._event_page,
            STEERING_PULL: self._steering_pull,
            STATE_GET: self._state_get,
            STATE_SET: self._state_set,
            STATE_DELETE: self._state_delete,
            STATE_LIST: self._state_list,
            RUN_GET: self._run_get,
            RUN_LIST: self._run_list,
            RUN_EVENTS_PAGE: self._run_events_page,
            RUN_CANCEL: self._run_cancel,
            CALL_PLATFORM_API: self._call_platform_api,
            SEND_MESSAGE: self._send_message,
            REPLY_MESSAGE: self._reply_message,
            REPLY_STREAM: self._reply_stream,
            ARTIFACT_METADATA: self._artifact_metadata,
            ARTIFACT_READ: self._artifact_read,
            **{name: self._storage_action(area, op) for name, (area, op) in _STORAGE_ACTIONS.items()},
        }
        assert frozenset(self._unary) == UNARY_ACTIONS

    # -- the SDK-facing surface (duck-types langbot_plugin's runtime Handler) --
    async def call_action(self, action: Any, data: dict[str, Any] | None = None,
                          timeout: float | None = _DEFAULT_TIMEOUT, **_: Any) -> dict[str, Any]:
        name = action_name(action)
        fn = self._unary.get(name)
        if fn is None:
            raise unsupported_action(name)
        payload = dict(data or {})
        self._check_run(name, payload)
        try:
            if timeout is None:
                return await fn(payload)
            return await asyncio.wait_for(fn(payload), timeout)
        except asyncio.TimeoutError:
            raise ActionCallTimeoutError(f"Action {name} call timed out") from None
        except Exception as exc:
            raise translate_exception(name, exc) from exc

    async def call_action_generator(self, action: Any, data: dict[str, Any] | None = None,
                                    timeout: float | None = _DEFAULT_TIMEOUT,
                                    **_: Any) -> AsyncIterator[dict[str, Any]]:
        name = action_name(action)
        if name not in STREAM_ACTIONS:
            raise unsupported_action(name, streaming=True)
        payload = dict(data or {})
        self._check_run(name, payload)
        stream = self._invoke_llm_stream(payload)
        try:
            while True:
                try:
                    if timeout is None:
                        item = await stream.__anext__()
                    else:
                        item = await asyncio.wait_for(stream.__anext__(), timeout)
                except StopAsyncIteration:
                    return
                except asyncio.TimeoutError:
                    raise ActionCallTimeoutError(f"Action {name} call timed out") from None
                except Exception as exc:
                    raise translate_exception(name, exc) from exc
                yield item
        finally:
            await stream.aclose()

    def _check_run(self, name: str, data: dict[str, Any]) -> None:
        caller = data.get("run_id")
        if caller is not None and self.run_id is not None and caller != self.run_id:
            raise api_error(ErrorCode.UNAUTHORIZED, "the call names another run than the one it runs in",
                            details={"action": name})

    # -- models ---------------------------------------------------------------
    def _llm_args(self, data: dict[str, Any]) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
        model_id = _req_str(data, "llm_model_uuid")
        messages = [sdk_message_to_chat(m) for m in _opt_list(data, "messages")]
        if not messages:
            raise _invalid("messages must not be empty", field="messages")
        kwargs: dict[str, Any] = {}
        funcs = [sdk_tool_to_chat(f) for f in _opt_list(data, "funcs")]
        if funcs:
            kwargs["tools"] = funcs
        params = dict(_opt_dict(data, "extra_args"))
        level = _opt_str(data, "reasoning_level")
        if level is not None:  # the SDK sends it only to hosts advertising llm.reasoning_level
            params["reasoning_level"] = level
        if params:
            kwargs["params"] = params
        return model_id, messages, kwargs

    async def _invoke_llm(self, data: dict[str, Any]) -> dict[str, Any]:
        model_id, messages, kwargs = self._llm_args(data)
        result = await self.api.invoke_llm(model_id, messages, **kwargs)
        result = _dump(result)
        message = dict(result.get("message") or {})
        if data.get("remove_think") and isinstance(message.get("content"), str):
            message["content"] = _THINK_RE.sub("", message["content"])
        out: dict[str, Any] = {"message": chat_to_sdk_message(message)}
        if result.get("usage") is not None:
            out["usage"] = result["usage"]
        return out

    async def _invoke_llm_stream(self, data: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Our stream (``{"delta"}``… then ``{"message", "usage"}``) → SDK frames.

        Text deltas become ``{"chunk": MessageChunk}`` (content = the new text);
        the final message becomes one ``is_final`` chunk carrying the complete
        tool calls (and ``all_content``), with ``usage`` in the same frame. Its
        ``content`` is left empty when deltas already carried the text, so a
        runner that concatenates chunk contents gets the text exactly once.
        """
        model_id, messages, kwargs = self._llm_args(data)
        stream = self.api.invoke_llm_stream(model_id, messages, **kwargs)
        sequence = 0
        streamed_text = False
        try:
            async for item in stream:
                if not isinstance(item, dict):
                    continue
                delta = item.get("delta")
                if isinstance(delta, dict) and delta.get("content") not in (None, "", []):
                    streamed_text = True
                    sequence += 1
                    yield {"chunk": {"role": delta.get("role") or "assistant",
                                     "content": delta["content"], "msg_sequence": sequence}}
                frame: dict[str, Any] = {}
                if isinstance(item.get("message"), dict):
                    final = chat_to_sdk_message(item["message"])
                    sequence += 1
                    chunk: dict[str, Any] = {"role": final["role"], "is_final": True,
                                             "msg_sequence": sequence,
                                             "content": None if streamed_text else final.get("content")}
                    text = _text_of(final.get("content"))
                    if text:
                        chunk["all_content"] = text
                    if final.get("tool_calls"):
                        chunk["tool_calls"] = final["tool_calls"]
                    frame["chunk"] = chunk
                if item.get("usage") is not None:
                    frame["usage"] = item["usage"]
                if frame:
                    yield frame
        finally:
            close = getattr(stream, "aclose", None)
            if close is not None:
                await close()

    async def _count_tokens(self, data: dict[str, Any]) -> dict[str, Any]:
        model_id, messages, kwargs = self._llm_args(data)
        counted = _dump(await self.api.count_tokens(model_id, messages, tools=kwargs.get("tools")))
        return {"tokens": int(counted["tokens"]), "method": counted.get("method")}

    async def _invoke_embedding(self, data: dict[str, Any]) -> dict[str, Any]:
        texts = _opt_list(data, "texts")
        if not texts or not all(isinstance(t, str) for t in texts):
            raise _invalid("texts must be a non-empty list of strings", field="texts")
        result = _dump(await self.api.invoke_embedding(_req_str(data, "embedding_model_uuid"), texts))
        return {"vectors": result["vectors"]}

    async def _invoke_rerank(self, data: dict[str, Any]) -> dict[str, Any]:
        documents = _opt_list(data, "documents")
        if not all(isinstance(d, str) for d in documents):
            raise _invalid("documents must be strings", field="documents")
        kwargs: dict[str, Any] = {}
        if _opt_dict(data, "extra_args"):
            kwargs["params"] = dict(data["extra_args"])
        results = await self.api.invoke_rerank(_req_str(data, "rerank_model_uuid"), _req_str(data, "query"),
                                               documents, top_n=_opt_int(data, "top_k", None), **kwargs)
        return {"results": list(results)}

    # -- tools & knowledge ------------------------------------------------------
    async def _get_tool_detail(self, data: dict[str, Any]) -> dict[str, Any]:
        return {"tool": await self.api.get_tool_detail(_req_str(data, "tool_name"))}

    async def _call_tool(self, data: dict[str, Any]) -> dict[str, Any]:
        name, parameters = _req_str(data, "tool_name"), _opt_dict(data, "parameters")
        if name == EVENT_REPLY_TOOL:  # ctx.reply(text): a message into the run's own chat
            if "message" in parameters:
                text, lost = chain_text(parameters["message"])
            else:
                text, lost = _req_str(parameters, "text"), []
            return {"result": await self._send(text, None, lost)}
        return {"result": await self.api.call_tool(name, parameters)}

    # -- explicit messages (RunnerAPI.message_send) -------------------------------
    async def _call_platform_api(self, data: dict[str, Any]) -> dict[str, Any]:
        action = _req_str(data, "action")
        params = _opt_dict(data, "params")
        if action != "send_message":
            raise RunnerHostError(ErrorCode.INVALID_ARGUMENT,
                                  f"platform action {action!r} is not supported: RunnerHost sends messages only",
                                  details={"reason": "unsupported_action", "platform_action": action})
        if data.get("context_tool") == EVENT_REPLY_TOOL:  # reply_message(chain, quote_origin)
            text, lost = chain_text(params.get("message"))
            return {"result": await self._send(text, None, lost)}
        return {"result": await self._send_to(_opt_str(data, "bot_uuid"), params.get("target_type"),
                                              params.get("target_id"), params.get("message"))}

    async def _send_message(self, data: dict[str, Any]) -> dict[str, Any]:
        return {"result": await self._send_to(_opt_str(data, "bot_uuid"), data.get("target_type"),
                                              data.get("target_id"), data.get("message_chain"))}

    async def _reply_message(self, data: dict[str, Any]) -> dict[str, Any]:
        text, lost = chain_text(data.get("message_chain"))
        return {"result": await self._send(text, None, lost)}

    async def _reply_stream(self, data: dict[str, Any]) -> dict[str, Any]:
        """``ctx.reply_stream()``: updates are buffered here (each replaces the text); ``finish``
        sends the final text once, keyed by the stream id; ``abort`` drops it."""
        stream_id, operation = _req_str(data, "stream_id"), _req_str(data, "operation")
        text = data.get("text")
        if text is not None and not isinstance(text, str):
            raise _invalid("text must be a string", field="text")
        out: dict[str, Any] = {"stream_id": stream_id, "operation": operation}
        if operation == "update":
            if stream_id not in self._reply_streams and len(self._reply_streams) >= MAX_REPLY_STREAMS:
                raise _invalid(f"at most {MAX_REPLY_STREAMS} reply streams may be open at once")
            self._reply_streams[stream_id] = text or ""
            return {"result": {**out, "success": True, "status": "buffered"}}
        if operation == "abort":
            self._reply_streams.pop(stream_id, None)
            return {"result": {**out, "success": True, "status": "aborted"}}
        if operation != "finish":
            raise _invalid("operation must be 'update', 'finish' or 'abort'", field="operation")
        final = text if text is not None else self._reply_streams.get(stream_id, "")
        self._reply_streams.pop(stream_id, None)
        if not final:
            return {"result": {**out, "success": True, "status": "empty"}}
        sent = await self.api.message_send(final, key=f"reply_stream:{stream_id}")
        return {"result": {**out, **sent_result(sent)}}

    async def _send(self, text: str, target: dict[str, Any] | None, lost: list[str]) -> dict[str, Any]:
        if not text:
            raise _invalid("the message has no text to send", field="message_chain", not_sent=lost)
        return sent_result(await self.api.message_send(text, target=target), lost)

    async def _send_to(self, bot_uuid: str | None, target_type: Any, target_id: Any, chain: Any) -> dict[str, Any]:
        """LangBot's ``send_message(bot_uuid, target_type, target_id, chain)``: allowed into the
        run's own chat only. ``target_id`` naming that chat becomes its address; anything else is
        passed on as is, for the host to refuse (``unauthorized``)."""
        if target_id is None or isinstance(target_id, (bool, dict, list)):
            raise _invalid("target_id is required", field="target_id")
        text, lost = chain_text(chain)
        if bot_uuid and bot_uuid not in (self.bot_id, self.reply_target.get("connection")):
            raise RunnerHostError(ErrorCode.UNAUTHORIZED, "a run may only send through the bot its event came to",
                                  details={"bot_uuid": bot_uuid})
        own = next(({key: self.reply_target[key]} for key in CHAT_ID_KEYS
                    if key in self.reply_target and str(self.reply_target[key]) == str(target_id)), None)
        return await self._send(text, own or {"target_type": target_type, "target_id": target_id}, lost)

    async def _retrieve_knowledge_base(self, data: dict[str, Any]) -> dict[str, Any]:
        filters = _opt_dict(data, "filters")
        kwargs = {"filters": filters} if filters else {}
        results = await self.api.retrieve_knowledge(_req_str(data, "kb_id"), _req_str(data, "query_text"),
                                                    _opt_int(data, "top_k", 5), **kwargs)
        return {"results": list(results)}

    # -- history & events ---------------------------------------------------------
    async def _history_page(self, data: dict[str, Any]) -> dict[str, Any]:
        direction = data.get("direction") or "backward"
        if direction not in ("backward", "forward"):
            raise _invalid("direction must be 'backward' or 'forward'", field="direction")
        page = _dump(await self.api.history_page(
            _opt_str(data, "conversation_id"),
            before_cursor=_opt_str(data, "before_cursor"), after_cursor=_opt_str(data, "after_cursor"),
            limit=_opt_int(data, "limit", 50), direction=direction))
        if not data.get("include_attachments"):
            for item in page.get("items") or []:
                if isinstance(item, dict):
                    item["attachment_refs"] = []
        return page

    async def _history_search(self, data: dict[str, Any]) -> dict[str, Any]:
        return _dump(await self.api.history_search(_req_str(data, "query"), _opt_dict(data, "filters") or None,
                                                   _opt_int(data, "top_k", 10)))

    async def _event_get(self, data: dict[str, Any]) -> dict[str, Any]:
        return _dump(await self.api.event_get(_req_str(data, "event_id")))

    async def _event_page(self, data: dict[str, Any]) -> dict[str, Any]:
        types = _opt_list(data, "event_types") or None
        return _dump(await self.api.event_page(
            _opt_str(data, "conversation_id"), event_types=types,
            before_cursor=_opt_str(data, "before_cursor"), limit=_opt_int(data, "limit", 50)))

    async def _steering_pull(self, data: dict[str, Any]) -> dict[str, Any]:
        mode = data.get("mode") or "all"
        if mode in ("one", "one-at-a-time", "one_at_a_time"):
            mode = "one-at-a-time"
        elif mode != "all":
            raise _invalid("mode must be 'all' or 'one-at-a-time'", field="mode")
        return _dump(await self.api.steering_pull(mode, _opt_int(data, "limit", None)))

    # -- state (LangBot shapes: {"value"}, {"success"}, {"keys", "has_more"}) ----------
    async def _state_get(self, data: dict[str, Any]) -> dict[str, Any]:
        scope, key = _req_str(data, "scope"), _req_str(data, "key")
        try:
            entry = _dump(await self.api.state_get(scope, key))
        except RunnerHostError as exc:
            if exc.code is ErrorCode.NOT_FOUND:
                return {"value": None, "key": key, "exists": False}
            raise
        return {"value": entry.get("value"), "key": entry.get("key", key),
                "updated_at": entry.get("updated_at"), "exists": True}

    async def _state_set(self, data: dict[str, Any]) -> dict[str, Any]:
        if "value" not in data:
            raise _invalid("value is required", field="value")
        entry = _dump(await self.api.state_set(_req_str(data, "scope"), _req_str(data, "key"), data["value"]))
        return {"success": True, "key": entry.get("key"), "updated_at": entry.get("updated_at")}

    async def _state_delete(self, data: dict[str, Any]) -> dict[str, Any]:
        return {"success": bool(await self.api.state_delete(_req_str(data, "scope"), _req_str(data, "key")))}

    async def _state_list(self, data: dict[str, Any]) -> dict[str, Any]:
        listing = _dump(await self.api.state_list(_req_str(data, "scope"), _opt_str(data, "prefix") or "",
                                                  _opt_int(data, "limit", 100)))
        items = [i for i in listing.get("items") or [] if isinstance(i, dict)]
        return {"keys": [i.get("key") for i in items], "has_more": bool(listing.get("has_more")),
                "items": items}

    # -- plugin / workspace storage (SDK values are bytes, base64 on the wire) -------
    def _storage_action(self, area: str, op: str) -> Action:
        async def action(data: dict[str, Any]) -> dict[str, Any]:
            if op == "keys":
                return {"keys": list(await self.api.storage_keys(area, _opt_str(data, "prefix") or ""))}
            key = _req_str(data, "key")
            if op == "set":
                encoded = data.get("value_base64")
                if not isinstance(encoded, str):
                    raise _invalid("value_base64 is required", field="value_base64")
                try:
                    base64.b64decode(encoded, validate=True)
                except (binascii.Error, ValueError):
                    raise _invalid("value_base64 is not valid base64", field="value_base64") from None
                await self.api.storage_set(area, key, {"encoding": "base64", "data": encoded})
                return {"success": True}
            if op == "delete":
                return {"success": bool(await self.api.storage_delete(area, key))}
            value = await self.api.storage_get(area, key)
            if value is None:
                raise RunnerHostError(ErrorCode.NOT_FOUND, f"{area} storage key {key!r} not found")
            return {"value_base64": storage_value_to_base64(value)}
        return action

    # -- run ledger -----------------------------------------------------------------
    async def _run_get(self, data: dict[str, Any]) -> dict[str, Any]:
        return _dump(await self.api.run_get(_opt_str(data, "target_run_id")))

    async def _run_list(self, data: dict[str, Any]) -> dict[str, Any]:
        statuses = _opt_list(data, "statuses") or None
        return _dump(await self.api.run_list(_opt_str(data, "conversation_id"), statuses=statuses,
                                             before_cursor=_opt_str(data, "before_cursor"),
                                             limit=_opt_int(data, "limit", 50)))

    async def _run_events_page(self, data: dict[str, Any]) -> dict[str, Any]:
        direction = data.get("direction") or "forward"
        if direction not in ("forward", "backward"):
            raise _invalid("direction must be 'forward' or 'backward'", field="direction")
        kwargs: dict[str, Any] = {}
        if direction == "backward" or data.get("before_cursor"):
            kwargs = {"before_cursor": _opt_str(data, "before_cursor"), "direction": direction}
        return _dump(await self.api.run_events_page(_opt_str(data, "target_run_id"),
                                                    after_cursor=_opt_str(data, "after_cursor"),
                                                    limit=_opt_int(data, "limit", 50), **kwargs))

    async def _run_cancel(self, data: dict[str, Any]) -> dict[str, Any]:
        target = _opt_str(data, "target_run_id") or self.run_id
        if not target:
            raise _invalid("target_run_id is required", field="target_run_id")
        return _dump(await self.api.run_cancel(target, _opt_str(data, "reason")))

    # -- artifacts (forward compatibility) ------------------------------------------
    async def _artifact_metadata(self, data: dict[str, Any]) -> dict[str, Any]:
        return _dump(await self.api.artifact_metadata(_req_str(data, "artifact_id")))

    async def _artifact_read(self, data: dict[str, Any]) -> dict[str, Any]:
        artifact_id = _req_str(data, "artifact_id")
        offset = _opt_int(data, "offset", 0) or 0
        limit = _opt_int(data, "limit", None)
        if limit is None and offset == 0:
            result = _dump(await self.api.artifact_read(artifact_id))
        else:
            result = _dump(await self.api.artifact_read_range(artifact_id, offset, limit or (1 << 20)))
        result.setdefault("has_more", not result.get("eof", True))
        return result

    # -- host info --------------------------------------------------------------------
    async def _get_langbot_version(self, data: dict[str, Any]) -> dict[str, Any]:
        return version_info(self.host_version)


def storage_value_to_base64(value: Any) -> str:
    """Stored value → base64 bytes for the SDK.

    The adapter stores SDK bytes as ``{"encoding": "base64", "data": ...}``; a
    value written by a non-SDK runner comes back as its UTF-8 text (strings)
    or its JSON encoding (anything else).
    """
    if isinstance(value, dict) and value.get("encoding") == "base64" and isinstance(value.get("data"), str):
        return value["data"]
    raw = value.encode() if isinstance(value, str) else json.dumps(value, separators=(",", ":")).encode()
    return base64.b64encode(raw).decode()


def version_info(host_version: str) -> dict[str, Any]:
    return {"version": host_version, "api_features": list(API_FEATURES)}


def _host_version() -> str:
    try:
        from importlib.metadata import version
        return f"{HOST_NAME}/{version('runnerhost')}"
    except Exception:  # pragma: no cover - not installed as a distribution
        return f"{HOST_NAME}/0"


# -- routing for a shared SDK runner instance --------------------------------------
class HostRuntimeHandler:
    """The handler bound (once) to a shared SDK runner; routes each action to its run.

    Run-scoped SDK calls carry ``run_id``; plugin-level helpers that the SDK
    routes through the active invocation are resolved with the SDK's own
    task-local invocation. A ``run_id`` with no active run here is refused as
    ``unauthorized`` (a finished run may not call the host).
    """

    def __init__(self, *, host_version: str | None = None):
        self.host_version = host_version or _host_version()
        self._runs: dict[str, HostActionHandler] = {}

    @contextlib.contextmanager
    def attach(self, handler: HostActionHandler):
        run_id = handler.run_id
        if not run_id:
            raise ValueError("a run handler needs a run_id")
        if run_id in self._runs:
            raise RuntimeError(f"run {run_id} is already active on this runner")
        self._runs[run_id] = handler
        try:
            yield handler
        finally:
            if self._runs.get(run_id) is handler:
                del self._runs[run_id]

    @property
    def active_runs(self) -> list[str]:
        return list(self._runs)

    def _resolve(self, name: str, data: dict[str, Any]) -> HostActionHandler:
        run_id = data.get("run_id")
        if run_id is None:
            from langbot_plugin.api.proxies.invocation import current_api
            try:
                run_id = getattr(current_api(self), "run_id", None)
            except RuntimeError:  # the SDK invocation has ended
                run_id = None
        if run_id is None:
            raise api_error(ErrorCode.UNAUTHORIZED, f"action {name!r} was called outside an active run",
                            details={"action": name})
        handler = self._runs.get(run_id)
        if handler is None:
            raise api_error(ErrorCode.UNAUTHORIZED, "the run is not active", details={"action": name})
        return handler

    async def call_action(self, action: Any, data: dict[str, Any] | None = None,
                          timeout: float | None = _DEFAULT_TIMEOUT, **kwargs: Any) -> dict[str, Any]:
        name = action_name(action)
        if name == GET_LANGBOT_VERSION:
            return version_info(self.host_version)
        if name not in UNARY_ACTIONS:
            raise unsupported_action(name)
        payload = dict(data or {})
        handler = self._resolve(name, payload)
        payload.setdefault("run_id", handler.run_id)
        return await handler.call_action(name, payload, timeout, **kwargs)

    async def call_action_generator(self, action: Any, data: dict[str, Any] | None = None,
                                    timeout: float | None = _DEFAULT_TIMEOUT,
                                    **kwargs: Any) -> AsyncIterator[dict[str, Any]]:
        name = action_name(action)
        if name not in STREAM_ACTIONS:
            raise unsupported_action(name, streaming=True)
        payload = dict(data or {})
        handler = self._resolve(name, payload)
        payload.setdefault("run_id", handler.run_id)
        stream = handler.call_action_generator(name, payload, timeout, **kwargs)
        try:
            async for item in stream:
                yield item
        finally:
            await stream.aclose()
