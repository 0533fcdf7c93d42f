"""How long a run may take: the binding's ``timeout_s``, or the runner's own ``timeout`` field.

LangBot takes a run's deadline from ``runner_config["timeout"]`` (seconds). A runner that
declares a ``timeout`` field in its ``config_schema`` gets the same here: the binding's
``runner_config["timeout"]``, else the field's schema default, when it is a positive number
(capped at :data:`MAX_TIMEOUT_S`, the most an agent's ``timeout_s`` may be). Otherwise — no
such field, or no usable value — the binding's ``timeout_s`` stands. Pure: the host turns
the result into ``deadline_at`` when the run starts.
"""
from __future__ import annotations

from typing import Any

from protocol.agents import AgentBinding
from protocol.manifest import RunnerDescriptor, RunnerManifest

TIMEOUT_FIELD = "timeout"
MAX_TIMEOUT_S = 24 * 3600.0


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if 0 < seconds < float("inf") else None


def effective_timeout_s(binding: AgentBinding, descriptor: RunnerDescriptor | RunnerManifest) -> float:
    """Seconds the run may take (see the module doc)."""
    field = next((f for f in descriptor.config_schema if f.name == TIMEOUT_FIELD), None)
    if field is None:
        return binding.timeout_s
    config = binding.runner_config or {}
    seconds = _seconds(config[TIMEOUT_FIELD]) if TIMEOUT_FIELD in config else _seconds(field.default)
    if seconds is None:
        return binding.timeout_s
    return min(seconds, MAX_TIMEOUT_S)
