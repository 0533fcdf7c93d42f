"""Runner packages. One package per runner; each depends on ``protocol`` only.

``BUILTIN_RUNNERS`` maps a runner id to ``"module:Class"``; third-party runners
are found through the ``runnerhost.runners`` entry-point group, each entry
point naming a :class:`protocol.runner.Runner` subclass.
"""

BUILTIN_RUNNERS: dict[str, str] = {
    "plugin:builtin/echo/default": "runners.echo:EchoRunner",
    "plugin:builtin/openai-agent/default": "runners.openai_agent:OpenAIAgentRunner",
    "plugin:builtin/harness/default": "runners.harness:HarnessRunner",
}

ENTRY_POINT_GROUP = "runnerhost.runners"
