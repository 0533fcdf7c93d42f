"""Harness gateway: an MCP server (streamable HTTP, stateless, JSON responses) at ``/mcp``.

External harnesses (Claude Code, Codex, …) reach the runner-facing API
through it. Each call is authorized by the run's capability token, sent as
``Authorization: Bearer <token>``: issued at run start (``ctx.runtime.metadata``),
dead at run end. A missing, wrong, expired or finished run's token makes the
tool return an error (``isError``) whose text starts with ``unauthorized``.
Token values are never logged or echoed.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
from mcp.server.transport_security import TransportSecuritySettings

from actors import metrics
from protocol.errors import RunnerHostError

GATEWAY_METHODS = ("history_page", "history_search", "retrieve_knowledge", "call_tool",
                   "state_get", "state_set", "steering_pull")


def bearer_token(headers: Mapping[str, str] | None) -> str:
    if not headers:
        return ""
    value = headers.get("authorization") or headers.get("Authorization") or ""
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def create_gateway(get_host: Callable[[], Any]) -> MCPServer:
    mcp = MCPServer(
        "runnerhost-gateway",
        instructions=("RunnerHost runner API for the run that launched you. Authenticate every request with "
                      "'Authorization: Bearer <capability token>' from the run context."),
        log_level="WARNING",
    )

    async def forward(ctx: Context, method: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        token = bearer_token(ctx.headers)
        try:
            result = await get_host().gateway_call(token, method, {k: v for k, v in kwargs.items() if v is not None})
        except RunnerHostError as exc:
            metrics.gateway_call(method, exc.code.value)
            raise ToolError(f"{exc.code.value}: {exc.message}") from None
        except Exception:
            metrics.gateway_call(method, "runtime_error")
            raise
        metrics.gateway_call(method, "ok")
        if isinstance(result, dict):
            return result
        return {"result": result}

    @mcp.tool(description="Page the transcript of the run's own conversation (limit ≤ 100; opaque cursors).")
    async def history_page(ctx: Context, conversation_id: str | None = None, before_cursor: str | None = None,
                           after_cursor: str | None = None, limit: int = 50,
                           direction: str = "backward") -> dict[str, Any]:
        return await forward(ctx, "history_page", dict(conversation_id=conversation_id, before_cursor=before_cursor,
                                                       after_cursor=after_cursor, limit=limit, direction=direction))

    @mcp.tool(description="Full-text search over the run's conversation transcript.")
    async def history_search(ctx: Context, query: str, filters: dict[str, Any] | None = None,
                             top_k: int = 10) -> dict[str, Any]:
        return await forward(ctx, "history_search", dict(query=query, filters=filters, top_k=top_k))

    @mcp.tool(description="Retrieve from a knowledge base granted to the run.")
    async def retrieve_knowledge(ctx: Context, kb_id: str, query: str, top_k: int = 5) -> dict[str, Any]:
        return await forward(ctx, "retrieve_knowledge", dict(kb_id=kb_id, query=query, top_k=top_k))

    @mcp.tool(description="Call a host tool granted to the run.")
    async def call_tool(ctx: Context, tool_name: str, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
        return await forward(ctx, "call_tool", dict(tool_name=tool_name, parameters=parameters or {}))

    @mcp.tool(description="Read a host-owned state value (scope: conversation | actor | subject | runner).")
    async def state_get(ctx: Context, scope: str, key: str) -> dict[str, Any]:
        return await forward(ctx, "state_get", dict(scope=scope, key=key))

    @mcp.tool(description="Write a host-owned JSON state value (≤ 256 KiB).")
    async def state_set(ctx: Context, scope: str, key: str, value: Any = None) -> dict[str, Any]:
        return await forward(ctx, "state_set", {"scope": scope, "key": key, "value": value})

    @mcp.tool(description="Pull messages steered into the active run (mode: all | one-at-a-time).")
    async def steering_pull(ctx: Context, mode: str = "all", limit: int | None = None) -> dict[str, Any]:
        return await forward(ctx, "steering_pull", dict(mode=mode, limit=limit))

    return mcp


def gateway_asgi(mcp: MCPServer, *, bind_host: str, max_body_bytes: int) -> StreamableHTTPASGIApp:
    """Build the streamable-HTTP transport; the caller runs ``mcp.session_manager.run()`` in its lifespan."""
    security = None
    if bind_host not in ("127.0.0.1", "localhost", "::1"):
        # Capability tokens authorize every call; Host-header pinning would only break remote harnesses.
        security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    mcp.streamable_http_app(streamable_http_path="/mcp", json_response=True, stateless_http=True,
                            max_request_body_size=max_body_bytes, transport_security=security,
                            host=bind_host)
    return StreamableHTTPASGIApp(mcp.session_manager)
