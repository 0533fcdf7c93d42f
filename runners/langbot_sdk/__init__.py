"""Host runners written for the LangBot plugin SDK, unmodified.

Needs the optional extra: ``pip install 'runnerhost[langbot]'``. Importing this
package never imports ``langbot_plugin``; the first use of an SDK-backed name
does, and fails with :class:`LangBotSDKMissing` (an ``ImportError``) and an
install hint when the package is absent.

Public API::

    LangBotRunnerAdapter(sdk_runner_cls, manifest, *, plugin_config=None, sdk_plugin=None)
    langbot_runner(sdk_runner_cls, manifest=None, **manifest_from_sdk_kwargs) -> Runner subclass
    load_plugin_runner(plugin_dir, runner_name=None) -> Runner subclass
    manifest_from_sdk(source=None, *, author, plugin, runner, ...) -> RunnerManifest
    HostActionHandler(api)      # one run's SDK runtime handler over a RunnerAPI
    HostRuntimeHandler()        # routes a shared SDK runner's actions to active runs
    ACTION_TABLE, SUPPORTED_ACTIONS, UNSUPPORTED_REASONS
"""
from __future__ import annotations

import importlib
from typing import Any

from ._compat import INSTALL_HINT as INSTALL_HINT
from ._compat import LangBotSDKMissing as LangBotSDKMissing
from ._compat import langbot_plugin_available as langbot_plugin_available

_LAZY: dict[str, str] = {
    "LangBotRunnerAdapter": "adapter",
    "HostPlugin": "adapter",
    "langbot_runner": "adapter",
    "load_plugin_runner": "adapter",
    "failure_from_exception": "adapter",
    "HostActionHandler": "handler",
    "HostRuntimeHandler": "handler",
    "ACTION_TABLE": "handler",
    "SUPPORTED_ACTIONS": "handler",
    "UNSUPPORTED_REASONS": "handler",
    "manifest_from_sdk": "manifest",
}

__all__ = sorted([*_LAZY, "INSTALL_HINT", "LangBotSDKMissing", "langbot_plugin_available"])


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
