"""Host tools behind ``get_tool_detail`` / ``call_tool`` (SPEC §6).

A :class:`ToolProvider` lists tools (``tool_name``, ``description``,
``parameters`` as JSON schema) and calls them. :class:`BuiltinTools` ships a
few useful in-process tools; :class:`McpToolProvider` exposes the tools of one
configured MCP server (stdio subprocess or streamable HTTP) through the ``mcp``
SDK client. :class:`ToolRegistry` merges providers, validates parameters
against the schema and maps every failure onto the one error model.
"""
from __future__ import annotations

import abc
import ast
import asyncio
import json
import math
import operator
import os
import sys
from contextlib import AsyncExitStack
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from protocol.errors import ErrorCode, RunnerHostError
from protocol.logs import get_logger
from protocol.redact import redact

from .. import constants

log = get_logger(__name__)

_MAX_ERROR_TEXT = 500


def _tool_error(code: ErrorCode, message: str, *, retryable: bool = False, **details: Any) -> RunnerHostError:
    return RunnerHostError(code, message, retryable=retryable, details=details)


class ToolProvider(abc.ABC):
    """A source of tools. ``list_tools`` items: ``{"tool_name", "description", "parameters"}``."""

    name: str = "provider"

    @abc.abstractmethod
    async def list_tools(self) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    async def call(self, tool_name: str, parameters: dict[str, Any]) -> dict[str, Any]:
        """Run a tool; raise RunnerHostError (invalid_argument / not_found / runtime_error)."""

    async def aclose(self) -> None:
        """Release connections/subprocesses."""


# -- builtin tools --------------------------------------------------------------

