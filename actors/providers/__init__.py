"""Host-side providers behind the runner API: models and tools.

Plain Python classes (no Ray): the RunActor owns one :class:`ModelRegistry` and
one :class:`ToolRegistry` and calls them after its authorization checks.
"""
from .models import ModelProviderConfig, ModelRegistry
from .tools import (
    BuiltinTools,
    McpServerConfig,
    McpToolProvider,
    ToolProvider,
    ToolRegistry,
    ToolsConfig,
    build_tool_registry,
)

__all__ = [
    "BuiltinTools",
    "McpServerConfig",
    "McpToolProvider",
    "ModelProviderConfig",
    "ModelRegistry",
    "ToolProvider",
    "ToolRegistry",
    "ToolsConfig",
    "build_tool_registry",
]
