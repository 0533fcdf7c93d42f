"""The one place that imports ``langbot_plugin``: fail with a clear message when it is absent."""
from __future__ import annotations

INSTALL_HINT = (
    "the LangBot SDK runner adapter needs the optional 'langbot-plugin' package: "
    "pip install 'runnerhost[langbot]'"
)


class LangBotSDKMissing(ImportError):
    """Raised when ``runners.langbot_sdk`` is used without ``langbot-plugin`` installed."""


def require_langbot_plugin() -> None:
    try:
        import langbot_plugin  # noqa: F401
    except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
        raise LangBotSDKMissing(INSTALL_HINT) from exc


def langbot_plugin_available() -> bool:
    try:
        require_langbot_plugin()
    except LangBotSDKMissing:
        return False
    return True
