"""A tiny real MCP server for the McpToolProvider tests.

``python mcp_tiny_server.py`` serves over stdio; ``--http PORT`` serves
streamable HTTP on 127.0.0.1:PORT/mcp. ``whoami`` reports the env var
``TINY_TOKEN`` (stdio) so tests can check secret passing without leaking it.
"""
from __future__ import annotations

import os
import sys

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("tiny", log_level="WARNING")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def shout(text: str) -> str:
    """Upper-case a text."""
    return text.upper()


@server.tool()
def token_length() -> int:
    """Length of the TINY_TOKEN environment variable (never the value)."""
    return len(os.environ.get("TINY_TOKEN", ""))


@server.tool()
def explode(reason: str = "boom") -> str:
    """Always fails with the given reason."""
    raise ToolError(reason)


@server.tool()
def pid() -> int:
    """The server's process id."""
    return os.getpid()


@server.tool()
def crash() -> str:
    """Kills the server process (to test reconnects)."""
    os._exit(3)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--http":
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run()