_BIN_OPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY_OPS: dict[type, Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCS: dict[str, Callable[..., Any]] = {
    "abs": abs, "round": round, "min": min, "max": max,
    "sqrt": math.sqrt, "floor": math.floor, "ceil": math.ceil, "log": math.log,
    "log10": math.log10, "exp": math.exp, "sin": math.sin, "cos": math.cos, "tan": math.tan,
}
_CONSTS = {"pi": math.pi, "e": math.e, "tau": math.tau}
_MAX_EXPR_CHARS = 500
_MAX_INT_BITS = 4096
_MAX_NODES = 200


class _Calc:
    """Arithmetic over a whitelisted AST. No names, attributes, subscripts or eval."""

    def __init__(self) -> None:
        self.nodes = 0

    def run(self, expression: str) -> int | float:
        if len(expression) > _MAX_EXPR_CHARS:
            raise ValueError(f"expression longer than {_MAX_EXPR_CHARS} characters")
        try:
            tree = ast.parse(expression.strip(), mode="eval")
        except SyntaxError:
            raise ValueError("not a valid arithmetic expression") from None
        return self._eval(tree.body)

    def _check(self, value: Any) -> int | float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("only numbers are supported")
        if isinstance(value, int) and value.bit_length() > _MAX_INT_BITS:
            raise ValueError("result too large")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("result is not finite")
        return value

    def _eval(self, node: ast.AST) -> int | float:
        self.nodes += 1
        if self.nodes > _MAX_NODES:
            raise ValueError("expression too complex")
        if isinstance(node, ast.Constant):
            return self._check(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _BIN_OPS:
            left, right = self._eval(node.left), self._eval(node.right)
            if isinstance(node.op, ast.Pow):
                if abs(right) > 1000:
                    raise ValueError("exponent too large")
                if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
                    if right * math.log2(abs(left)) > _MAX_INT_BITS:
                        raise ValueError("result too large")
            if isinstance(node.op, ast.Mult) and isinstance(left, int) and isinstance(right, int):
                if left.bit_length() + right.bit_length() > _MAX_INT_BITS + 1:
                    raise ValueError("result too large")
            return self._check(_BIN_OPS[type(node.op)](left, right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY_OPS:
            return self._check(_UNARY_OPS[type(node.op)](self._eval(node.operand)))
        if isinstance(node, ast.Name) and node.id in _CONSTS:
            return _CONSTS[node.id]
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS
                and not node.keywords and len(node.args) <= 10):
            args = [self._eval(a) for a in node.args]
            return self._check(_FUNCS[node.func.id](*args))
        raise ValueError(f"unsupported syntax: {type(node).__name__}")


def safe_calculate(expression: str) -> int | float:
    """Evaluate arithmetic safely (ValueError/ZeroDivisionError/OverflowError on bad input)."""
    return _Calc().run(expression)


class BuiltinTools(ToolProvider):
    """``current_time`` (UTC ISO), ``calculator`` (safe arithmetic), ``echo_json``."""

    TOOLS: dict[str, dict[str, Any]] = {
        "current_time": {
            "description": "Current date and time in UTC (ISO 8601) and as a Unix timestamp.",
            "parameters": {"type": "object", "properties": {}, "additionalProperties": False},
        },
        "calculator": {
            "description": ("Evaluate an arithmetic expression: + - * / // % **, parentheses, "
                            "pi, e, and abs round min max sqrt floor ceil log log10 exp sin cos tan."),
            "parameters": {
                "type": "object",
                "properties": {"expression": {"type": "string", "description": "e.g. (2 + 3) * 7 / 2",
                                              "maxLength": _MAX_EXPR_CHARS}},
                "required": ["expression"],
                "additionalProperties": False,
            },
        },
        "echo_json": {
            "description": "Return the given arguments unchanged as JSON (for testing tool plumbing).",
            "parameters": {"type": "object", "additionalProperties": True},
        },
    }

    def __init__(self, enabled: Iterable[str] | None = None, *, name: str = "builtin") -> None:
        self.name = name
        wanted = set(enabled) if enabled is not None else set(self.TOOLS)
        unknown = wanted - set(self.TOOLS)
        if unknown:
            raise ValueError(f"unknown builtin tools: {sorted(unknown)}")
        self._enabled = [t for t in self.TOOLS if t in wanted]

    def __repr__(self) -> str:
        return f"BuiltinTools({self._enabled!r})"

    async def list_tools(self) -> list[dict[str, Any]]:
        return [{"tool_name": t, **json.loads(json.dumps(self.TOOLS[t]))} for t in self._enabled]

    async def call(self, tool_name: str, parameters: dict[str, Any]) -> dict[str, Any]:
        if tool_name not in self._enabled:
            raise _tool_error(ErrorCode.NOT_FOUND, f"tool {tool_name!r} not found", tool_name=tool_name)
        if tool_name == "current_time":
            now = datetime.now(timezone.utc)
            return {"utc": now.isoformat().replace("+00:00", "Z"), "unix": int(now.timestamp())}
        if tool_name == "calculator":
            expression = parameters.get("expression")
            if not isinstance(expression, str) or not expression.strip():
                raise _tool_error(ErrorCode.INVALID_ARGUMENT, "calculator needs a non-empty 'expression'")
            try:
                result = safe_calculate(expression)
            except ZeroDivisionError:
                raise _tool_error(ErrorCode.INVALID_ARGUMENT, "division by zero") from None
            except (ValueError, OverflowError, TypeError) as exc:
                raise _tool_error(ErrorCode.INVALID_ARGUMENT, f"cannot evaluate: {exc}") from None
            return {"expression": expression, "result": result}
        return {"echo": parameters}  # echo_json


# -- MCP --------------------------------------------------------------------------

class McpServerConfig(BaseModel):
    """One MCP server whose tools the host exposes.

    Secrets stay out of the config: ``env_from`` / ``headers_from_env`` name host
    environment variables whose values are passed to the child process / sent
    as HTTP headers. Literal ``env`` and ``headers`` values are hidden from reprs.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64)
    transport: Literal["stdio", "streamable_http"] = "stdio"
    # stdio
    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict, repr=False)
    env_from: dict[str, str] = Field(default_factory=dict, description="child var -> host env var name")
    cwd: str | None = None
    # streamable HTTP
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict, repr=False)
    headers_from_env: dict[str, str] = Field(default_factory=dict, description="header -> host env var name")
    # behaviour
    timeout_s: float = Field(default=30.0, gt=0)
    connect_timeout_s: float = Field(default=30.0, gt=0)
    tool_prefix: str = Field(default="", description="prepended to every tool name this server exposes")
    include_tools: list[str] | None = None
    exclude_tools: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_transport(self) -> "McpServerConfig":
        if self.transport == "stdio" and not self.command:
            raise ValueError("stdio MCP server needs 'command'")
        if self.transport == "streamable_http" and not self.url:
            raise ValueError("streamable_http MCP server needs 'url'")
        return self


class McpToolProvider(ToolProvider):
    """Tools of one MCP server, over one long-lived client session.

    The session is opened lazily by a background task that owns it (anyio
    scopes must be exited by the task that entered them); calls from any task
    of the same event loop go through it. If the server dies, the next call
    reconnects once.
    """

    def __init__(self, config: McpServerConfig | dict[str, Any], *, errlog: Any = None) -> None:
        self.config = config if isinstance(config, McpServerConfig) else McpServerConfig.model_validate(config)
        self.name = f"mcp:{self.config.name}"
        self._errlog = errlog
        self._client: Any = None
        self._task: asyncio.Task | None = None
        self._stop: asyncio.Event | None = None
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tools: dict[str, dict[str, Any]] | None = None  # exposed name -> spec (+ "_remote")

    def __repr__(self) -> str:
        return f"McpToolProvider(name={self.config.name!r}, transport={self.config.transport!r})"

    # -- secrets ----------------------------------------------------------------
    def _secret_values(self) -> list[str]:
        values = [v for v in self.config.env.values() if v] + [v for v in self.config.headers.values() if v]
        for var in list(self.config.env_from.values()) + list(self.config.headers_from_env.values()):
            if os.environ.get(var):
                values.append(os.environ[var])
        return values

    def _redact(self, text: str) -> str:
        return redact(text, tuple(self._secret_values()))[:_MAX_ERROR_TEXT]

    # -- connection ---------------------------------------------------------------
    def _transport(self, stack: AsyncExitStack) -> Any:
        cfg = self.config
        if cfg.transport == "stdio":
            from mcp.client.stdio import StdioServerParameters, stdio_client

            env = dict(cfg.env)
            for child_var, host_var in cfg.env_from.items():
                if host_var in os.environ:
                    env[child_var] = os.environ[host_var]
            params = StdioServerParameters(command=cfg.command, args=list(cfg.args), env=env or None, cwd=cfg.cwd)
            return stdio_client(params, errlog=self._errlog or sys.stderr)
        from mcp.client.streamable_http import streamable_http_client
        from mcp.shared._httpx_utils import create_mcp_http_client

        headers = dict(cfg.headers)
        for header, host_var in cfg.headers_from_env.items():
            if host_var in os.environ:
                headers[header] = os.environ[host_var]
        http_client = create_mcp_http_client(headers=headers or None)
        return _OwnedHttpTransport(streamable_http_client(cfg.url, http_client=http_client), http_client)

    async def _own_session(self, ready: asyncio.Future, stop: asyncio.Event) -> None:
        from mcp import Client

        try:
            async with AsyncExitStack() as stack:
                client = Client(self._transport(stack), read_timeout_seconds=self.config.timeout_s)
                await stack.enter_async_context(client)
                self._client = client
                if not ready.done():
                    ready.set_result(client)
                await stop.wait()
        except BaseException as exc:  # noqa: BLE001 — reported to the waiting caller
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else RuntimeError(type(exc).__name__))
            elif not isinstance(exc, asyncio.CancelledError):
                log.warning("MCP server %s session ended: %s", self.config.name, type(exc).__name__)
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            self._client = None

    async def _ensure(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._lock, self._loop, self._task, self._client = asyncio.Lock(), loop, None, None
        assert self._lock is not None
        async with self._lock:
            if self._client is not None and self._task is not None and not self._task.done():
                return self._client
            ready: asyncio.Future = loop.create_future()
            self._stop = asyncio.Event()
            self._task = loop.create_task(self._own_session(ready, self._stop),
                                          name=f"mcp-session-{self.config.name}")
            try:
                return await asyncio.wait_for(asyncio.shield(ready), self.config.connect_timeout_s)
            except asyncio.TimeoutError:
                await self._shutdown()
                raise _tool_error(ErrorCode.RUNTIME_ERROR,
                                  f"MCP server {self.config.name!r} did not start within "
                                  f"{self.config.connect_timeout_s:g}s", retryable=True) from None
            except Exception as exc:
                await self._shutdown()
                raise _tool_error(ErrorCode.RUNTIME_ERROR,
                                  f"MCP server {self.config.name!r} unavailable: {type(exc).__name__}: "
                                  f"{self._redact(_exc_text(exc))}", retryable=True) from None

    async def _shutdown(self) -> None:
        task, self._task = self._task, None
        if self._stop is not None:
            self._stop.set()
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(task, constants.MCP_SHUTDOWN_TIMEOUT_S)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                task.cancel()
            except Exception:  # noqa: BLE001
                pass
        self._client = None

    async def _live_client(self) -> Any:
        """The session, reconnecting first when it is known to be closed (server exited while idle)."""
        client = await self._ensure()
        if _session_closed(client):
            await self._shutdown()
            client = await self._ensure()
        return client

    async def start(self) -> None:
        """Connect now instead of on first use."""
        await self._ensure()

    async def aclose(self) -> None:
        if self._loop is not None and self._loop is asyncio.get_running_loop():
            await self._shutdown()
        self._tools = None

    # -- tools ----------------------------------------------------------------------
    def _wanted(self, remote: str) -> bool:
        cfg = self.config
        if cfg.include_tools is not None and remote not in cfg.include_tools:
            return False
        return remote not in cfg.exclude_tools

    async def list_tools(self, refresh: bool = False) -> list[dict[str, Any]]:
        if self._tools is None or refresh:
            client = await self._live_client()
            tools: dict[str, dict[str, Any]] = {}
            cursor = None
            for _ in range(100):
                try:
                    page = await client.list_tools(cursor=cursor, cache_mode="refresh")
                except Exception as exc:  # noqa: BLE001
                    if _connection_closed(exc):
                        await self._shutdown()
                    raise self._map_exception("tools/list", exc) from None
                for tool in page.tools:
                    if not self._wanted(tool.name):
                        continue
                    exposed = f"{self.config.tool_prefix}{tool.name}"
                    tools[exposed] = {
                        "tool_name": exposed,
                        "description": tool.description or tool.title or "",
                        "parameters": tool.input_schema or {"type": "object", "properties": {}},
                        "_remote": tool.name,
                    }
                cursor = page.next_cursor
                if not cursor:
                    break
            self._tools = tools
        return [{k: v for k, v in spec.items() if k != "_remote"} for spec in self._tools.values()]

    async def call(self, tool_name: str, parameters: dict[str, Any]) -> dict[str, Any]:
        if self._tools is None or tool_name not in self._tools:
            await self.list_tools(refresh=True)
        spec = (self._tools or {}).get(tool_name)
        if spec is None:
            raise _tool_error(ErrorCode.NOT_FOUND, f"tool {tool_name!r} not found", tool_name=tool_name)
        client = await self._live_client()
        try:
            result = await client.call_tool(spec["_remote"], parameters)
        except Exception as exc:  # noqa: BLE001
            if _connection_closed(exc):
                # The call may or may not have run: never resend it; the next call reconnects.
                await self._shutdown()
            raise self._map_exception(tool_name, exc) from None
        return self._convert(tool_name, result)

    def _convert(self, tool_name: str, result: Any) -> dict[str, Any]:
        texts, other = [], []
        for part in result.content or []:
            if getattr(part, "type", None) == "text":
                texts.append(part.text)
            else:
                other.append(part.model_dump(mode="json", exclude_none=True))
        text = "\n".join(texts)
        if result.is_error:
            raise _tool_error(ErrorCode.RUNTIME_ERROR,
                              f"tool {tool_name!r} failed: {self._redact(text) or 'error'}", tool_name=tool_name)
        out: dict[str, Any] = {"text": text}
        if result.structured_content is not None:
            out["structured"] = result.structured_content
        if other:
            out["content"] = other
        return out

    def _map_exception(self, what: str, exc: Exception) -> RunnerHostError:
        from mcp.shared.exceptions import MCPError

        if isinstance(exc, RunnerHostError):
            return exc
        if isinstance(exc, MCPError):
            code = getattr(exc, "code", None)
            message = self._redact(getattr(exc, "message", "") or str(exc))
            if code == -32602:
                return _tool_error(ErrorCode.INVALID_ARGUMENT, f"{what}: {message}")
            if code == -32601:
                return _tool_error(ErrorCode.NOT_FOUND, f"{what}: {message}")
            return _tool_error(ErrorCode.RUNTIME_ERROR, f"{what}: MCP error {code}: {message}", retryable=True)
        if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
            return _tool_error(ErrorCode.RUNTIME_ERROR, f"{what}: MCP server {self.config.name!r} timed out",
                               retryable=True)
        return _tool_error(ErrorCode.RUNTIME_ERROR,
                           f"{what}: MCP server {self.config.name!r} failed: {type(exc).__name__}: "
                           f"{self._redact(_exc_text(exc))}", retryable=True)


class _OwnedHttpTransport:
    """streamable_http_client + closing the httpx client we created for it."""

    def __init__(self, inner: Any, http_client: Any) -> None:
        self._inner = inner
        self._http = http_client

    async def __aenter__(self) -> Any:
        await self._http.__aenter__()
        try:
            return await self._inner.__aenter__()
        except BaseException:
            await self._http.__aexit__(None, None, None)
            raise

    async def __aexit__(self, *exc: Any) -> Any:
        try:
            return await self._inner.__aexit__(*exc)
        finally:
            await self._http.__aexit__(None, None, None)


def _connection_closed(exc: BaseException) -> bool:
    from mcp.shared.exceptions import MCPError

    if isinstance(exc, MCPError):
        return exc.code == -32000  # CONNECTION_CLOSED
    import anyio

    return isinstance(exc, (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream))


def _session_closed(client: Any) -> bool:
    """Best effort: the SDK has no public "is closed" flag, so peek at its dispatcher."""
    try:
        return bool(client.session._dispatcher._closed)
    except Exception:  # noqa: BLE001 — attribute layout changed: assume open
        return False


def _exc_text(exc: BaseException) -> str:
    """A short text for an exception, unwrapping exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -- registry -------------------------------------------------------------------------

class ToolRegistry:
    """All host tools by name. The first provider to list a name wins."""

    def __init__(self, providers: Iterable[ToolProvider], *, validate: bool = True) -> None:
        self.providers = list(providers)
        self.validate = validate
        self._index: dict[str, tuple[ToolProvider, dict[str, Any]]] | None = None
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"ToolRegistry(providers={[p.name for p in self.providers]!r})"

    def _get_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    async def _build(self, refresh: bool = False) -> dict[str, tuple[ToolProvider, dict[str, Any]]]:
        async with self._get_lock():
            if self._index is not None and not refresh:
                return self._index
            index: dict[str, tuple[ToolProvider, dict[str, Any]]] = {}
            for provider in self.providers:
                try:
                    if refresh and isinstance(provider, McpToolProvider):
                        specs = await provider.list_tools(refresh=True)
                    else:
                        specs = await provider.list_tools()
                except Exception as exc:  # noqa: BLE001 — one bad provider must not hide the others
                    log.warning("tool provider %s unavailable: %s", provider.name,
                                exc.message if isinstance(exc, RunnerHostError) else type(exc).__name__)
                    continue
                for spec in specs:
                    name = spec["tool_name"]
                    if name in index:
                        log.warning("tool %s of %s shadowed by %s", name, provider.name, index[name][0].name)
                        continue
                    index[name] = (provider, {
                        "tool_name": name,
                        "description": spec.get("description") or "",
                        "parameters": spec.get("parameters") or {"type": "object", "properties": {}},
                        "provider": provider.name,
                    })
            self._index = index
            return index

    async def refresh(self) -> list[dict[str, Any]]:
        await self._build(refresh=True)
        return await self.list_tools()

    async def list_tools(self) -> list[dict[str, Any]]:
        index = await self._build()
        return [dict(spec) for _, spec in index.values()]

    async def catalog(self) -> dict[str, dict[str, Any]]:
        """``{tool_name: {"description", "parameters", "tool_type"}}`` — the shape of
        ``ResourceCatalog.tools``; ``tool_type`` is LangBot's tool source: ``builtin`` or ``mcp``."""
        index = await self._build()
        return {name: {"description": spec["description"], "parameters": spec["parameters"],
                       "tool_type": "mcp" if isinstance(provider, McpToolProvider) else "builtin"}
                for name, (provider, spec) in index.items()}

    async def _lookup(self, name: str) -> tuple[ToolProvider, dict[str, Any]]:
        if not isinstance(name, str) or not name:
            raise _tool_error(ErrorCode.INVALID_ARGUMENT, "tool name must be a non-empty string")
        index = await self._build()
        if name not in index:
            index = await self._build(refresh=True)
        if name not in index:
            raise _tool_error(ErrorCode.NOT_FOUND, f"tool {name!r} not found", tool_name=name)
        return index[name]

    async def detail(self, name: str) -> dict[str, Any]:
        _, spec = await self._lookup(name)
        return dict(spec)

    async def call(self, name: str, parameters: dict[str, Any] | None) -> dict[str, Any]:
        if parameters is None:
            parameters = {}
        if not isinstance(parameters, dict):
            raise _tool_error(ErrorCode.INVALID_ARGUMENT, "tool parameters must be a JSON object")
        provider, spec = await self._lookup(name)
        if self.validate:
            _validate(name, spec["parameters"], parameters)
        try:
            result = await provider.call(name, parameters)
        except RunnerHostError:
            raise
        except Exception as exc:  # noqa: BLE001 — a provider bug is a runtime_error, not a crash
            log.warning("tool %s (%s) raised %s", name, provider.name, type(exc).__name__)
            raise _tool_error(ErrorCode.RUNTIME_ERROR, f"tool {name!r} failed: {type(exc).__name__}",
                              retryable=False, tool_name=name) from None
        if not isinstance(result, dict):
            result = {"result": result}
        try:
            json.dumps(result)
        except (TypeError, ValueError):
            raise _tool_error(ErrorCode.RUNTIME_ERROR, f"tool {name!r} returned a non-JSON result") from None
        return result

    async def aclose(self) -> None:
        for provider in self.providers:
            try:
                await provider.aclose()
            except Exception as exc:  # noqa: BLE001
                log.warning("closing tool provider %s: %s", provider.name, type(exc).__name__)


def _validate(name: str, schema: dict[str, Any], parameters: dict[str, Any]) -> None:
    try:
        import jsonschema
    except ImportError:  # pragma: no cover — jsonschema ships with the mcp SDK
        return
    try:
        validator_cls = jsonschema.validators.validator_for(schema)
        validator = validator_cls(schema)
        error = jsonschema.exceptions.best_match(validator.iter_errors(parameters))
    except jsonschema.exceptions.SchemaError:
        log.warning("tool %s has an invalid parameter schema; not validating", name)
        return
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path)
        raise _tool_error(ErrorCode.INVALID_ARGUMENT,
                          f"invalid parameters for tool {name!r}" + (f" at {where}" if where else "")
                          + f": {error.message[:300]}", tool_name=name)


class ToolsConfig(BaseModel):
    """The host's ``[providers.tools]`` table.

    ``builtin``: ``true`` (default: all builtin tools), ``false``/``[]`` (none), or a list of names.
    ``mcp_servers``: one :class:`McpServerConfig` per MCP server.
    """

    model_config = ConfigDict(extra="forbid")

    builtin: bool | list[str] = True
    mcp_servers: list[McpServerConfig] = Field(default_factory=list)
    validate_parameters: bool = True


def build_tool_registry(config: ToolsConfig | dict[str, Any] | None = None) -> ToolRegistry:
    """A :class:`ToolRegistry` from the host config (``providers.tools``); MCP servers connect lazily."""
    cfg = config if isinstance(config, ToolsConfig) else ToolsConfig.model_validate(config or {})
    providers: list[ToolProvider] = []
    if cfg.builtin is True:
        providers.append(BuiltinTools())
    elif cfg.builtin:
        providers.append(BuiltinTools(cfg.builtin))
    names = [s.name for s in cfg.mcp_servers]
    if len(names) != len(set(names)):
        raise ValueError(f"duplicate MCP server names: {sorted({n for n in names if names.count(n) > 1})}")
    providers.extend(McpToolProvider(server) for server in cfg.mcp_servers)
    return ToolRegistry(providers, validate=cfg.validate_parameters)
