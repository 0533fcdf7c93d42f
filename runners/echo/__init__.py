"""``plugin:builtin/echo/default`` — the deterministic runner tests and benchmarks rely on."""
from .runner import EchoRunner

__all__ = ["EchoRunner"]
