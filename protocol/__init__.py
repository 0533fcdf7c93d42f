"""The wire contract of RunnerHost: pydantic models shared by every layer."""
from .errors import ErrorBody, ErrorCode, RunnerHostError
from .events import EventEnvelope
from .agents import AgentBinding, AgentConfig, MultitaskStrategy
from .context import RunContext
from .results import ResultValidator, RunResult, Verdict

__all__ = [
    "AgentBinding", "AgentConfig", "ErrorBody", "ErrorCode", "EventEnvelope",
    "MultitaskStrategy", "ResultValidator", "RunContext", "RunResult",
    "RunnerHostError", "Verdict",
]
