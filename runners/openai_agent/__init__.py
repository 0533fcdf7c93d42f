"""``plugin:builtin/openai-agent/default`` — the LLM tool-loop runner."""
from .runner import CHECKPOINT_KEY, OpenAIAgentRunner

__all__ = ["CHECKPOINT_KEY", "OpenAIAgentRunner"]
